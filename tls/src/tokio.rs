//! TLS over tokio streams (feature `tokio`): the handshake with a deadline, for
//! `netgpu-client` (vdev) and async listeners.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::blocking::HandshakeError;
use crate::client::ClientTls;
use crate::explain::{server_failure, ServerSide};
use crate::server::ServerTls;
use crate::ALPN;

/// Runs the server side of the handshake within `timeout`. The client's identity is then
/// [`ServerTls::identify`] of `stream.get_ref().1`.
pub async fn accept<IO>(
    io: IO,
    peer: &str,
    tls: &ServerTls,
    timeout: Duration,
) -> Result<server::TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let fail = |source: io::Error| HandshakeError {
        explanation: server_failure(
            &source,
            &ServerSide {
                peer,
                client_ca: &tls.config().client_ca,
            },
        ),
        source,
    };
    let acceptor = TlsAcceptor::from(tls.server_config());
    let s = tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| fail(io::ErrorKind::TimedOut.into()))?
        .map_err(fail)?;
    if s.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(HandshakeError {
            explanation: format!(
                "client {peer} did not offer the netgpu ALPN protocol: it is not a netgpu client"
            ),
            source: io::ErrorKind::InvalidData.into(),
        });
    }
    Ok(s)
}

/// Runs the client side of the handshake with the backend at `addr` within `timeout`.
/// As with [`crate::blocking::connect`], a refused client certificate surfaces at the first
/// read: explain such errors with [`ClientTls::explain`].
pub async fn connect<IO>(
    io: IO,
    tls: &ClientTls,
    addr: &str,
    timeout: Duration,
) -> Result<client::TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = tls.server_name(addr).map_err(|e| HandshakeError {
        explanation: e.to_string(),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    let fail = |source: io::Error| HandshakeError {
        explanation: tls.explain(&source, addr),
        source,
    };
    let connector = TlsConnector::from(tls.client_config());
    tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| fail(io::ErrorKind::TimedOut.into()))?
        .map_err(fail)
}
