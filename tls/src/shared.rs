//! A TLS connection after the handshake, shared by a sending and a receiving half that do
//! their own socket I/O (vdev's queue sessions: the sender writes frames and guest data, the
//! receiver reads replies into guest memory, each on its own task and with its own
//! readiness waits on one socket).
//!
//! The halves share the connection state behind one mutex, held only to seal a batch of
//! plaintext, to decrypt what arrived, or for one non-blocking socket read into the
//! incoming buffer, never across an await. The sender seals into its own [`Ciphertext`]
//! buffer and writes it outside the lock; records the receiver had to make (the answer to the
//! peer's key update, an alert) are queued and go out first with the sender's next
//! [`SharedConnection::seal`] or [`SharedConnection::take_queued`], so records reach the
//! socket in the order rustls made them as long as only the sender writes.
//!
//! Copies per byte: plaintext into the sender's ciphertext buffer (sealed there in place);
//! records decrypted in place in the incoming buffer and copied out to the caller (rustls
//! 0.23 still moves each decrypted record through a `Vec` of its own: see [`crate::split`]).

use std::io;
use std::sync::{Mutex, MutexGuard};

use rustls::client::UnbufferedClientConnection;

use crate::split::{Seal, State, READ};
use crate::unbuffered::{Outgoing, Side};

/// A client connection shared by two halves.
pub type SharedClient = SharedConnection<UnbufferedClientConnection>;

/// See the module docs.
pub struct SharedConnection<C> {
    state: Mutex<State<C>>,
}

impl<C> std::fmt::Debug for SharedConnection<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection").finish_non_exhaustive()
    }
}

/// Sealed records waiting to be written to the socket, owned by the sending half.
pub struct Ciphertext {
    out: Outgoing,
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ciphertext")
            .field("len", &self.len())
            .finish()
    }
}

impl Ciphertext {
    /// An empty buffer with room for `capacity` bytes (it grows to what one seal needs).
    pub fn with_capacity(capacity: usize) -> Ciphertext {
        Ciphertext {
            out: Outgoing::new(capacity),
        }
    }

    /// The records to write, in order.
    pub fn bytes(&self) -> &[u8] {
        self.out.bytes()
    }

    pub fn len(&self) -> usize {
        self.out.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Appends records sealed earlier.
    #[cfg(feature = "tokio")]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.out.extend(bytes);
    }

    /// Forgets the records (after they were written).
    pub fn clear(&mut self) {
        self.out.clear();
    }
}

/// What [`SharedConnection::read`] found.
#[derive(Debug)]
pub enum Received {
    /// This many bytes of plaintext were copied out (at least one).
    Data(usize),
    /// No complete record: receive more ciphertext from the socket
    /// ([`SharedConnection::receive`]).
    NeedInput,
    /// The peer sent its `close_notify`: no more data will come.
    Closed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: Side> SharedConnection<C> {
    /// A connection after its handshake (its state as a stream left it).
    #[cfg(feature = "tokio")]
    pub(crate) fn from_state(st: State<C>) -> SharedConnection<C> {
        SharedConnection {
            state: Mutex::new(st),
        }
    }

    /// Seals `plain` into `out`, after any records the receiver queued. Sealing more than a
    /// few hundred KiB at once holds the receiver up for that long: callers bound it.
    pub fn seal(&self, out: &mut Ciphertext, plain: &[u8]) -> io::Result<()> {
        if plain.is_empty() {
            self.take_queued(out);
            return Ok(());
        }
        lock(&self.state).seal(&mut out.out, Seal::Data(plain))
    }

    /// Moves the records the receiver queued (a key update answer, an alert) into `out`.
    pub fn take_queued(&self, out: &mut Ciphertext) {
        lock(&self.state).take_tx(&mut out.out);
    }

    /// Copies decrypted plaintext into `buf` (not empty), decrypting what has been received.
    /// A failure of rustls on the peer's records is reported here and by every later call.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut queued = false;
        match lock(&self.state).read_into(buf, &mut queued) {
            None => Ok(Received::NeedInput),
            Some(Ok(0)) => Ok(Received::Closed),
            Some(Ok(n)) => Ok(Received::Data(n)),
            Some(Err(e)) => Err(e),
        }
    }

    /// Receives ciphertext: `read` is called once, under the lock, with room for up to
    /// 256 KiB, and returns how many bytes it put there. It must not block (a non-blocking
    /// socket read). A peer that sends more than 1 MiB without completing a record is
    /// refused.
    pub fn receive(&self, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        let mut st = lock(&self.state);
        let incoming = st.incoming();
        let tail = incoming.tail(READ)?;
        let room = tail.len().min(READ);
        let n = read(&mut tail[..room])?;
        incoming.commit(n.min(room));
        Ok(n.min(room))
    }

    /// Whether ciphertext is buffered that rustls has not turned into plaintext yet (a cut
    /// connection then ended mid-record).
    pub fn pending_input(&self) -> bool {
        lock(&self.state).incoming().len() > 0
    }

    /// Runs `f` on the connection (its peer's certificates, protocol version, ALPN).
    pub fn with_conn<R>(&self, f: impl FnOnce(&C) -> R) -> R {
        f(lock(&self.state).conn())
    }
}

#[cfg(all(test, feature = "issue", feature = "tokio"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::{ServerConnection, StreamOwned};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::test_support::{pattern, pki, T};
    use crate::{ClientTls, ServerTls};

    fn next(rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }

    /// The two halves as vdev drives them: one socket, readiness waits and non-blocking
    /// socket calls of their own.
    struct Halves {
        conn: Arc<SharedClient>,
        sock: Arc<TcpStream>,
    }

    async fn connect(addr: std::net::SocketAddr, client: &ClientTls) -> (Halves, Ciphertext) {
        let s = TcpStream::connect(addr).await.unwrap();
        let s = crate::tokio::connect(s, client, "localhost:1", T)
            .await
            .unwrap();
        let (conn, sock, unsent) = s.into_shared();
        let h = Halves {
            conn: Arc::new(conn),
            sock: Arc::new(sock),
        };
        (h, unsent)
    }

    async fn write_all(sock: &TcpStream, out: &mut Ciphertext) {
        let mut sent = 0;
        while sent < out.len() {
            sock.writable().await.unwrap();
            match sock.try_write(&out.bytes()[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        out.clear();
    }

    /// Sends `data` in pieces of random sizes up to `max`, each sealed and written.
    async fn send(h: &Halves, out: &mut Ciphertext, data: &[u8], mut rng: u64, max: usize) {
        let mut at = 0;
        while at < data.len() {
            let n = (1 + next(&mut rng) as usize % max).min(data.len() - at);
            h.conn.seal(out, &data[at..at + n]).unwrap();
            write_all(&h.sock, out).await;
            at += n;
        }
    }

    /// Reads plaintext into `buf` as the receiving half does (socket reads of random sizes
    /// up to `max`).
    async fn recv(h: &Halves, buf: &mut [u8], mut rng: u64, max: usize) -> io::Result<Received> {
        loop {
            match h.conn.read(buf)? {
                Received::NeedInput => {}
                r => return Ok(r),
            }
            loop {
                h.sock.readable().await?;
                let want = 1 + next(&mut rng) as usize % max;
                let sock = &h.sock;
                match h.conn.receive(|room| {
                    let k = want.min(room.len());
                    sock.try_read(&mut room[..k])
                }) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    async fn recv_exact(h: &Halves, len: usize, rng: u64, max: usize) -> Vec<u8> {
        let mut got = vec![0u8; len];
        let mut at = 0;
        let mut rng = rng;
        while at < len {
            match recv(h, &mut got[at..], next(&mut rng), max).await.unwrap() {
                Received::Data(n) => at += n,
                r => panic!("{r:?} after {at} of {len} bytes"),
            }
        }
        got
    }

    /// An async server that echoes everything back.
    async fn echo_server(server: Arc<ServerTls>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let s = crate::tokio::accept(s, "t", &server, T).await.unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            let mut b = vec![0u8; 100_000];
            loop {
                match r.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        w.write_all(&b[..n]).await.unwrap();
                        w.flush().await.unwrap();
                    }
                }
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_halves_on_two_tasks_carry_data_in_random_pieces_both_ways_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        for (i, (max, len)) in [(1, 20_000), (700, 300_000), (40_000, 4 << 20)]
            .into_iter()
            .enumerate()
        {
            let addr = echo_server(Arc::clone(&server)).await;
            let (h, mut out) = connect(addr, &client).await;
            let h = Arc::new(h);
            let data = pattern(len, i as u32);
            let (hs, d) = (Arc::clone(&h), data.clone());
            let sender = tokio::spawn(async move {
                send(&hs, &mut out, &d, 0x9e37_79b9_7f4a_7c15 ^ i as u64, max).await;
            });
            let got = recv_exact(&h, len, 0x2545_f491_4f6c_dd1d ^ i as u64, max).await;
            sender.await.unwrap();
            assert!(got == data, "the echo came back whole (pieces up to {max})");
        }
    }

    /// A server on rustls' buffered API over a blocking socket.
    fn buffered_server(
        server: Arc<ServerTls>,
        peer: impl FnOnce(&mut StreamOwned<ServerConnection, std::net::TcpStream>) + Send + 'static,
    ) -> (std::net::SocketAddr, std::thread::JoinHandle<u64>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut cfg = (*server.server_config()).clone();
            cfg.enable_secret_extraction = true;
            let conn = ServerConnection::new(Arc::new(cfg)).unwrap();
            let mut s = StreamOwned::new(conn, l.accept().unwrap().0);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).unwrap();
            }
            peer(&mut s);
            let StreamOwned { conn, .. } = s;
            conn.dangerous_extract_secrets().unwrap().rx.0
        });
        (addr, h)
    }

    #[tokio::test]
    async fn the_receivers_answer_to_a_key_update_goes_out_with_the_senders_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        let (addr, peer) = buffered_server(Arc::clone(&server), |s| {
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"hello");
            s.conn.refresh_traffic_keys().unwrap();
            s.write_all(b"after").unwrap();
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"again");
        });
        let (h, mut out) = connect(addr, &client).await;
        send(&h, &mut out, b"hello", 1, 5).await;
        assert_eq!(recv_exact(&h, 5, 2, 1000).await, b"after");
        // One record: the peer counts its records since the key change.
        send(&h, &mut out, b"again", 3, 1000).await;
        let seq = tokio::task::spawn_blocking(move || peer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(
            seq, 1,
            "the key update was not answered before the next record"
        );
    }

    #[tokio::test]
    async fn close_notify_reads_as_closed_and_garbage_as_invalid_data_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = pki(dir.path());
        let (addr, peer) = buffered_server(Arc::clone(&server), |s| {
            s.write_all(b"bye").unwrap();
            s.conn.send_close_notify();
            s.conn.complete_io(&mut s.sock).unwrap();
        });
        let (h, _) = connect(addr, &client).await;
        assert_eq!(recv_exact(&h, 3, 4, 1000).await, b"bye");
        assert!(matches!(
            recv(&h, &mut [0u8; 8], 5, 1000).await.unwrap(),
            Received::Closed
        ));
        tokio::task::spawn_blocking(move || peer.join().unwrap())
            .await
            .unwrap();

        let (addr, peer) = buffered_server(Arc::clone(&server), |s| {
            s.sock
                .write_all(&[&[0x17u8, 0x03, 0x03, 0x00, 0x20][..], &[0xa5; 32][..]].concat())
                .unwrap();
        });
        let (h, mut out) = connect(addr, &client).await;
        for _ in 0..2 {
            let e = recv(&h, &mut [0u8; 8], 6, 1000).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(crate::explain::rustls_error(&e).is_some(), "{e}");
        }
        assert!(
            h.conn.seal(&mut out, b"x").is_err(),
            "nothing sealed after a failure"
        );
        tokio::task::spawn_blocking(move || peer.join().unwrap())
            .await
            .unwrap();
    }
}
