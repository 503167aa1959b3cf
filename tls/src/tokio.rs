//! TLS over tokio streams (feature `tokio`): the handshake with a deadline and an
//! `AsyncRead`/`AsyncWrite` stream, for `netgpu-client` (vdev) and async listeners, on rustls'
//! unbuffered API like the blocking endpoints ([`crate::split`] has the design).
//!
//! One task at a time drives a [`TlsStream`] (`tokio::io::split` shares it between a reader
//! and a writer task), so it owns the connection state without a lock. The writer seals
//! up to [`crate::split::WRITE_MAX`] per `poll_write` into its ciphertext buffer and sends
//! it as the socket takes it; `poll_write` waits for the socket once that much is buffered,
//! and `poll_flush` sends it all. The reader
//! receives into the incoming buffer, where rustls decrypts each record in place.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::blocking::HandshakeError;
use crate::client::ClientTls;
use crate::explain::{server_failure, ServerSide};
use crate::server::ServerTls;
use crate::shared::{Ciphertext, SharedConnection};
use crate::split::{Seal, State, READ, WRITE_MAX};
use crate::unbuffered::{handshake_step, take_alert, Incoming, Next, Outgoing, Side};
use crate::ALPN;

/// The backend's end of an async connection.
pub type ServerStream<IO> = TlsStream<UnbufferedServerConnection, IO>;
/// A client's end of an async connection.
pub type ClientStream<IO> = TlsStream<UnbufferedClientConnection, IO>;

/// A TLS connection over `IO` after the handshake.
pub struct TlsStream<C, IO> {
    io: IO,
    st: State<C>,
    /// Ciphertext to send: `out.bytes()[sent..]`.
    out: Outgoing,
    sent: usize,
    /// The socket read end-of-stream.
    eof: bool,
}

impl<C, IO> std::fmt::Debug for TlsStream<C, IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").finish_non_exhaustive()
    }
}

impl<C: Side, IO> TlsStream<C, IO> {
    /// The connection: its peer's certificates, protocol version, ALPN.
    pub fn conn(&self) -> &C {
        self.st.conn()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The connection for two halves that do their own socket I/O ([`SharedConnection`]),
    /// the stream, and the ciphertext not written yet (written before anything else; empty
    /// right after [`connect`] or [`accept`], which flush the handshake).
    pub fn into_shared(self) -> (SharedConnection<C>, IO, Ciphertext) {
        let TlsStream {
            io, st, out, sent, ..
        } = self;
        let mut rest = Ciphertext::with_capacity(0);
        rest.push(&out.bytes()[sent.min(out.len())..]);
        (SharedConnection::from_state(st), io, rest)
    }
}

impl<C: Side, IO: AsyncWrite + Unpin> TlsStream<C, IO> {
    /// Writes the buffered ciphertext until done or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.st.take_tx(&mut self.out);
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out.bytes()[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<C: Side + Unpin, IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<C, IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut flush = false;
            let got = this.st.read_into(buf.initialize_unfilled(), &mut flush);
            if flush {
                // A key update answer or an alert: sent as the socket takes it.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    if got.is_none() {
                        return Poll::Ready(Err(e));
                    }
                }
            }
            match got {
                Some(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {}
            }
            if this.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if this.st.incoming().len() > 0 {
                        "the TLS peer closed the connection in the middle of a record"
                    } else {
                        "the TLS peer closed the TCP connection without a close_notify"
                    },
                )));
            }
            let tail = this.st.incoming().tail(READ)?;
            let mut rb = ReadBuf::new(tail);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                this.eof = true;
            } else {
                this.st.incoming().commit(n);
            }
        }
    }
}

impl<C: Side + Unpin, IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<C, IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() >= WRITE_MAX {
            ready!(this.poll_send(cx))?;
        }
        // No lock to share here: the whole write is sealed at once, sent in one socket write.
        let chunk = &data[..data.len().min(WRITE_MAX)];
        this.st.seal(&mut this.out, Seal::Data(chunk))?;
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends a TLS `close_notify`, then shuts the socket's write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.st.sent_close() {
            this.st.seal(&mut this.out, Seal::CloseNotify)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The handshake of `conn` over `io` (no deadline here: the callers wrap it in one).
async fn handshake<C: Side, IO: AsyncRead + AsyncWrite + Unpin>(
    mut conn: C,
    mut io: IO,
) -> io::Result<TlsStream<C, IO>> {
    let mut incoming = Incoming::new(16 * 1024);
    let mut out = Outgoing::new(4096);
    loop {
        let next = handshake_step(&mut conn, &mut incoming, &mut out);
        match next {
            Next::Again => {}
            Next::Send => {
                io.write_all(out.bytes()).await?;
                out.clear();
            }
            Next::Done | Next::Data if !conn.is_handshaking() => {
                io.write_all(out.bytes()).await?;
                out.clear();
                let mut s = TlsStream {
                    io,
                    st: State::new(conn, incoming),
                    out,
                    sent: 0,
                    eof: false,
                };
                s.io.flush().await?;
                s.out = Outgoing::new(32 * 1024);
                return Ok(s);
            }
            Next::Data => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS peer sent application data before the handshake completed",
                ))
            }
            Next::Done | Next::Input => {
                io.write_all(out.bytes()).await?;
                out.clear();
                let n = io.read(incoming.tail(16 * 1024)?).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the TCP connection during the TLS handshake",
                    ));
                }
                incoming.commit(n);
            }
            Next::Fail(e) => {
                take_alert(&mut conn, &mut incoming, &mut out);
                let _ = io.write_all(out.bytes()).await;
                return Err(e);
            }
        }
    }
}

/// Runs the server side of the handshake within `timeout`. The client's identity is then
/// [`ServerTls::identify`] of `stream.conn()`.
pub async fn accept<IO>(
    io: IO,
    peer: &str,
    tls: &ServerTls,
    timeout: Duration,
) -> Result<ServerStream<IO>, HandshakeError>
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
    let conn = UnbufferedServerConnection::new(tls.server_config())
        .map_err(|e| fail(io::Error::other(e)))?;
    let s = tokio::time::timeout(timeout, handshake(conn, io))
        .await
        .map_err(|_| fail(io::ErrorKind::TimedOut.into()))?
        .map_err(fail)?;
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

/// Runs the client side of the handshake with the backend at `addr` within `timeout`.
/// As with [`crate::blocking::connect`], a refused client certificate surfaces at the first
/// read: explain such errors with [`ClientTls::explain`].
pub async fn connect<IO>(
    io: IO,
    tls: &ClientTls,
    addr: &str,
    timeout: Duration,
) -> Result<ClientStream<IO>, HandshakeError>
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
    let conn =
        UnbufferedClientConnection::new(tls.client_config(), name).map_err(|e| HandshakeError {
            explanation: format!("cannot start TLS to {addr}: {e}"),
            source: io::Error::other(e),
        })?;
    tokio::time::timeout(timeout, handshake(conn, io))
        .await
        .map_err(|_| fail(io::ErrorKind::TimedOut.into()))?
        .map_err(fail)
}

#[cfg(all(test, feature = "issue"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use rustls::{ClientConnection, StreamOwned};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    use crate::test_support::{pattern, pki, T};
    use crate::{ClientTls, ServerTls};

    /// Reads of random sizes from 1 byte to `max` (the ciphertext arrives in pieces).
    struct Chunky<IO> {
        io: IO,
        rng: u64,
        max: usize,
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Chunky<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            this.rng ^= this.rng << 13;
            this.rng ^= this.rng >> 7;
            this.rng ^= this.rng << 17;
            let want = (1 + (this.rng % this.max as u64) as usize).min(buf.remaining());
            let mut small = ReadBuf::new(buf.initialize_unfilled_to(want));
            let r = Pin::new(&mut this.io).poll_read(cx, &mut small);
            let n = small.filled().len();
            buf.advance(n);
            r
        }
    }

    impl<IO: AsyncWrite + Unpin> AsyncWrite for Chunky<IO> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, data)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    async fn tcp() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (l.accept().await.unwrap().0, c)
    }

    /// Writes `data` and reads `len` bytes at once through one stream split in two tasks.
    async fn duplex<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
        s: S,
        data: Vec<u8>,
        len: usize,
    ) -> (Vec<u8>, S) {
        let (mut r, mut w) = tokio::io::split(s);
        let wt = tokio::spawn(async move {
            for c in data.chunks(70_001) {
                w.write_all(c).await.unwrap();
            }
            w.flush().await.unwrap();
            w
        });
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).await.unwrap();
        let w = wt.await.unwrap();
        (got, r.unsplit(w))
    }

    #[tokio::test]
    async fn async_ends_carry_both_ways_at_once_with_ciphertext_in_random_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        for (i, (max, len)) in [
            (1, 20_000),
            (300, 300_000),
            (20_000, 2 << 20),
            (300_000, 4 << 20),
        ]
        .into_iter()
        .enumerate()
        {
            let (s, c) = tcp().await;
            let (s, c) = (
                Chunky {
                    io: s,
                    rng: 0x9e3779b97f4a7c15 ^ i as u64,
                    max,
                },
                Chunky {
                    io: c,
                    rng: 0x2545f4914f6cdd1d ^ i as u64,
                    max,
                },
            );
            let srv = server.clone();
            let acc = tokio::spawn(async move { super::accept(s, "test", &srv, T).await.unwrap() });
            let c = super::connect(c, &client, "localhost:1", T).await.unwrap();
            let s = acc.await.unwrap();
            let (a, b) = (pattern(len, 1), pattern(len, 2));
            let (sa, cb) = (a.clone(), b.clone());
            let st = tokio::spawn(duplex(s, sa, len));
            let (got_c, _) = duplex(c, cb, len).await;
            let (got_s, _) = st.await.unwrap();
            assert!(got_c == a, "client got the server's data (max read {max})");
            assert!(got_s == b, "server got the client's data (max read {max})");
        }
    }

    #[tokio::test]
    async fn an_async_client_and_the_blocking_server_interoperate() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let s = crate::blocking::accept(l.accept().unwrap().0, &server, T).unwrap();
            let (mut r, mut w) = s.split();
            let mut b = vec![0u8; 100_000];
            loop {
                match r.read(&mut b) {
                    Ok(0) => return,
                    Ok(n) => w.write_all(&b[..n]).unwrap(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let c = super::connect(c, &client, "localhost:1", T).await.unwrap();
        let data = pattern(3 << 20, 5);
        let (back, mut c) = duplex(c, data.clone(), data.len()).await;
        assert!(back == data);
        c.shutdown().await.unwrap();
        tokio::task::spawn_blocking(move || echo.join().unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_close_notify_and_a_tcp_close_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        let (s, c) = tcp().await;
        let srv = server.clone();
        let acc = tokio::spawn(async move { super::accept(s, "t", &srv, T).await.unwrap() });
        let mut c = super::connect(c, &client, "localhost:1", T).await.unwrap();
        let mut s = acc.await.unwrap();
        assert_eq!(
            ServerTls::identify(s.conn())
                .unwrap()
                .unwrap()
                .tenant
                .unwrap()
                .as_str(),
            "acme"
        );
        c.write_all(b"bye").await.unwrap();
        c.shutdown().await.unwrap();
        assert!(
            c.write_all(b"more").await.is_err(),
            "nothing after close_notify"
        );
        let mut b = Vec::new();
        s.read_to_end(&mut b).await.unwrap();
        assert_eq!(b, b"bye");

        let (s, c) = tcp().await;
        let srv = server.clone();
        let acc = tokio::spawn(async move { super::accept(s, "t", &srv, T).await.unwrap() });
        let c = super::connect(c, &client, "localhost:1", T).await.unwrap();
        let mut s = acc.await.unwrap();
        // Gone without close_notify (a reset, as the client left the server's session
        // tickets unread).
        drop(c);
        let e = s.read(&mut [0u8; 8]).await.unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "{e}"
        );
    }

    /// A client on rustls' buffered API over a blocking socket, and our async server.
    async fn buffered_client(
        server: &Arc<ServerTls>,
        client: &ClientTls,
        extract: bool,
    ) -> (
        super::ServerStream<TcpStream>,
        std::thread::JoinHandle<StreamOwned<ClientConnection, std::net::TcpStream>>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut cfg = (*client.client_config()).clone();
        cfg.enable_secret_extraction = extract;
        let name = client.server_name("localhost:1").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let h = std::thread::spawn(move || {
            let conn = ClientConnection::new(Arc::new(cfg), name).unwrap();
            let mut c = StreamOwned::new(conn, std::net::TcpStream::connect(addr).unwrap());
            while c.conn.is_handshaking() {
                c.conn.complete_io(&mut c.sock).unwrap();
            }
            let _ = tx.send(());
            c
        });
        let s = super::accept(l.accept().await.unwrap().0, "t", server, T)
            .await
            .unwrap();
        (s, h, rx)
    }

    #[tokio::test]
    async fn a_key_update_from_the_peer_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        let (mut s, h, ready) = buffered_client(&server, &client, true).await;
        ready.await.unwrap();
        let mut c = h.join().unwrap();
        let peer = std::thread::spawn(move || {
            c.write_all(&pattern(200_000, 9)).unwrap();
            let mut back = vec![0u8; 200_000];
            c.read_exact(&mut back).unwrap();
            assert!(back == pattern(200_000, 9));
            c.conn.refresh_traffic_keys().unwrap();
            c.write_all(b"after").unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"after");
            c.conn.dangerous_extract_secrets().unwrap().rx.0
        });
        let mut b = vec![0u8; 200_000];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        s.flush().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        s.flush().await.unwrap();
        let seq = tokio::task::spawn_blocking(move || peer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(seq, 1, "the server did not answer the key update");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        let (mut s, h, ready) = buffered_client(&server, &client, false).await;
        ready.await.unwrap();
        let mut c = h.join().unwrap();
        c.sock
            .write_all(&[&[0x17u8, 0x03, 0x03, 0x00, 0x20][..], &[0xa5; 32][..]].concat())
            .unwrap();
        let e = s.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(crate::explain::rustls_error(&e).is_some(), "{e}");
        assert!(s.write_all(b"x").await.is_err());
    }
}
