//! TLS over blocking sockets: the handshake with a deadline, for the backend's session threads
//! and libcuda's TCP transport (no async runtime inside a guest process).

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use thiserror::Error;

use crate::client::ClientTls;
use crate::explain::{client_failure, server_failure, ClientSide, ServerSide};
use crate::server::ServerTls;
use crate::split::TlsStream;
use crate::unbuffered::{handshake, Incoming, Side};
use crate::ALPN;

/// The backend's end of a connection (rustls' unbuffered API, see [`crate::split`]).
pub type ServerStream = TlsStream<UnbufferedServerConnection>;
/// A client's end of a connection.
pub type ClientStream = TlsStream<UnbufferedClientConnection>;

/// A failed handshake: what happened and what to do, and the I/O error underneath.
#[derive(Debug, Error)]
#[error("{explanation}")]
pub struct HandshakeError {
    pub explanation: String,
    #[source]
    pub source: io::Error,
}

/// Runs the server side of the handshake on `tcp` within `timeout`; the stream is left with
/// no read or write timeout. The client's identity is then [`ServerTls::identify`]'s.
pub fn accept(
    tcp: TcpStream,
    tls: &ServerTls,
    timeout: Duration,
) -> Result<ServerStream, HandshakeError> {
    let peer = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let fail = |source: io::Error| HandshakeError {
        explanation: server_failure(
            &source,
            &ServerSide {
                peer: &peer,
                client_ca: &tls.config().client_ca,
            },
        ),
        source,
    };
    let conn = UnbufferedServerConnection::new(tls.server_config())
        .map_err(|e| fail(io::Error::other(e)))?;
    let s = drive(conn, tcp, timeout).map_err(fail)?;
    if s.conn().alpn_protocol() != Some(ALPN) {
        return Err(HandshakeError {
            explanation: format!(
                "client {peer} did not offer the netgpu ALPN protocol: it is not a netgpu client"
            ),
            source: io::ErrorKind::InvalidData.into(),
        });
    }
    Ok(s)
}

/// Runs the client side of the handshake with the backend at `addr` (used for the default
/// server name and in errors) within `timeout`.
///
/// In TLS 1.3 the server checks the client's certificate after the client has finished its
/// side, so a refused client certificate shows up at the first read instead: pass errors of
/// the first exchange through [`ClientTls::explain`].
pub fn connect(
    tcp: TcpStream,
    tls: &ClientTls,
    addr: &str,
    timeout: Duration,
) -> Result<ClientStream, HandshakeError> {
    let name = tls.server_name(addr).map_err(|e| HandshakeError {
        explanation: e.to_string(),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    let conn =
        UnbufferedClientConnection::new(tls.client_config(), name).map_err(|e| HandshakeError {
            explanation: format!("cannot start TLS to {addr}: {e}"),
            source: io::Error::other(e),
        })?;
    drive(conn, tcp, timeout).map_err(|source| HandshakeError {
        explanation: tls.explain(&source, addr),
        source,
    })
}

impl ClientTls {
    /// An I/O error of a TLS connection to `addr` in operator's words.
    pub fn explain(&self, e: &io::Error, addr: &str) -> String {
        let name = self
            .server_name(addr)
            .map(|n| n.to_str().into_owned())
            .unwrap_or_default();
        client_failure(
            e,
            &ClientSide {
                addr,
                server_name: &name,
                ca: &self.config().ca,
                cert: self.config().cert.as_deref(),
            },
        )
    }
}

/// The handshake of `conn` over `sock` within `timeout`; the socket is left without
/// timeouts.
fn drive<C: Side>(mut conn: C, mut sock: TcpStream, timeout: Duration) -> io::Result<TlsStream<C>> {
    let mut incoming = Incoming::new(16 * 1024);
    handshake(
        &mut conn,
        &mut sock,
        &mut incoming,
        Instant::now() + timeout,
    )?;
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)?;
    TlsStream::new(conn, sock, incoming)
}
