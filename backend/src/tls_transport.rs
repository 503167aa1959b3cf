//! The session byte stream over TLS: the handshake runs on the session's own thread (so a
//! slow or hostile client never holds up the listener), then the connection is split into
//! the dispatcher's reading half and the writer's half (`netgpu_tls::split`).

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::{frame::FrameHeader, ops};
use netgpu_tls::blocking::accept;
use netgpu_tls::split::{split_stream, TlsReader, TlsWriter};
use netgpu_tls::ServerTls;
use rustls::ServerConnection;
use tracing::warn;

use crate::transport::{Control, Peer, Transport};

/// A TCP connection whose session speaks TLS.
pub struct TlsTransport {
    pub tcp: TcpStream,
    pub tls: Arc<ServerTls>,
    /// Deadline of the TLS handshake.
    pub timeout: Duration,
}

impl Transport for TlsTransport {
    type Reader = TlsReader<ServerConnection>;
    type Writer = TlsWriter<ServerConnection>;

    fn control(&self) -> io::Result<Arc<dyn Control>> {
        Ok(Arc::new(self.tcp.try_clone()?))
    }

    fn split(self) -> io::Result<(Self::Reader, Self::Writer, Peer)> {
        let peer = Control::peer(&self.tcp);
        if plain_client(&self.tcp, self.timeout) {
            // A plain netgpu client: tell it, in its own framing, what to change.
            refuse_plain(&self.tcp);
            warn!(%peer, "plain client refused: this backend speaks TLS only; configure the client's [tls] section");
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain client at a TLS backend",
            ));
        }
        let stream = accept(self.tcp, &self.tls, self.timeout).map_err(|e| {
            warn!(%peer, "{}", e.explanation);
            io::Error::new(io::ErrorKind::InvalidData, e.explanation)
        })?;
        let identity = ServerTls::identify(&stream.conn).map_err(|e| {
            warn!(%peer, error = %e, "client certificate names no usable identity");
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        })?;
        let chain = stream
            .conn
            .peer_certificates()
            .filter(|c| !c.is_empty())
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
        let _ = stream.sock.set_nodelay(true);
        let (r, w) = split_stream(stream)?;
        Ok((
            r,
            w,
            Peer {
                tls: true,
                identity,
                chain,
            },
        ))
    }
}

/// Whether the client's first byte is the netgpu frame magic (`NG`) rather than a TLS record.
fn plain_client(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut b = [0u8; 1];
    let _ = tcp.set_read_timeout(Some(timeout));
    let r = tcp.peek(&mut b);
    let _ = tcp.set_read_timeout(None);
    matches!(r, Ok(1)) && b[0] == (netgpu_proto::wire::frame::MAGIC & 0xff) as u8
}

fn refuse_plain(tcp: &TcpStream) {
    let body = ops::encode(&ops::Reply::Error(
        "this backend speaks TLS only: configure the client's [tls] section (docs/security.md)"
            .into(),
    ))
    .unwrap_or_default();
    let mut s = tcp;
    let _ = s.write_all(&FrameHeader::goodbye(CuResult::NOT_PERMITTED, body.len() as u32).encode());
    let _ = s.write_all(&body);
}
