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

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use netgpu_proto::wire::client;
use netgpu_proto::wire::frame::FrameHeader;
use netgpu_proto::wire::ops::{self, Reply, Request, SessionLimits};
use netgpu_proto::wire::{HEADER_LEN, MAX_CTRL_LEN};
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
    #[error("connection to the backend lost: {0}")]
    Lost(String),
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
    pub timeout: Duration,
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
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        let mut tx = Sender {
            stream: Arc::clone(&stream),
            out: Vec::with_capacity(OUT_BUFFER),
            next_id: 1,
            sent: 0,
        };
        let mut rx = Receiver {
            stream,
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

/// The sending half: owned by the queue's worker, which writes frames in submission order.
pub struct Sender {
    stream: Arc<TcpStream>,
    /// Encoded frames not written yet; `sent` bytes of it already are.
    out: Vec<u8>,
    sent: usize,
    next_id: u64,
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
        while !self.out.is_empty() {
            self.stream.writable().await.map_err(lost)?;
            match self.stream.try_write(&self.out[self.sent..]) {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(n) => {
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(lost(e)),
            }
        }
        Ok(())
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
        while len > 0 {
            self.stream.writable().await.map_err(lost)?;
            let n = len.min(ZEROS.len() as u64) as usize;
            match self.stream.try_write(&ZEROS[..n]) {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(k) => len -= k as u64,
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
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Receiver {
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
        loop {
            self.stream.readable().await.map_err(lost)?;
            match self.stream.try_read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(lost("backend closed the connection")),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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
                Ok(Ok(k)) => done += k as u64,
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
