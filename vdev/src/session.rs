//! One queue's backend session: the TCP connection, the handshake, and frames whose data
//! sections move straight between guest memory and the socket.
//!
//! Why not `netgpu-client`: its API takes and returns byte slices and vectors, so every copy
//! through it would be staged in a vdev buffer as large as the copy. Here a request's data is
//! written with `writev` from the mapped guest pages and a reply's data is read with `readv`
//! into them, in chunks of at most [`CHUNK`] bytes, each a non-blocking syscall under the
//! guest memory's access lock (so a `DMA_UNMAP` waits for at most one chunk and the memory is
//! never touched after it). Frames, the handshake (`wire::client::{hello, welcome}`, shared
//! with `netgpu-client` and libcuda) and limits are the wire protocol's own; only the I/O
//! loop is vdev's.
//!
//! With TLS (`[tls]`, `netgpu-tls`) the same loop runs through one rustls unbuffered client
//! connection shared by the two halves (`netgpu_tls::shared`: locked only to seal, to decrypt
//! or for one non-blocking socket read, never across an await): guest data is gathered in
//! chunks of at most [`TLS_CHUNK`] bytes under the guest memory's access lock, sealed into
//! the sender's ciphertext buffer and written to the socket outside both locks; reply
//! records are decrypted in place in the connection's incoming buffer, copied into the
//! receive buffer and from there into the guest pages. Only the sending half writes to the
//! socket (records the receiving half has to make, such as a key update's answer, go out
//! with the sender's next write), so TLS records reach the socket in the order rustls made
//! them. Plain TCP is for loopback addresses only.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netgpu_proto::wire::client;
use netgpu_proto::wire::frame::FrameHeader;
use netgpu_proto::wire::ops::{self, Reply, Request, SessionLimits};
use netgpu_proto::wire::{HEADER_LEN, MAX_CTRL_LEN};
use netgpu_tls::shared::{Ciphertext, Received, SharedClient};
use netgpu_tls::{ClientTls, NetTuning};
use thiserror::Error;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::memory::GuestMemory;
use crate::sg::Run;

/// Largest piece of guest memory one syscall moves.
pub const CHUNK: u64 = 1 << 20;
/// Largest number of guest ranges one syscall moves.
const MAX_IOV: usize = 256;
/// Small frames are gathered up to this size before they are written.
const OUT_BUFFER: usize = 64 * 1024;
/// The receive buffer: a header and the largest control section fit.
const RECV_BUFFER: usize = 2 * MAX_CTRL_LEN as usize;
/// With TLS: largest piece of guest memory gathered and sealed at once (and so the size of
/// the ciphertext written per socket call). Larger pieces cost less CPU per byte (fewer,
/// larger socket writes; measured in docs/performance.md) but hold the connection's lock,
/// and a `DMA_UNMAP` waiting for the guest memory's, for longer.
pub const TLS_CHUNK: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot connect to backend {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("backend {0} did not answer the handshake in time")]
    HandshakeTimeout(String),
    #[error("backend refused the session")]
    Refused(#[source] client::HandshakeError),
    #[error("cannot set the socket options of the connection to {addr}")]
    Socket {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("plain TCP refused for {0}: without [tls] vdev connects to loopback addresses only (127.0.0.0/8, ::1); configure [tls] (see docs/security.md)")]
    PlainNotLoopback(String),
    #[error("TLS to backend {addr}: {explanation}")]
    Tls { addr: String, explanation: String },
    #[error("connection to the backend lost: {0}")]
    Lost(String),
    #[error("backend answered out of protocol: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn lost(e: impl std::fmt::Display) -> Error {
    Error::Lost(e.to_string())
}

/// What the backend said in its `Welcome`.
#[derive(Clone, Debug)]
pub struct Welcome {
    pub session_id: u64,
    pub max_data: u32,
}

/// Connection parameters.
#[derive(Clone, Debug)]
pub struct Options {
    pub addr: String,
    pub token: String,
    pub client: String,
    pub limits: SessionLimits,
    /// Connecting and the handshake together.
    pub timeout: Duration,
    pub transport: Transport,
}

/// How sessions notice a dead backend or network: socket settings and the watchdog.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// Keepalive and `TCP_USER_TIMEOUT` of the socket (a partition while data is in flight,
    /// or while nothing is: both fail the socket within seconds).
    pub net: NetTuning,
    /// Probing a silent session that has commands waiting (a backend or middlebox that
    /// holds the connection open but answers nothing, which TCP alone cannot see).
    pub liveness: Option<Liveness>,
    /// TLS to the backend (certificates loaded at start-up); `None`: plain TCP, loopback
    /// addresses only.
    pub tls: Option<Arc<ClientTls>>,
}

/// Whether plain TCP may go to `addr`: an `IP:PORT` on loopback (addresses are resolved at
/// start-up; the seccomp filter leaves no room for name lookups later).
pub fn plain_allowed(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(netgpu_tls::policy::plain_peer_allowed)
}

/// A session's TLS state, shared by its halves.
struct Tls {
    conn: SharedClient,
    client: Arc<ClientTls>,
    addr: String,
}

impl Tls {
    /// A TLS error in the operator's words (the backend refusing this client's certificate
    /// shows up at the first read, after the handshake).
    fn failed(&self, e: io::Error) -> Error {
        Error::Tls {
            addr: self.addr.clone(),
            explanation: self.client.explain(&e, &self.addr),
        }
    }
}

/// The session watchdog's settings (as `netgpu-client`'s): while commands wait for replies
/// and nothing has moved either way for `probe_after`, a `Null` request is sent (the backend
/// answers it at once, also while the session's other work runs); once nothing has moved
/// for `timeout`, the session is declared lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    pub probe_after: Duration,
    pub timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            probe_after: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        }
    }
}

/// When the connection last moved bytes, either way.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since bytes last moved.
    pub fn silence(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Opens a session: connects, authenticates and returns the two halves.
pub async fn open(opts: &Options) -> Result<(Sender, Receiver, Welcome)> {
    let connect = async {
        let stream = TcpStream::connect(&opts.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: opts.addr.clone(),
                source,
            })?;
        opts.transport
            .net
            .apply(&stream)
            .map_err(|source| Error::Socket {
                addr: opts.addr.clone(),
                source,
            })?;
        let (stream, tls) = match &opts.transport.tls {
            None if !plain_allowed(&opts.addr) => {
                return Err(Error::PlainNotLoopback(opts.addr.clone()))
            }
            None => (stream, None),
            Some(client) => {
                let s = netgpu_tls::tokio::connect(stream, client, &opts.addr, opts.timeout)
                    .await
                    .map_err(|e| Error::Tls {
                        addr: opts.addr.clone(),
                        explanation: e.explanation,
                    })?;
                let (conn, stream, unsent) = s.into_shared();
                let t = Tls {
                    conn,
                    client: Arc::clone(client),
                    addr: opts.addr.clone(),
                };
                (stream, Some((Arc::new(t), unsent)))
            }
        };
        let (tls, cipher) = match tls {
            Some((t, unsent)) => (Some(t), unsent),
            None => (None, Ciphertext::with_capacity(0)),
        };
        let stream = Arc::new(stream);
        let progress = Progress::new();
        let mut tx = Sender {
            stream: Arc::clone(&stream),
            out: Vec::with_capacity(OUT_BUFFER),
            next_id: 1,
            sent: 0,
            progress: Arc::clone(&progress),
            tls: tls.clone(),
            cipher,
            cipher_sent: 0,
            bounce: Vec::new(),
        };
        let mut rx = Receiver {
            stream,
            progress,
            tls,
            buf: vec![0u8; RECV_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        };
        let hello = client::hello(&opts.token, &opts.client, opts.limits);
        let id = tx.next_id();
        tx.push(id, 0, &hello, 0)?;
        tx.flush().await?;
        let head = rx.head().await?;
        let reply = match &head.ctrl {
            Ctrl::Bytes(b) if !b.is_empty() => ops::decode::<Reply>(b).ok(),
            _ => None,
        };
        rx.discard(u64::from(head.header.data_len)).await?;
        let s = client::welcome(&head.header, reply).map_err(Error::Refused)?;
        Ok((
            tx,
            rx,
            Welcome {
                session_id: s.session_id,
                max_data: s.max_data_len,
            },
        ))
    };
    tokio::time::timeout(opts.timeout, connect)
        .await
        .map_err(|_| Error::HandshakeTimeout(opts.addr.clone()))?
}

/// Opens a session, asks the backend about its GPU and closes the session again (the
/// device's probe: the same transport, TLS and socket settings as the queues' sessions).
pub async fn query_device(opts: &Options) -> Result<ops::DeviceInfo> {
    let query = async {
        let (mut tx, mut rx, _) = open(opts).await?;
        let id = tx.next_id();
        tx.push(id, 0, &Request::DeviceQuery, 0)?;
        tx.flush().await?;
        let head = rx.head().await?;
        rx.discard(u64::from(head.header.data_len)).await?;
        let reply = match &head.ctrl {
            Ctrl::Bytes(b) => ops::decode::<Reply>(b).ok(),
            Ctrl::Oversized(_) => None,
        };
        match (head.header.kind, head.header.request_id == id, reply) {
            (netgpu_proto::wire::frame::FrameKind::Reply, true, Some(Reply::Device(d)))
                if head.header.status.is_success() =>
            {
                Ok(d)
            }
            (_, _, r) => Err(Error::Protocol(format!(
                "DeviceQuery answered with status {} and {r:?}",
                head.header.status
            ))),
        }
    };
    tokio::time::timeout(opts.timeout, query)
        .await
        .map_err(|_| Error::HandshakeTimeout(opts.addr.clone()))?
}

/// The sending half: owned by the queue's worker, which writes frames in submission order.
pub struct Sender {
    stream: Arc<TcpStream>,
    /// Encoded frames not written yet; `sent` bytes of it already are.
    out: Vec<u8>,
    sent: usize,
    next_id: u64,
    progress: Arc<Progress>,
    tls: Option<Arc<Tls>>,
    /// With TLS: ciphertext not written yet; `cipher_sent` bytes of it already are.
    cipher: Ciphertext,
    cipher_sent: usize,
    /// With TLS: guest data on its way into rustls.
    bounce: Vec<u8>,
}

/// A zero page to pad a data section whose guest memory vanished mid-frame.
static ZEROS: [u8; 4096] = [0; 4096];

impl Sender {
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Appends a frame's header and control section (its data follows with
    /// [`Sender::send_guest`]).
    pub fn push(&mut self, id: u64, flags: u8, req: &Request, data_len: u32) -> Result<()> {
        let at = self.out.len();
        self.out.resize(at + HEADER_LEN, 0);
        ops::encode_into(req, &mut self.out).map_err(lost)?;
        let ctrl_len = (self.out.len() - at - HEADER_LEN) as u32;
        let h = FrameHeader::request(id, flags, ctrl_len, data_len);
        self.out[at..at + HEADER_LEN].copy_from_slice(&h.encode());
        Ok(())
    }

    /// Whether enough small frames have gathered to write them now.
    pub fn should_flush(&self) -> bool {
        self.out.len() >= OUT_BUFFER
    }

    fn consume(&mut self, n: usize) -> usize {
        let from_out = n.min(self.out.len() - self.sent);
        self.sent += from_out;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        n - from_out
    }

    /// Writes every gathered frame.
    pub async fn flush(&mut self) -> Result<()> {
        self.flush_stamped(true).await
    }

    /// Writes every gathered frame without counting it as progress: a liveness probe's
    /// own bytes prove nothing about the backend.
    pub async fn flush_probe(&mut self) -> Result<()> {
        self.flush_stamped(false).await
    }

    async fn flush_stamped(&mut self, stamp: bool) -> Result<()> {
        if let Some(tls) = self.tls.clone() {
            let pending = &self.out[self.sent.min(self.out.len())..];
            tls.conn.seal(&mut self.cipher, pending).map_err(lost)?;
            self.out.clear();
            self.sent = 0;
            return self.write_cipher(stamp).await;
        }
        while !self.out.is_empty() {
            self.stream.writable().await.map_err(lost)?;
            match self.stream.try_write(&self.out[self.sent..]) {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(n) => {
                    if stamp {
                        self.progress.stamp();
                    }
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(lost(e)),
            }
        }
        Ok(())
    }

    /// With TLS: writes the ciphertext made so far.
    async fn write_cipher(&mut self, stamp: bool) -> Result<()> {
        while self.cipher_sent < self.cipher.len() {
            self.stream.writable().await.map_err(lost)?;
            match self
                .stream
                .try_write(&self.cipher.bytes()[self.cipher_sent..])
            {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(n) => {
                    if stamp {
                        self.progress.stamp();
                    }
                    self.cipher_sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(lost(e)),
            }
        }
        self.cipher.clear();
        self.cipher_sent = 0;
        Ok(())
    }

    /// With TLS: [`Sender::send_guest`] through rustls. Each chunk is copied out of guest
    /// memory (under its access lock, as every guest access) and encrypted, then written
    /// outside the lock.
    async fn send_guest_tls(
        &mut self,
        tls: &Tls,
        mem: &GuestMemory,
        run: &Run,
        skip: u64,
        len: u64,
    ) -> Result<u64> {
        self.flush().await?;
        if self.bounce.len() < TLS_CHUNK {
            self.bounce.resize(TLS_CHUNK, 0);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(TLS_CHUNK as u64) as usize;
            let chunk = &mut self.bounce[..n];
            if run
                .gather_into(&mem.snapshot(), skip + done, chunk)
                .is_err()
            {
                return Ok(len - done);
            }
            tls.conn.seal(&mut self.cipher, chunk).map_err(lost)?;
            done += n as u64;
            self.write_cipher(true).await?;
        }
        Ok(0)
    }

    /// Writes the gathered frames, then `len` bytes of guest memory (`skip` bytes into
    /// `run`) as the data section of the last one. Returns the bytes it could not send
    /// because the guest memory vanished mid-way (unmapped): the caller fails the command
    /// and then sends that many zeros ([`Sender::pad`]) to keep the stream in step.
    pub async fn send_guest(
        &mut self,
        mem: &GuestMemory,
        run: &Run,
        skip: u64,
        len: u64,
    ) -> Result<u64> {
        if let Some(tls) = self.tls.clone() {
            return self.send_guest_tls(&tls, mem, run, skip, len).await;
        }
        let fd = self.stream.as_raw_fd();
        let mut done = 0u64;
        while done < len {
            let (ranges, n) = run
                .slice(skip + done, (len - done).min(CHUNK), MAX_IOV)
                .map_err(lost)?;
            self.stream.writable().await.map_err(lost)?;
            let pending = &self.out[self.sent..];
            let r = mem.snapshot().with_iovecs(&ranges, false, |guest| {
                let mut iov = Vec::with_capacity(guest.len() + 1);
                if !pending.is_empty() {
                    iov.push(libc::iovec {
                        iov_base: pending.as_ptr() as *mut libc::c_void,
                        iov_len: pending.len(),
                    });
                }
                iov.extend_from_slice(guest);
                self.stream.try_io(Interest::WRITABLE, || {
                    // SAFETY: every iovec points into memory that stays valid during the
                    // call: our own buffer, or guest memory mapped by a live mapping whose
                    // unmapping waits for the access lock held around this closure. writev
                    // only reads through them.
                    let rc = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) };
                    if rc < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(rc as usize)
                    }
                })
            });
            match r {
                Ok(Ok(0)) => return Err(lost("backend closed the connection")),
                Ok(Ok(k)) => {
                    self.progress.stamp();
                    let guest = self.consume(k) as u64;
                    debug_assert!(guest <= n);
                    done += guest;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => return Err(lost(e)),
                Err(_) => return Ok(len - done),
            }
        }
        Ok(0)
    }

    /// Writes the gathered frames, then `len` zero bytes.
    pub async fn pad(&mut self, mut len: u64) -> Result<()> {
        self.flush().await?;
        if let Some(tls) = self.tls.clone() {
            while len > 0 {
                // Up to one piece's worth of records per socket write, as for guest data.
                let mut piece = len.min(TLS_CHUNK as u64);
                len -= piece;
                while piece > 0 {
                    let n = piece.min(ZEROS.len() as u64) as usize;
                    tls.conn.seal(&mut self.cipher, &ZEROS[..n]).map_err(lost)?;
                    piece -= n as u64;
                }
                self.write_cipher(true).await?;
            }
            return Ok(());
        }
        while len > 0 {
            self.stream.writable().await.map_err(lost)?;
            let n = len.min(ZEROS.len() as u64) as usize;
            match self.stream.try_write(&ZEROS[..n]) {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(k) => {
                    self.progress.stamp();
                    len -= k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(lost(e)),
            }
        }
        Ok(())
    }
}

/// A reply frame's control section.
#[derive(Debug)]
pub enum Ctrl {
    Bytes(Vec<u8>),
    /// Larger than the protocol allows (the bytes were skipped).
    Oversized(u32),
}

/// A frame's header and control section; its data section is still to be read.
#[derive(Debug)]
pub struct Head {
    pub header: FrameHeader,
    pub ctrl: Ctrl,
}

/// The receiving half: owned by the queue's reply task.
pub struct Receiver {
    stream: Arc<TcpStream>,
    progress: Arc<Progress>,
    tls: Option<Arc<Tls>>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Receiver {
    /// The connection's progress clock (shared with its sender).
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads more bytes into the buffer (at least one).
    async fn fill(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if let Some(tls) = self.tls.clone() {
            loop {
                match tls.conn.read(&mut self.buf[self.end..]) {
                    Ok(Received::Data(n)) => {
                        self.end += n;
                        return Ok(());
                    }
                    Ok(Received::Closed) => return Err(lost("backend closed the TLS session")),
                    Ok(Received::NeedInput) => self.receive(&tls).await?,
                    Err(e) => return Err(tls.failed(e)),
                }
            }
        }
        loop {
            self.stream.readable().await.map_err(lost)?;
            match self.stream.try_read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(n) => {
                    self.progress.stamp();
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(lost(e)),
            }
        }
    }

    /// With TLS: reads the ciphertext the socket has (at least one byte) into the
    /// connection's incoming buffer.
    async fn receive(&mut self, tls: &Tls) -> Result<()> {
        loop {
            self.stream.readable().await.map_err(lost)?;
            let stream = &self.stream;
            match tls.conn.receive(|room| stream.try_read(room)) {
                Ok(0) if tls.conn.pending_input() => {
                    return Err(lost(
                        "backend closed the connection in the middle of a TLS record",
                    ))
                }
                Ok(0) => {
                    return Err(lost(
                        "backend closed the connection without a TLS close_notify",
                    ))
                }
                Ok(_) => {
                    self.progress.stamp();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(tls.failed(e)),
                Err(e) => return Err(lost(e)),
            }
        }
    }

    /// The next `n` bytes (`n` at most the buffer size).
    async fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.buffered() < n {
            self.fill().await?;
        }
        let at = self.start;
        self.start += n;
        Ok(&self.buf[at..at + n])
    }

    /// Reads the next frame's header and control section. A frame the protocol does not
    /// allow (bad magic, kind or flags) ends the connection; an oversized control section is
    /// skipped and reported, so the caller can fail that one request and go on.
    pub async fn head(&mut self) -> Result<Head> {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(self.take(HEADER_LEN).await?);
        let header = FrameHeader::decode(&h, u32::MAX, u32::MAX).map_err(lost)?;
        let ctrl = if header.ctrl_len > MAX_CTRL_LEN {
            self.discard(u64::from(header.ctrl_len)).await?;
            Ctrl::Oversized(header.ctrl_len)
        } else {
            Ctrl::Bytes(self.take(header.ctrl_len as usize).await?.to_vec())
        };
        Ok(Head { header, ctrl })
    }

    /// Skips `len` bytes.
    pub async fn discard(&mut self, mut len: u64) -> Result<()> {
        while len > 0 {
            if self.buffered() == 0 {
                self.fill().await?;
            }
            let n = (self.buffered() as u64).min(len);
            self.start += n as usize;
            len -= n;
        }
        Ok(())
    }

    /// Reads `len` bytes of data section into guest memory, `skip` bytes into `run`. If the
    /// memory cannot take them (unmapped meanwhile) the rest is skipped and `Ok(false)`
    /// returned; the connection stays in step either way.
    pub async fn data_into(
        &mut self,
        mem: &GuestMemory,
        run: &Run,
        skip: u64,
        len: u64,
    ) -> Result<bool> {
        let fd = self.stream.as_raw_fd();
        let mut done = 0u64;
        // What the buffer already holds is copied (at most one buffer's worth).
        let n = (self.buffered() as u64).min(len);
        if n > 0 {
            let ok = run
                .scatter(
                    &mem.snapshot(),
                    skip,
                    &self.buf[self.start..self.start + n as usize],
                )
                .is_ok();
            self.start += n as usize;
            done = n;
            if !ok {
                self.discard(len - done).await?;
                return Ok(false);
            }
        }
        if self.tls.is_some() {
            // Decrypted into the receive buffer, then copied into the guest pages.
            while done < len {
                self.fill().await?;
                let n = (self.buffered() as u64).min(len - done);
                let ok = run
                    .scatter(
                        &mem.snapshot(),
                        skip + done,
                        &self.buf[self.start..self.start + n as usize],
                    )
                    .is_ok();
                self.start += n as usize;
                done += n;
                if !ok {
                    self.discard(len - done).await?;
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        while done < len {
            let (ranges, _) = run
                .slice(skip + done, (len - done).min(CHUNK), MAX_IOV)
                .map_err(lost)?;
            self.stream.readable().await.map_err(lost)?;
            let r = mem.snapshot().with_iovecs(&ranges, true, |iov| {
                self.stream.try_io(Interest::READABLE, || {
                    // SAFETY: the iovecs point into writable guest memory of live mappings
                    // whose unmapping waits for the access lock held around this closure;
                    // readv writes at most their lengths.
                    let rc = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as i32) };
                    if rc < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(rc as usize)
                    }
                })
            });
            match r {
                Ok(Ok(0)) => return Err(lost("backend closed the connection")),
                Ok(Ok(k)) => {
                    self.progress.stamp();
                    done += k as u64;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => return Err(lost(e)),
                Err(_) => {
                    self.discard(len - done).await?;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9: every waiting guest call fails within 5 s of a partition. The watchdog's
    /// timeout plus the kernel module's status check (every 0.5 s) must fit, and so must the
    /// socket's own bound (keepalive + `TCP_USER_TIMEOUT`), which catches a partition even
    /// when nothing waits.
    #[test]
    fn default_settings_notice_a_partition_within_five_seconds() {
        let t = Transport {
            liveness: Some(Liveness::default()),
            ..Transport::default()
        };
        let l = t.liveness.unwrap();
        assert!(l.probe_after < l.timeout);
        assert!(l.timeout + Duration::from_millis(500) < Duration::from_secs(5));
        assert!(t.net.detection_bound() <= Duration::from_secs(5));
    }

    #[test]
    fn progress_measures_silence_since_the_last_bytes() {
        let p = Progress::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.silence() >= Duration::from_millis(30));
        p.stamp();
        assert!(p.silence() < Duration::from_millis(30));
    }
}
