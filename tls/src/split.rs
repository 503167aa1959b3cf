//! A blocking TLS connection split into a reading half and a writing half for two threads
//! (the backend's dispatcher and reply writer; libcuda's reader thread and callers), on
//! rustls' unbuffered API.
//!
//! rustls keeps both directions' state in one connection object, so the halves share it
//! behind a mutex that is held only to move bytes through rustls (decrypting the records
//! one socket read brought, sealing one batch), never across a blocking socket call: a
//! reader blocked waiting for the peer does not stop the writer, and a writer blocked on a
//! full socket does not stop the reader. Socket writes go through a second mutex, taken
//! before the connection's, so TLS records reach the socket in the order rustls made them
//! whichever half made them (the reader makes the occasional post-handshake record, such
//! as the answer to the peer's key update, and queues it for whoever writes next).
//!
//! Copies per byte: the sender seals its plaintext in bounded batches (at most 16 KiB per
//! record, [`BATCH`] per lock, [`WRITE_MAX`] per socket write) into the socket buffer; the
//! receiver reads the socket into its own buffer, where rustls decrypts each record in
//! place, and the plaintext is copied out to the caller (rustls 0.23 still moves each
//! decrypted record through a `Vec` of its own on the way: `ReadTraffic::next_record`). The
//! incoming buffer rustls works on is shared by both halves (either may have to run
//! `process_tls_records`), so the reader receives into a second buffer while unlocked and
//! swaps it in, copying only the unfinished record in front of the new bytes.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::unbuffered::{ConnectionState, UnbufferedStatus};

use crate::unbuffered::{take_alert, tls_error, Incoming, Outgoing, Side};

/// Bytes asked of the socket per read.
pub(crate) const READ: usize = 256 * 1024;
/// Room kept before a socket read's bytes for the unfinished record of the previous read
/// (a TLS 1.3 record is at most 16 KiB + 256 + 5 bytes).
pub(crate) const HEAD: usize = 17 * 1024;
/// Plaintext sealed per lock of the connection (eight full records), so that the reader
/// waits for at most one batch's sealing.
pub const BATCH: usize = 128 * 1024;
/// Plaintext taken per `write` and sent in one socket write: fewer, larger socket writes
/// cost less CPU per byte (the ciphertext buffer grows to this only for bulk writers).
pub const WRITE_MAX: usize = 1024 * 1024;

/// The connection and everything rustls' calls work on (behind one lock here; owned by the
/// stream in [`crate::tokio`]).
pub(crate) struct State<C> {
    conn: C,
    /// Ciphertext received and not yet processed (shared: either half may process it).
    incoming: Incoming,
    /// Decrypted plaintext not yet read: `plain[plain_pos..]` (a record larger than the
    /// reader's buffer, or one the writer's processing decrypted).
    plain: Vec<u8>,
    plain_pos: usize,
    /// Records the reader made (a key update answer, an alert), sent before anything else
    /// by whoever holds `out` next.
    tx: Outgoing,
    /// The peer's `close_notify` was processed: no more data.
    peer_closed: bool,
    /// Our `close_notify` was sealed: nothing more may be sent.
    sent_close: bool,
    /// rustls failed on what the peer sent: every later call reports it.
    failed: Option<rustls::Error>,
}

/// The socket's write side and the ciphertext being sent, in one lock.
struct Out {
    sock: TcpStream,
    buf: Outgoing,
    /// A socket write failed partway: the stream's records are no longer in sequence.
    broken: bool,
}

struct Shared<C> {
    state: Mutex<State<C>>,
    out: Mutex<Out>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the TLS stream is closed (close_notify sent)",
    )
}

/// What one `process_tls_records` asks of the caller next.
enum Step {
    Again,
    Input,
    Fail(rustls::Error),
}

/// What the writer asks rustls to seal.
pub(crate) enum Seal<'a> {
    Data(&'a [u8]),
    CloseNotify,
}

impl<C: Side> State<C> {
    /// `conn` after its handshake; `incoming` holds what the peer sent beyond it.
    pub(crate) fn new(conn: C, incoming: Incoming) -> State<C> {
        State {
            conn,
            incoming,
            plain: Vec::new(),
            plain_pos: 0,
            tx: Outgoing::new(0),
            peer_closed: false,
            sent_close: false,
            failed: None,
        }
    }

    pub(crate) fn conn(&self) -> &C {
        &self.conn
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn sent_close(&self) -> bool {
        self.sent_close
    }

    /// Records the reader made, to go out next.
    pub(crate) fn take_tx(&mut self, out: &mut Outgoing) {
        out.append(&mut self.tx);
    }

    /// The unprocessed ciphertext (the reader receives into it directly in [`crate::tokio`]
    /// and [`crate::shared`]).
    pub(crate) fn incoming(&mut self) -> &mut Incoming {
        &mut self.incoming
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed.clone().map(tls_error)
    }

    /// Records the failure and queues the alert rustls made for it.
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        take_alert(&mut self.conn, &mut self.incoming, &mut self.tx);
        self.failed = Some(e.clone());
        tls_error(e)
    }

    fn take_plain(&mut self, out: &mut [u8]) -> usize {
        let rest = &self.plain[self.plain_pos..];
        let k = rest.len().min(out.len());
        out[..k].copy_from_slice(&rest[..k]);
        self.plain_pos += k;
        if self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
        }
        k
    }

    /// Decrypts what `incoming` holds into `out` (the rest of a record that does not fit into
    /// `plain`). `None`: no plaintext and no complete record, read the socket. `*flush`:
    /// records were queued in `tx`.
    pub(crate) fn read_into(
        &mut self,
        out: &mut [u8],
        flush: &mut bool,
    ) -> Option<io::Result<usize>> {
        let mut n = self.take_plain(out);
        if n == out.len() {
            return Some(Ok(n));
        }
        if let Some(e) = self.failure() {
            return Some(if n > 0 { Ok(n) } else { Err(e) });
        }
        loop {
            if self.peer_closed {
                return Some(Ok(n));
            }
            let State {
                conn,
                incoming,
                plain,
                tx,
                peer_closed,
                ..
            } = self;
            let UnbufferedStatus { mut discard, state } = conn.process(incoming.filled());
            let step = match state {
                Err(e) => Step::Fail(e),
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    let mut step = Step::Again;
                    while let Some(rec) = r.next_record() {
                        match rec {
                            Ok(rec) => {
                                discard += rec.discard;
                                let p = rec.payload;
                                let k = p.len().min(out.len() - n);
                                out[n..n + k].copy_from_slice(&p[..k]);
                                n += k;
                                plain.extend_from_slice(&p[k..]);
                            }
                            Err(e) => {
                                step = Step::Fail(e);
                                break;
                            }
                        }
                    }
                    step
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    *flush = true;
                    match tx.encode(&mut e) {
                        Ok(()) => Step::Again,
                        Err(e) => Step::Fail(rustls::Error::General(e.to_string())),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // Queued in `tx`, which goes out before any later record.
                    *flush = true;
                    t.done();
                    Step::Again
                }
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    *peer_closed = true;
                    Step::Again
                }
                Ok(ConnectionState::WriteTraffic(_)) | Ok(ConnectionState::BlockedHandshake) => {
                    Step::Input
                }
                Ok(other) => Step::Fail(rustls::Error::General(format!(
                    "unexpected TLS state after the handshake: {other:?}"
                ))),
            };
            incoming.discard(discard);
            match step {
                Step::Again if n == out.len() => return Some(Ok(n)),
                Step::Again => {}
                Step::Input => return if n > 0 { Some(Ok(n)) } else { None },
                Step::Fail(e) => {
                    *flush = true;
                    let e = self.fail(e);
                    return Some(if n > 0 { Ok(n) } else { Err(e) });
                }
            }
        }
    }

    /// Seals `what` into `out` after the records the reader queued.
    pub(crate) fn seal(&mut self, out: &mut Outgoing, what: Seal<'_>) -> io::Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if self.sent_close {
            return Err(closed_error());
        }
        out.append(&mut self.tx);
        loop {
            let State {
                conn,
                incoming,
                plain,
                peer_closed,
                sent_close,
                ..
            } = self;
            let UnbufferedStatus { mut discard, state } = conn.process(incoming.filled());
            let step = match state {
                Err(e) => Step::Fail(e),
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let r = match what {
                        Seal::Data(d) => out.encrypt(&mut w, d),
                        Seal::CloseNotify => {
                            *sent_close = true;
                            out.close_notify(&mut w)
                        }
                    };
                    incoming.discard(discard);
                    return r;
                }
                // Records the reader has not reached yet: their plaintext is kept for it.
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    let mut step = Step::Again;
                    while let Some(rec) = r.next_record() {
                        match rec {
                            Ok(rec) => {
                                discard += rec.discard;
                                plain.extend_from_slice(rec.payload);
                            }
                            Err(e) => {
                                step = Step::Fail(e);
                                break;
                            }
                        }
                    }
                    step
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => match out.encode(&mut e) {
                    Ok(()) => Step::Again,
                    Err(e) => Step::Fail(rustls::Error::General(e.to_string())),
                },
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    Step::Again
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    Step::Again
                }
                Ok(ConnectionState::Closed) => {
                    *peer_closed = true;
                    incoming.discard(discard);
                    return Err(closed_error());
                }
                Ok(other) => Step::Fail(rustls::Error::General(format!(
                    "unexpected TLS state after the handshake: {other:?}"
                ))),
            };
            incoming.discard(discard);
            match step {
                Step::Again | Step::Input => {}
                Step::Fail(e) => {
                    let e = self.fail(e);
                    out.append(&mut self.tx);
                    return Err(e);
                }
            }
        }
    }
}

impl<C: Side> Shared<C> {
    /// Writes `out`'s records, then any the reader queued meanwhile; `out` is held, so
    /// records stay in order.
    fn send(&self, out: &mut Out) -> io::Result<()> {
        loop {
            if !out.buf.is_empty() {
                if let Err(e) = out.sock.write_all(out.buf.bytes()) {
                    out.broken = true;
                    out.buf.clear();
                    return Err(e);
                }
                out.buf.clear();
            }
            let mut st = lock(&self.state);
            if st.tx.is_empty() {
                return Ok(());
            }
            out.buf.append(&mut st.tx);
        }
    }

    fn out(&self) -> io::Result<MutexGuard<'_, Out>> {
        let out = lock(&self.out);
        if out.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write to the TLS connection failed; it cannot be used further",
            ));
        }
        Ok(out)
    }
}

/// A TLS connection after the handshake ([`crate::blocking::accept`],
/// [`crate::blocking::connect`]): readable and writable from one thread, or split into
/// halves for two.
pub struct TlsStream<C> {
    reader: TlsReader<C>,
    writer: TlsWriter<C>,
}

impl<C> std::fmt::Debug for TlsStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.reader.sock.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

/// The connection of a [`TlsStream`], locked (for its peer's certificates, ALPN, version).
/// Do not read or write the stream while holding it.
pub struct ConnRef<'a, C>(MutexGuard<'a, State<C>>);

impl<C> Deref for ConnRef<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0.conn
    }
}

impl<C: Side> TlsStream<C> {
    /// `conn` after its handshake over `sock`; `incoming` holds what the peer sent beyond
    /// the handshake.
    pub(crate) fn new(conn: C, sock: TcpStream, incoming: Incoming) -> io::Result<TlsStream<C>> {
        let w = sock.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(conn, incoming)),
            out: Mutex::new(Out {
                sock: w,
                buf: Outgoing::new(32 * 1024),
                broken: false,
            }),
        });
        Ok(TlsStream {
            reader: TlsReader {
                shared: shared.clone(),
                sock,
                spare: vec![0; HEAD + READ],
                eof: false,
                #[cfg(test)]
                chunking: None,
            },
            writer: TlsWriter { shared },
        })
    }

    /// The connection: its peer's certificates, protocol version, ALPN.
    pub fn conn(&self) -> ConnRef<'_, C> {
        ConnRef(lock(&self.reader.shared.state))
    }

    /// The underlying socket (for timeouts, options and shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.reader.sock
    }

    /// The reading and the writing half.
    pub fn split(self) -> (TlsReader<C>, TlsWriter<C>) {
        (self.reader, self.writer)
    }

    /// Sends a TLS `close_notify`, telling the peer the stream ended cleanly.
    pub fn close(&mut self) -> io::Result<()> {
        self.writer.close()
    }
}

impl<C: Side> Read for TlsStream<C> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reader.read(out)
    }
}

impl<C: Side> Write for TlsStream<C> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.writer.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// The reading half.
pub struct TlsReader<C> {
    shared: Arc<Shared<C>>,
    sock: TcpStream,
    /// Where the next socket read lands, at `HEAD..`; swapped with the shared incoming
    /// buffer after the read.
    spare: Vec<u8>,
    /// The socket read end-of-stream.
    eof: bool,
    /// Tests: socket reads of random sizes from 1 byte to the given maximum.
    #[cfg(test)]
    chunking: Option<(u64, usize)>,
}

/// The writing half.
pub struct TlsWriter<C> {
    shared: Arc<Shared<C>>,
}

/// Splits a stream from [`crate::blocking::accept`] or [`crate::blocking::connect`] into
/// halves usable from two threads.
pub fn split_stream<C: Side>(s: TlsStream<C>) -> io::Result<(TlsReader<C>, TlsWriter<C>)> {
    Ok(s.split())
}

impl<C> TlsReader<C> {
    /// The underlying socket (for timeouts and shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn read_len(&mut self) -> usize {
        #[cfg(test)]
        if let Some((rng, max)) = &mut self.chunking {
            // xorshift64
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            return 1 + (*rng % *max as u64) as usize;
        }
        READ
    }
}

/// Puts the `n` bytes read into `spare[HEAD..]` behind the unprocessed bytes of `incoming`,
/// copying the fewer bytes: by swapping the buffers when the unprocessed ones fit into the
/// room before the new ones and are not more (the usual case: a large read and at most one
/// unfinished record), else by appending the new ones (a peer that trickles a record in
/// small pieces costs a copy of each piece, not of the whole unfinished record each time).
fn merge(incoming: &mut Incoming, spare: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let r = incoming.len();
    if r <= HEAD && r <= n {
        spare[HEAD - r..HEAD].copy_from_slice(&incoming.buf[incoming.start..incoming.end]);
        std::mem::swap(&mut incoming.buf, spare);
        incoming.start = HEAD - r;
        incoming.end = HEAD + n;
    } else {
        incoming.tail(n)?[..n].copy_from_slice(&spare[HEAD..HEAD + n]);
        incoming.commit(n);
    }
    Ok(())
}

impl<C: Side> Read for TlsReader<C> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let mut flush = false;
            let (got, pending) = {
                let mut st = lock(&self.shared.state);
                let got = st.read_into(out, &mut flush);
                (got, st.incoming.len())
            };
            if flush {
                // A key update answer or an alert: out before any later record.
                let sent = self.shared.out().and_then(|mut o| self.shared.send(&mut o));
                if let (Err(e), None) = (sent, &got) {
                    return Err(e);
                }
            }
            if let Some(r) = got {
                return r;
            }
            if self.eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if pending > 0 {
                        "the TLS peer closed the connection in the middle of a record"
                    } else {
                        "the TLS peer closed the TCP connection without a close_notify"
                    },
                ));
            }
            // Nothing to return: wait for the peer without holding the connection.
            let want = self.read_len();
            if self.spare.len() < HEAD + want {
                self.spare.resize(HEAD + want, 0);
            }
            let n = loop {
                match self.sock.read(&mut self.spare[HEAD..HEAD + want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            if n == 0 {
                self.eof = true;
                continue;
            }
            let mut st = lock(&self.shared.state);
            merge(&mut st.incoming, &mut self.spare, n)?;
        }
    }
}

impl<C: Side> Write for TlsWriter<C> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let chunk = &data[..data.len().min(WRITE_MAX)];
        let mut out = self.shared.out()?;
        let mut sealed = Ok(());
        for batch in chunk.chunks(BATCH) {
            // The connection is released between batches, for the reader.
            sealed = lock(&self.shared.state).seal(&mut out.buf, Seal::Data(batch));
            if sealed.is_err() {
                break;
            }
        }
        let sent = self.shared.send(&mut out);
        sealed?;
        sent?;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut out = self.shared.out()?;
        self.shared.send(&mut out)?;
        out.sock.flush()
    }
}

impl<C: Side> TlsWriter<C> {
    /// Sends a TLS `close_notify`, telling the peer the stream ended cleanly; later writes
    /// fail.
    pub fn close(&mut self) -> io::Result<()> {
        let mut out = self.shared.out()?;
        let sealed = lock(&self.shared.state).seal(&mut out.buf, Seal::CloseNotify);
        let sent = self.shared.send(&mut out);
        sealed?;
        sent
    }
}

#[cfg(all(test, feature = "issue"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use rustls::{ClientConnection, StreamOwned};

    use super::{merge, Incoming, HEAD};
    use crate::blocking::{accept, connect, ClientStream, ServerStream};
    use crate::test_support::{pattern, T};
    use crate::{ClientTls, ServerTls};

    struct Pki {
        _dir: tempfile::TempDir,
        server: ServerTls,
        client: ClientTls,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = crate::issue::loopback_pki(dir.path(), "acme").unwrap();
        Pki {
            _dir: dir,
            server,
            client,
        }
    }

    fn tcp() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    /// Our server and our client, handshaken.
    fn pair(p: &Pki) -> (ServerStream, ClientStream) {
        let (s, c) = tcp();
        thread::scope(|sc| {
            let h = sc.spawn(|| accept(s, &p.server, T).unwrap());
            let c = connect(c, &p.client, "localhost:1", T).unwrap();
            (h.join().unwrap(), c)
        })
    }

    /// Our server and a client on rustls' buffered API (a peer this code did not write).
    fn buffered_pair(
        p: &Pki,
        extract: bool,
    ) -> (ServerStream, StreamOwned<ClientConnection, TcpStream>) {
        let (s, c) = tcp();
        let mut cfg = (*p.client.client_config()).clone();
        cfg.enable_secret_extraction = extract;
        let name = p.client.server_name("localhost:1").unwrap();
        let conn = ClientConnection::new(Arc::new(cfg), name).unwrap();
        thread::scope(|sc| {
            let h = sc.spawn(|| accept(s, &p.server, T).unwrap());
            let mut c = StreamOwned::new(conn, c);
            while c.conn.is_handshaking() {
                c.conn.complete_io(&mut c.sock).unwrap();
            }
            (h.join().unwrap(), c)
        })
    }

    fn fnv(data: &[u8]) -> u64 {
        data.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        })
    }

    /// Sends `data` from `w` (in writes of up to 100 KiB) while `r` reads `len` bytes with
    /// reads of varying size; returns the checksum of what `r` got.
    fn duplex<R: Read + Send + 'static, W: Write + Send + 'static>(
        mut r: R,
        mut w: W,
        data: Vec<u8>,
        len: usize,
    ) -> thread::JoinHandle<u64> {
        let wt = thread::spawn(move || {
            for (i, chunk) in data.chunks(100_000).enumerate() {
                // Partial writes too: write() takes at most one batch.
                let mut c = chunk;
                while !c.is_empty() {
                    let n = w
                        .write(&c[..c.len().min(1000 + i * 7919 % 90_000)])
                        .unwrap();
                    c = &c[n..];
                }
            }
            w.flush().unwrap();
            w
        });
        thread::spawn(move || {
            let mut got = vec![0u8; len];
            let mut at = 0;
            let mut step = 1usize;
            while at < len {
                step = step * 31 % 65_521 + 1;
                let end = (at + step).min(len);
                let n = r.read(&mut got[at..end]).unwrap();
                assert!(n > 0, "stream ended at {at} of {len}");
                at += n;
            }
            let _w = wt.join().unwrap();
            fnv(&got)
        })
    }

    #[test]
    fn ciphertext_read_in_random_chunks_both_ways_at_once_arrives_intact() {
        let p = pki();
        // Socket reads from 1 byte at a time up to several records at once.
        for (i, (max, len)) in [
            (1, 20_000),
            (5, 100_000),
            (700, 512 << 10),
            (16 * 1024 + 22, 2 << 20),
            (100_000, 4 << 20),
        ]
        .into_iter()
        .enumerate()
        {
            let (s, c) = pair(&p);
            let (mut sr, sw) = s.split();
            let (mut cr, cw) = c.split();
            sr.chunking = Some((0x9e3779b97f4a7c15 ^ i as u64, max));
            cr.chunking = Some((0x2545f4914f6cdd1d ^ i as u64, max));
            let (a, b) = (pattern(len, 1), pattern(len, 2));
            let (ha, hb) = (fnv(&a), fnv(&b));
            let server_got = duplex(sr, sw, a, len);
            let client_got = duplex(cr, cw, b, len);
            assert_eq!(client_got.join().unwrap(), ha, "max read {max}");
            assert_eq!(server_got.join().unwrap(), hb, "max read {max}");
        }
    }

    #[test]
    fn plaintext_the_writer_decrypted_is_kept_for_the_reader() {
        let p = pki();
        let (s, c) = pair(&p);
        let (mut sr, mut sw) = s.split();
        let (_cr, mut cw) = c.split();
        let data = pattern(200_000, 3);
        cw.write_all(&data).unwrap();
        cw.flush().unwrap();
        // One byte read: the reader takes what the socket has but decrypts one record.
        let mut got = vec![0u8; data.len()];
        sr.read_exact(&mut got[..1]).unwrap();
        thread::sleep(Duration::from_millis(50));
        // The writer's turn through rustls processes the records the reader left.
        sw.write_all(b"x").unwrap();
        sr.read_exact(&mut got[1..]).unwrap();
        assert_eq!(fnv(&got), fnv(&data));
    }

    #[test]
    fn a_key_update_from_the_peer_is_answered_in_order() {
        let p = pki();
        let (s, mut c) = buffered_pair(&p, true);
        let (mut sr, mut sw) = s.split();
        let echo = thread::spawn(move || {
            let mut b = vec![0u8; 64 << 10];
            loop {
                match sr.read(&mut b) {
                    Ok(0) => return sw,
                    Ok(n) => sw.write_all(&b[..n]).unwrap(),
                    Err(e) => panic!("server read: {e}"),
                }
            }
        });
        let first = pattern(300_000, 4);
        c.write_all(&first).unwrap();
        let mut back = vec![0u8; first.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(fnv(&back), fnv(&first));
        // A KeyUpdate asking for ours: rustls queues the answer (sealed with the old key)
        // in front of our next record, sealed with the new one.
        c.conn.refresh_traffic_keys().unwrap();
        c.write_all(b"after the update").unwrap();
        let mut b = [0u8; 16];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"after the update");
        c.conn.send_close_notify();
        c.flush().unwrap();
        let sw = echo.join().unwrap();
        drop(sw);
        // The client's receiving key was renewed: its sequence number restarted with the
        // one record that came after our key update.
        let secrets = c.conn.dangerous_extract_secrets().unwrap();
        assert_eq!(secrets.rx.0, 1, "the server did not answer the key update");
    }

    #[test]
    fn an_unfinished_record_goes_in_front_of_the_next_read() {
        // The usual case: the buffers swap, the unfinished bytes copied in front.
        let mut inc = Incoming::new(64);
        inc.tail(10).unwrap()[..10].copy_from_slice(b"0123456789");
        inc.commit(10);
        inc.discard(4);
        let mut spare = vec![0u8; HEAD + 8];
        spare[HEAD..HEAD + 8].copy_from_slice(b"abcdefgh");
        merge(&mut inc, &mut spare, 8).unwrap();
        assert_eq!(inc.filled(), b"456789abcdefgh");
        assert_eq!(spare.len(), 64, "the old buffer is the next spare");
        // Fewer new bytes than unprocessed ones: the new ones are appended.
        spare.resize(HEAD + 8, 0);
        spare[HEAD..HEAD + 2].copy_from_slice(b"ij");
        merge(&mut inc, &mut spare, 2).unwrap();
        assert_eq!(inc.filled(), b"456789abcdefghij");
        assert_eq!(spare.len(), HEAD + 8, "no swap");
        // More unprocessed than the room in front (a long handshake message): appended.
        let mut inc = Incoming::new(16);
        let big: Vec<u8> = (0..HEAD + 5).map(|i| i as u8).collect();
        inc.tail(big.len()).unwrap()[..big.len()].copy_from_slice(&big);
        inc.commit(big.len());
        let mut spare = vec![0u8; HEAD + 8];
        spare[HEAD..HEAD + 2].copy_from_slice(b"yz");
        merge(&mut inc, &mut spare, 2).unwrap();
        assert_eq!(inc.filled(), [&big[..], b"yz"].concat());
        // A peer that never completes a record is refused, not buffered without end.
        let mut inc = Incoming::new(16);
        let mut total = 0;
        let refused = loop {
            match inc.tail(64 << 10) {
                Ok(t) => {
                    let n = t.len().min(64 << 10);
                    inc.commit(n);
                    total += n;
                }
                Err(e) => break e,
            }
        };
        assert!(
            total <= crate::unbuffered::MAX_PENDING + (64 << 10),
            "{total}"
        );
        assert_eq!(refused.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn close_notify_reads_as_the_end_and_a_tcp_close_as_an_error() {
        let p = pki();
        let (s, c) = pair(&p);
        let (mut sr, _sw) = s.split();
        let (_cr, mut cw) = c.split();
        cw.write_all(b"bye").unwrap();
        cw.close().unwrap();
        assert_eq!(
            cw.write(b"more").unwrap_err().kind(),
            ErrorKind::BrokenPipe,
            "nothing is sent after close_notify"
        );
        let mut b = [0u8; 3];
        sr.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"bye");
        assert_eq!(sr.read(&mut b).unwrap(), 0);
        assert_eq!(sr.read(&mut b).unwrap(), 0, "the end stays the end");

        let (s, c) = pair(&p);
        let (mut sr, _sw) = s.split();
        c.socket().shutdown(Shutdown::Both).unwrap();
        let e = sr.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("without a close_notify"), "{e}");
    }

    #[test]
    fn a_peer_closing_mid_record_is_an_error() {
        let p = pki();
        let (s, mut c) = buffered_pair(&p, false);
        let (mut sr, _sw) = s.split();
        c.conn.writer().write_all(b"a record cut short").unwrap();
        let mut rec = Vec::new();
        c.conn.write_tls(&mut rec).unwrap();
        c.sock.write_all(&rec[..rec.len() / 2]).unwrap();
        c.sock.shutdown(Shutdown::Write).unwrap();
        let mut b = [0u8; 32];
        let e = sr.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("middle of a record"), "{e}");
    }

    #[test]
    fn garbage_instead_of_a_record_fails_both_halves_with_an_alert() {
        let p = pki();
        for garbage in [
            // A well-formed header, and bytes that do not decrypt.
            [&[0x17u8, 0x03, 0x03, 0x00, 0x20][..], &[0xa5; 32][..]].concat(),
            // Not a TLS record at all.
            vec![0xff; 64],
            // A record longer than TLS allows.
            [&[0x17u8, 0x03, 0x03, 0xff, 0xff][..], &[0; 64][..]].concat(),
        ] {
            let (s, mut c) = buffered_pair(&p, false);
            let (mut sr, mut sw) = s.split();
            c.sock.write_all(&garbage).unwrap();
            let mut b = [0u8; 32];
            let e = sr.read(&mut b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
            assert!(crate::explain::rustls_error(&e).is_some(), "{e}");
            assert_eq!(sr.read(&mut b).unwrap_err().kind(), ErrorKind::InvalidData);
            assert!(sw.write(b"x").is_err(), "the writer stops too");
            // The peer is told (an alert, then the connection is unusable for it).
            c.sock.set_read_timeout(Some(T)).unwrap();
            assert!(c.read(&mut b).is_err(), "the peer saw no alert");
        }
    }

    #[test]
    fn a_handshake_cut_halfway_fails_on_both_sides() {
        let p = pki();
        // The client's hello, half of it, then the client is gone.
        let name = p.client.server_name("localhost:1").unwrap();
        let mut hello = Vec::new();
        ClientConnection::new(p.client.client_config(), name)
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        let (s, mut c) = tcp();
        c.write_all(&hello[..hello.len() / 2]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let e = accept(s, &p.server, T).unwrap_err();
        assert_eq!(e.source.kind(), ErrorKind::UnexpectedEof, "{e}");

        // The server reads the hello and is gone.
        let (mut s, c) = tcp();
        let cut = thread::spawn(move || {
            let mut b = [0u8; 512];
            let _ = s.read(&mut b);
        });
        let e = connect(c, &p.client, "localhost:1", T).unwrap_err();
        cut.join().unwrap();
        assert!(
            e.explanation.contains("closed during the TLS handshake"),
            "{}",
            e.explanation
        );
    }
}
