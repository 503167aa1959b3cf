//! The byte stream a session runs over, kept generic so that TLS (rustls) can wrap the TCP
//! connection without the session knowing.
//!
//! A [`Transport`] splits into a reading half (used by the session's dispatcher thread only) and
//! a writing half (behind the session's reply writer), so reading and writing never wait for
//! each other. Its [`Control`] reaches the underlying connection from anywhere: the server
//! uses it to shut a session down, and the session to close its connection for certain when
//! it ends (however it ends), so a client never waits on a half-dead session.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The connection under a session's byte stream.
pub trait Control: Send + Sync {
    /// Shuts the connection down (reading: the session's reader sees end of stream; both:
    /// the peer sees the connection close).
    fn shutdown(&self, how: Shutdown);
    /// Bounds each read (`None`: no bound); used for the handshake.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds each write (`None`: no bound); used for the goodbye of a session that ends, so
    /// a client that stopped reading cannot hold the session open.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// The peer's address, for logs.
    fn peer(&self) -> String;
    /// Whether the peer has closed or reset the connection, without reading from it (a
    /// dispatcher that is not reading requests still notices its client leave).
    fn peer_gone(&self) -> bool;
}

/// Who is at the other end, as far as the transport knows.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The connection is TLS.
    pub tls: bool,
    /// The client's certificate identity (TLS with a client certificate).
    pub identity: Option<netgpu_tls::PeerIdentity>,
    /// The certificate chain it came from (the client's certificate first).
    pub chain: Option<Arc<[rustls::pki_types::CertificateDer<'static>]>>,
}

/// A session's byte stream.
pub trait Transport: Send + 'static {
    type Reader: Read + Send + 'static;
    type Writer: Write + Send + 'static;
    fn control(&self) -> io::Result<Arc<dyn Control>>;
    /// The two halves, after whatever the transport's own handshake is (TLS's runs here, on
    /// the session's thread), and what it learnt of the peer.
    fn split(self) -> io::Result<(Self::Reader, Self::Writer, Peer)>;
}

impl Control for TcpStream {
    fn shutdown(&self, how: Shutdown) {
        let _ = TcpStream::shutdown(self, how);
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }

    fn peer(&self) -> String {
        self.peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    fn peer_gone(&self) -> bool {
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(self),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket this stream owns (open for the call), and a
        // timeout of 0: poll only reads the socket's state.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl Transport for TcpStream {
    type Reader = TcpStream;
    type Writer = TcpStream;

    fn control(&self) -> io::Result<Arc<dyn Control>> {
        Ok(Arc::new(self.try_clone()?))
    }

    fn split(self) -> io::Result<(TcpStream, TcpStream, Peer)> {
        let _ = self.set_nodelay(true);
        let w = self.try_clone()?;
        Ok((self, w, Peer::default()))
    }
}
