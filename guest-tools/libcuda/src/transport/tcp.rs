//! The wire protocol over a blocking TCP socket (no async runtime inside a user process),
//! framed and handshaken by `netgpu_proto::wire::client`, the code the async client uses too.
//!
//! Many threads may call at once. A call registers itself under its request id, writes its
//! frame (after any posted ones) under the writer lock, and waits for its reply without
//! holding any lock another call needs; one reader thread matches replies to ids and reads
//! each reply's data straight into the waiting caller's buffer. A device-to-host copy into
//! pinned memory ([`Transport::post_read`]) returns at once: its bytes land when its reply
//! arrives, and every synchronising call waits for such copies first. A reply flagged
//! `FLAG_CONSOLE_PENDING` makes the next call read the kernels' console output and write it
//! to the program's stdout. A lost connection makes every call, waiting or later, fail with
//! `CUDA_ERROR_DEVICE_UNAVAILABLE`; nothing ever waits on a dead peer.
//!
//! The byte stream is TLS ([`netgpu_tls`], split into a reading half for the reader thread and
//! a writing half for callers) or, to a loopback backend only, plain TCP; either way the socket
//! gets netgpu's keepalive and user timeout, so a partition fails waiting calls within seconds.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::client::{self, FramingError};
use netgpu_proto::wire::frame::{FrameKind, FLAG_NO_REPLY};
use netgpu_proto::wire::ops::{DeviceInfo, Reply, Request};
use netgpu_proto::wire::HEADER_LEN;

use netgpu_tls::{ClientTls, NetTuning};

use super::Transport;

/// The connection's halves: plain TCP or TLS.
type Rd = Box<dyn Read + Send>;
type Wr = Box<dyn Write + Send>;
/// How long connecting, the TLS handshake and the session handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const LOST: CuResult = CuResult::DEVICE_UNAVAILABLE;
/// Largest reply data accepted (the client's own limit).
const MAX_REPLY_DATA: u32 = 1 << 30;
/// Largest console chunk read at once.
const CONSOLE_CHUNK: u32 = 64 << 10;

/// Where a reply's data goes: the caller's buffer, valid until the slot completes (a
/// synchronous caller waits for it; a posted read's buffer is the program's pinned memory,
/// which it may not touch before synchronising).
#[derive(Clone, Copy)]
struct Dst {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the buffer is written only by the reader thread, while its owner waits (or, for a
// posted read, until the owner synchronises), and never after the slot completes.
unsafe impl Send for Dst {}

enum State {
    Waiting,
    /// The result, and how many data bytes arrived.
    Done(Result<Reply, CuResult>, usize),
}

struct Slot {
    dst: Dst,
    /// The reply's data must fill `dst` (all but `ConsoleRead`, whose reply may be shorter).
    exact: bool,
    posted: bool,
    state: State,
}

#[derive(Default)]
struct Pending {
    slots: HashMap<u64, Slot>,
    /// Posted reads not yet complete.
    posted: usize,
    /// First failure of a posted read, for the next synchronising call.
    deferred: Option<CuResult>,
    dead: Option<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    done: Condvar,
    console: AtomicBool,
}

struct Writer {
    io: BufWriter<Wr>,
    next_id: u64,
    buf: Vec<u8>,
}

pub struct TcpTransport {
    writer: Mutex<Writer>,
    shared: Arc<Shared>,
    max_data: u32,
    addr: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TcpTransport {
    /// Connects to the backend at `addr`: with TLS when `tls` is given, else plain TCP, which
    /// only a loopback address gets.
    pub fn connect(
        addr: &str,
        token: &str,
        tls: Option<&ClientTls>,
        net: &NetTuning,
    ) -> Result<TcpTransport, CuResult> {
        let fail = |why: String| {
            crate::log(&format!("cannot connect to backend {addr}: {why}"));
            CuResult::NO_DEVICE
        };
        let targets: Vec<SocketAddr> = match tls {
            Some(_) => addr
                .to_socket_addrs()
                .map_err(|e| fail(e.to_string()))?
                .collect(),
            None => netgpu_tls::policy::resolve_plain(addr).map_err(|e| fail(e.to_string()))?,
        };
        let mut last = String::from("no address");
        let mut sock = None;
        for t in &targets {
            match TcpStream::connect_timeout(t, HANDSHAKE_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let s = sock.ok_or_else(|| fail(last))?;
        net.apply(&s)
            .map_err(|e| fail(format!("socket options: {e}")))?;
        // A clone of the socket for the handshake's read timeout (a socket-wide setting).
        let ctl = s.try_clone().map_err(|e| fail(e.to_string()))?;
        let (r, w): (Rd, Wr) = match tls {
            None => {
                let w = s.try_clone().map_err(|e| fail(e.to_string()))?;
                (Box::new(s), Box::new(w))
            }
            Some(tls) => {
                let stream = netgpu_tls::blocking::connect(s, tls, addr, HANDSHAKE_TIMEOUT)
                    .map_err(|e| fail(e.explanation))?;
                let (r, w) =
                    netgpu_tls::split::split_stream(stream).map_err(|e| fail(e.to_string()))?;
                (Box::new(r), Box::new(w))
            }
        };
        let mut reader = BufReader::with_capacity(256 << 10, r);
        let mut writer = Writer {
            io: BufWriter::with_capacity(256 << 10, w),
            next_id: 1,
            buf: Vec::new(),
        };
        let name = format!(
            "libcuda (netgpu {}) pid {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        let refused = |why: String| {
            crate::log(&format!("backend {addr} refused the session: {why}"));
            CuResult::NO_DEVICE
        };
        // With TLS 1.3 a refused client certificate shows up at the first read: explained.
        let explain = |e: std::io::Error| match tls {
            Some(t) => t.explain(&e, addr),
            None => e.to_string(),
        };
        let hello = client::hello(token, &name, Default::default());
        writer
            .send(&hello, &[], 0)
            .map_err(|_| refused("connection lost during the handshake".into()))?;
        writer.io.flush().map_err(|e| refused(explain(e)))?;
        let _ = ctl.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let mut hdr = [0u8; HEADER_LEN];
        reader
            .read_exact(&mut hdr)
            .map_err(|e| refused(explain(e)))?;
        let h = client::decode_header(&hdr, MAX_REPLY_DATA).map_err(|e| refused(e.to_string()))?;
        let mut ctrl = vec![0u8; h.ctrl_len as usize];
        reader
            .read_exact(&mut ctrl)
            .map_err(|e| refused(explain(e)))?;
        let reply = client::decode_reply(&ctrl).map_err(|e| refused(e.to_string()))?;
        let session = client::welcome(&h, reply).map_err(|e| refused(e.to_string()))?;
        let _ = ctl.set_read_timeout(None);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            done: Condvar::new(),
            console: AtomicBool::new(false),
        });
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("netgpu-reader".into())
            .spawn(move || reader_loop(reader, &s2))
            .map_err(|_| CuResult::OPERATING_SYSTEM)?;
        Ok(TcpTransport {
            writer: Mutex::new(writer),
            shared,
            max_data: session.max_data_len,
            addr: addr.to_string(),
        })
    }

    /// Registers a slot for the next request id and sends the request; returns the id.
    fn send(&self, req: &Request, input: &[u8], dst: Dst, posted: bool) -> Result<u64, CuResult> {
        let mut w = lock(&self.writer);
        let id = w.next_id;
        {
            let mut p = lock(&self.shared.pending);
            if p.dead.is_some() {
                return Err(LOST);
            }
            p.slots.insert(
                id,
                Slot {
                    dst,
                    exact: !matches!(req, Request::ConsoleRead { .. }),
                    posted,
                    state: State::Waiting,
                },
            );
            if posted {
                p.posted += 1;
            }
        }
        let sent = w
            .send(req, input, 0)
            .and_then(|_| w.io.flush().map_err(|_| LOST));
        drop(w);
        if let Err(e) = sent {
            let mut p = lock(&self.shared.pending);
            if p.slots.remove(&id).is_some() && posted {
                p.posted -= 1;
            }
            if e == LOST {
                mark_dead(&mut p, "cannot write to the backend".into());
                self.shared.done.notify_all();
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Waits for the reply to `id`: its result and the number of data bytes that arrived.
    fn wait(&self, id: u64) -> (Result<Reply, CuResult>, usize) {
        let mut p = lock(&self.shared.pending);
        loop {
            if matches!(
                p.slots.get(&id),
                Some(Slot {
                    state: State::Done(..),
                    ..
                })
            ) {
                if let Some(Slot {
                    state: State::Done(r, n),
                    ..
                }) = p.slots.remove(&id)
                {
                    return (r, n);
                }
            }
            if !p.slots.contains_key(&id) {
                return (Err(LOST), 0);
            }
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits for every posted read; returns the first failure among them.
    fn wait_posted(&self) -> Result<(), CuResult> {
        let mut p = lock(&self.shared.pending);
        while p.posted > 0 && p.dead.is_none() {
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.dead.is_some() {
            return Err(LOST);
        }
        p.deferred.take().map_or(Ok(()), Err)
    }

    /// Writes pending kernel console output to stdout.
    fn drain_console(&self) {
        while self.shared.console.swap(false, Ordering::AcqRel) {
            let mut buf = vec![0u8; CONSOLE_CHUNK as usize];
            let req = Request::ConsoleRead { max: CONSOLE_CHUNK };
            let dst = Dst {
                ptr: buf.as_mut_ptr(),
                len: buf.len(),
            };
            let Ok(id) = self.send(&req, &[], dst, false) else {
                return;
            };
            let n = match self.wait(id) {
                (Ok(_), n) => n,
                _ => return,
            };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf[..n.min(buf.len())]);
            let _ = out.flush();
        }
    }
}

impl Writer {
    fn send(&mut self, req: &Request, data: &[u8], flags: u8) -> Result<(), CuResult> {
        let id = self.next_id;
        self.next_id += 1;
        client::encode_request(id, flags, req, data.len(), &mut self.buf)
            .map_err(|_| CuResult::INVALID_VALUE)?;
        self.io
            .write_all(&self.buf)
            .and_then(|_| self.io.write_all(data))
            .map_err(|_| LOST)
    }
}

fn mark_dead(p: &mut Pending, why: String) {
    if p.dead.is_none() {
        crate::log(&format!("backend connection lost: {why}"));
        p.dead = Some(why);
    }
    for s in p.slots.values_mut() {
        if matches!(s.state, State::Waiting) {
            s.state = State::Done(Err(LOST), 0);
        }
    }
    p.slots.retain(|_, s| !s.posted);
    p.posted = 0;
}

fn read_head(
    r: &mut BufReader<Rd>,
) -> Result<(netgpu_proto::wire::FrameHeader, Option<Reply>), FramingError> {
    let mut hdr = [0u8; HEADER_LEN];
    r.read_exact(&mut hdr)
        .map_err(|_| FramingError::TooLarge(0))?;
    let h = client::decode_header(&hdr, MAX_REPLY_DATA)?;
    let mut ctrl = vec![0u8; h.ctrl_len as usize];
    r.read_exact(&mut ctrl)
        .map_err(|_| FramingError::TooLarge(0))?;
    Ok((h, client::decode_reply(&ctrl)?))
}

fn reader_loop(mut r: BufReader<Rd>, shared: &Shared) {
    let why = loop {
        let (h, reply) = match read_head(&mut r) {
            Ok(x) => x,
            Err(_) => {
                break "the backend closed the connection or sent a malformed frame".to_string()
            }
        };
        if h.kind == FrameKind::Busy {
            // The backend holds this session's requests back (its queued work is at its
            // bound); no sections follow.
            continue;
        }
        if h.kind == FrameKind::Goodbye {
            break match reply {
                Some(Reply::Error(why)) => format!("backend closed the session: {why}"),
                _ => format!("backend closed the session ({})", h.status),
            };
        }
        if h.console_pending() {
            shared.console.store(true, Ordering::Release);
        }
        let (dst, exact) = {
            let p = lock(&shared.pending);
            match p.slots.get(&h.request_id) {
                Some(s) if matches!(s.state, State::Waiting) => (s.dst, s.exact),
                _ => break format!("backend answered unknown request {}", h.request_id),
            }
        };
        let n = h.data_len as usize;
        if n > dst.len {
            break format!("reply of {n} bytes for a {}-byte buffer", dst.len);
        }
        if n > 0 {
            // SAFETY: `dst` is the waiting caller's buffer of `dst.len` bytes (see `Dst`).
            let out = unsafe { std::slice::from_raw_parts_mut(dst.ptr, n) };
            if r.read_exact(out).is_err() {
                break "connection lost in the middle of a reply".to_string();
            }
        }
        let result = if !h.status.is_success() {
            Err(h.status)
        } else if exact && n != dst.len {
            Err(CuResult::UNKNOWN)
        } else {
            Ok(reply.unwrap_or(Reply::Done))
        };
        let mut p = lock(&shared.pending);
        let posted = p.slots.get(&h.request_id).is_some_and(|s| s.posted);
        if posted {
            p.slots.remove(&h.request_id);
            p.posted -= 1;
            if let Err(e) = result {
                p.deferred.get_or_insert(e);
            }
        } else if let Some(s) = p.slots.get_mut(&h.request_id) {
            s.state = State::Done(result, n);
        }
        drop(p);
        shared.done.notify_all();
    };
    let mut p = lock(&shared.pending);
    mark_dead(&mut p, why);
    drop(p);
    shared.done.notify_all();
}

impl Transport for TcpTransport {
    fn call(&self, req: &Request, input: &[u8], output: &mut [u8]) -> Result<Reply, CuResult> {
        let dst = Dst {
            ptr: output.as_mut_ptr(),
            len: output.len(),
        };
        let id = self.send(req, input, dst, false)?;
        crate::stats::round_trip();
        let (r, _) = self.wait(id);
        if req.is_synchronising(false) {
            // Copies posted earlier land before a synchronising call returns.
            let posted = self.wait_posted();
            r.as_ref().map_err(|e| *e)?;
            posted?;
        }
        if self.shared.console.load(Ordering::Acquire)
            && !matches!(req, Request::ConsoleRead { .. })
        {
            self.drain_console();
        }
        r
    }

    fn post(&self, req: &Request, input: &[u8]) -> Result<(), CuResult> {
        if lock(&self.shared.pending).dead.is_some() {
            return Err(LOST);
        }
        let mut w = lock(&self.writer);
        crate::stats::posted();
        let r = w.send(req, input, FLAG_NO_REPLY);
        if r == Err(LOST) {
            drop(w);
            let mut p = lock(&self.shared.pending);
            mark_dead(&mut p, "cannot write to the backend".into());
            self.shared.done.notify_all();
        }
        r
    }

    unsafe fn post_read(&self, req: &Request, dst: *mut u8, len: usize) -> Result<(), CuResult> {
        crate::stats::posted();
        self.send(req, &[], Dst { ptr: dst, len }, true).map(|_| ())
    }

    fn flush(&self) -> Result<(), CuResult> {
        let r = lock(&self.writer).io.flush();
        if r.is_err() {
            let mut p = lock(&self.shared.pending);
            mark_dead(&mut p, "cannot write to the backend".into());
            self.shared.done.notify_all();
            return Err(LOST);
        }
        Ok(())
    }

    fn device_query(&self) -> Result<DeviceInfo, CuResult> {
        match self.call(&Request::DeviceQuery, &[], &mut [])? {
            Reply::Device(d) => Ok(d),
            _ => Err(CuResult::UNKNOWN),
        }
    }

    fn max_transfer(&self) -> usize {
        self.max_data as usize
    }

    fn describe(&self) -> String {
        format!("backend {} (tcp)", self.addr)
    }
}
