//! One client connection: the handshake, the dispatcher loop and teardown.
//!
//! A session has one dispatcher thread that reads frames and hands each request to the
//! session's [`Engine`], which never blocks it: work runs on the executor's pool and
//! completes later, answering through the session's [`writer`] in whatever order it finishes
//! (replies carry their request id). So a `StreamSynchronize` waiting for a one-second kernel
//! does not hold up a `MemAlloc` sent after it. See `docs/backend.md` for the dispatcher's
//! rules, `docs/wire-protocol.md` for what clients see.
//!
//! Bulk data moves without staging where the engine allows it: a host-to-device copy is read
//! from the socket straight into device memory when it can run at once, a device-to-host copy
//! is written to the socket straight from device memory.
//!
//! However the session ends (client gone, protocol violation, shutdown, a bug), its work is
//! cancelled, its engine dropped (freeing everything it held) and its connection closed.

mod dispatch;
pub mod metrics;
pub mod writer;

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameError, FrameHeader, FrameKind};
use netgpu_proto::wire::ops::{self, Reply, Request, SessionLimits};
use netgpu_proto::wire::{
    BUSY_VERSION, HEADER_LEN, MAX_CTRL_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::executor::{Completion, Console, Engine, ExecResult, Mode, Output, SessionSetup, Sink};
use crate::server::Shared;
use crate::tenant::{TenantConfig, TenantSession};
use crate::transport::{Control, Peer, Transport};
use metrics::SessionMetrics;
use writer::{Out, Writer};

const IO_BUFFER: usize = 256 * 1024;
/// How long a session that is ending waits for its running work to stop.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("connection closed by the client")]
    Closed,
    #[error("socket error")]
    Io(#[from] io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("bad frame")]
    Frame(#[from] FrameError),
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("backend shutting down")]
    Shutdown,
}

/// Routes completions to the writer; keeps the first failure of `NO_REPLY` work until a
/// synchronising request takes it.
struct Replies<W: io::Write> {
    writer: Arc<Writer<W>>,
    deferred: Mutex<Option<CuResult>>,
    /// Set after the handshake when the backend serves metrics.
    metrics: OnceLock<Arc<SessionMetrics>>,
}

impl<W: io::Write + Send> Replies<W> {
    fn take_deferred(&self) -> Option<CuResult> {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Answers request `id` with a reply body (immediate results).
    fn answer(
        &self,
        id: u64,
        mode: Mode,
        r: ExecResult<(Reply, Option<crate::executor::HostBuf>)>,
    ) {
        if let Some(m) = self.metrics.get() {
            m.finish(id, r.as_ref().map(|_| ()).map_err(|e| *e));
        }
        let r = match (mode, r) {
            (Mode::NoReply, Err(e)) => return self.keep_deferred(e),
            (Mode::NoReply, Ok(_)) => return,
            (Mode::SyncReply, r) => match self.take_deferred() {
                Some(e) => Err(e),
                None => r,
            },
            (Mode::Reply, r) => r,
        };
        let out = match r {
            Ok((body, data)) => Out::Reply {
                id,
                status: CuResult::SUCCESS,
                body: Some(body),
                data,
            },
            Err(status) => Out::Reply {
                id,
                status,
                body: None,
                data: None,
            },
        };
        self.writer.send(out);
    }
}

impl<W: io::Write + Send> Replies<W> {
    /// Answers request `id` with a result without a body (`Reply::Done`): stream-ordered
    /// work sent with `NO_REPLY` that succeeded costs nothing here (unless metrics count it).
    fn answer_done(&self, id: u64, mode: Mode, r: ExecResult<()>) {
        if mode == Mode::NoReply && self.metrics.get().is_none() {
            if let Err(e) = r {
                self.keep_deferred(e);
            }
            return;
        }
        self.answer(id, mode, r.map(|()| (Reply::Done, None)));
    }
}

impl<W: io::Write + Send> Sink for Replies<W> {
    fn complete(&self, id: u64, mode: Mode, result: ExecResult<Output>) {
        self.answer(
            id,
            mode,
            result.map(|o| match o {
                Output::Done => (Reply::Done, None),
                Output::Handle(h) => (Reply::Handle(h), None),
                Output::DevPtr(p) => (Reply::DevPtr(p), None),
                Output::Function(f) => (Reply::Function(f), None),
                Output::Data(d) => (Reply::Done, Some(d)),
            }),
        );
    }

    fn deferred(&self, error: CuResult) {
        if let Some(m) = self.metrics.get() {
            m.error(metrics::ASYNC_OP, error);
        }
        self.keep_deferred(error);
    }
}

impl<W: io::Write + Send> Replies<W> {
    fn keep_deferred(&self, error: CuResult) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
    }
}

/// A request frame's header and its decoded control section (or why that failed).
type Frame = (FrameHeader, Result<Request, ops::CodecError>);

/// Reads frames (header and control section; the data section is left to the caller).
struct FrameReader<R: Read> {
    r: BufReader<R>,
    max_data: u32,
    ctrl: Vec<u8>,
    /// Data sections `with_data` could not borrow from the read buffer.
    scratch: Vec<u8>,
}

/// Most bytes of `FrameReader::scratch` kept between frames.
const SCRATCH_KEPT: usize = 64 << 10;

impl<R: Read> FrameReader<R> {
    /// The next request frame and its control section decoded (the data section is left
    /// unread); `Ok(None)` on a clean end of stream. A frame whose header and control
    /// section are already buffered (every frame of a burst but the one that straddles a
    /// read) is decoded in place: no reads, no copy of its control section.
    fn next_request(&mut self) -> Result<Option<Frame>, SessionError> {
        let buf = self.r.buffer();
        if let Some(hdr) = buf.first_chunk::<HEADER_LEN>() {
            let h = FrameHeader::decode(hdr, MAX_CTRL_LEN, self.max_data)?;
            if h.kind != FrameKind::Request {
                return Err(not_a_request(h.kind));
            }
            // `ctrl_len` is at most MAX_CTRL_LEN (checked by `decode`).
            let end = HEADER_LEN + h.ctrl_len as usize;
            if let Some(ctrl) = buf.get(HEADER_LEN..end) {
                let req = ops::decode_request(ctrl);
                self.r.consume(end);
                return Ok(Some((h, req)));
            }
        }
        let Some(h) = self.next()? else {
            return Ok(None);
        };
        Ok(Some((h, ops::decode_request(&self.ctrl))))
    }

    /// The next request frame, its control section in `ctrl`; `Ok(None)` on a clean end of
    /// stream.
    fn next(&mut self) -> Result<Option<FrameHeader>, SessionError> {
        let mut hdr = [0u8; HEADER_LEN];
        match self.r.read_exact(&mut hdr[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.r.read_exact(&mut hdr[1..])?;
        let h = FrameHeader::decode(&hdr, MAX_CTRL_LEN, self.max_data)?;
        if h.kind != FrameKind::Request {
            return Err(not_a_request(h.kind));
        }
        self.ctrl.resize(h.ctrl_len as usize, 0);
        self.r.read_exact(&mut self.ctrl)?;
        Ok(Some(h))
    }

    fn read_into(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(buf)
    }

    /// Passes the next `len` bytes (a small data section, such as a launch's parameters) to
    /// `f` without allocating: borrowed from the read buffer when it holds them all, else
    /// read into the reader's `scratch` buffer first.
    fn with_data<T>(&mut self, len: u32, f: impl FnOnce(&[u8]) -> T) -> io::Result<T> {
        let n = len as usize;
        if let Some(data) = self.r.buffer().get(..n) {
            let t = f(data);
            self.r.consume(n);
            return Ok(t);
        }
        self.scratch.resize(n, 0);
        self.r.read_exact(&mut self.scratch)?;
        let t = f(&self.scratch);
        if self.scratch.capacity() > SCRATCH_KEPT {
            self.scratch = Vec::new();
        }
        Ok(t)
    }

    fn read_vec(&mut self, len: u32) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        self.r.read_exact(&mut v)?;
        Ok(v)
    }

    fn skip(&mut self, len: u32) -> io::Result<()> {
        let n = io::copy(&mut (&mut self.r).take(u64::from(len)), &mut io::sink())?;
        if n != u64::from(len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn has_buffered_input(&self) -> bool {
        !self.r.buffer().is_empty()
    }
}

fn not_a_request(kind: FrameKind) -> SessionError {
    SessionError::Protocol(format!("client sent a {kind:?} frame"))
}

/// Serves one connection until it ends. Never panics on client input. The connection is
/// closed by the caller's [`crate::server::Slot`] (after the slot is free again).
pub fn run<T: Transport>(transport: T, shared: Arc<Shared>, session_id: u64) {
    let control = match transport.control() {
        Ok(c) => c,
        Err(e) => {
            warn!(session = session_id, error = %e, "cannot set up connection");
            return;
        }
    };
    let peer = control.peer();
    let mut opened = false;
    let result = serve(
        transport,
        control.clone(),
        &shared,
        session_id,
        &peer,
        &mut opened,
    );
    // Every "session open" line gets exactly one "session closed" line (operators and the
    // lifecycle tests count them); a connection that never got that far is a refusal.
    match (opened, result) {
        (true, Ok(()) | Err(SessionError::Closed)) => {
            info!(session = session_id, %peer, "session closed")
        }
        (true, Err(SessionError::Shutdown)) => {
            info!(session = session_id, %peer, "session closed by shutdown")
        }
        (true, Err(e)) => {
            warn!(session = session_id, %peer, error = %e, "session closed with an error")
        }
        (false, Ok(()) | Err(SessionError::Closed | SessionError::Shutdown)) => {
            info!(session = session_id, %peer, "connection ended before the handshake")
        }
        (false, Err(e)) => warn!(session = session_id, %peer, error = %e, "handshake failed"),
    }
    // The caller's session slot closes the connection once the slot is free again.
}

fn serve<T: Transport>(
    transport: T,
    control: Arc<dyn Control>,
    shared: &Shared,
    session_id: u64,
    peer: &str,
    opened: &mut bool,
) -> Result<(), SessionError> {
    control.set_read_timeout(Some(Duration::from_millis(
        shared.config.handshake_timeout_ms,
    )))?;
    let (r, w, peer_id) = transport.split()?;
    if let Some(chain) = &peer_id.chain {
        // So that a CRL that revokes it later ends this session (`Shared::end_revoked`).
        shared.record_chain(session_id, chain.clone());
    }
    let console = Arc::new(Console::new());
    let writer = Arc::new(Writer::new(w, console.clone(), control.clone()));
    let mut frames = FrameReader {
        r: BufReader::with_capacity(IO_BUFFER, r),
        max_data: shared.max_data,
        ctrl: Vec::new(),
        scratch: Vec::new(),
    };
    let replies = Arc::new(Replies {
        writer: writer.clone(),
        deferred: Mutex::new(None),
        metrics: OnceLock::new(),
    });
    let (mut engine, limits, _tenant, version) = match handshake(
        &mut frames,
        &writer,
        &replies,
        &console,
        shared,
        session_id,
        peer,
        &peer_id,
    ) {
        Ok(e) => e,
        Err(e) => {
            let (status, why) = match &e {
                SessionError::Refused(why) => (CuResult::NOT_PERMITTED, why.clone()),
                SessionError::Shutdown => {
                    (CuResult::DEVICE_UNAVAILABLE, "backend shutting down".into())
                }
                other => (CuResult::INVALID_VALUE, other.to_string()),
            };
            let _ = control.set_write_timeout(Some(Duration::from_secs(1)));
            writer.send(Out::Goodbye { status, why });
            writer.settle(Duration::from_secs(1));
            return Err(e);
        }
    };
    *opened = true;
    control.set_read_timeout(None)?;
    let mut d = dispatch::Dispatcher {
        frames: &mut frames,
        engine: engine.as_mut(),
        replies: replies.clone(),
        console: console.clone(),
        shared,
        limits,
        control: control.clone(),
        busy_frames: version >= BUSY_VERSION,
    };
    let result = d.run();
    let goodbye = match &result {
        Err(SessionError::Frame(e)) => Some((CuResult::INVALID_VALUE, e.to_string())),
        Err(SessionError::Protocol(e)) => Some((CuResult::INVALID_VALUE, e.clone())),
        Err(SessionError::Shutdown) => {
            Some((CuResult::DEVICE_UNAVAILABLE, "backend shutting down".into()))
        }
        _ => None,
    };
    // Stop the session's work first (running kernels are cancelled), then say goodbye: no
    // reply can follow it.
    engine.shutdown(TEARDOWN_GRACE);
    // A client that stopped reading cannot hold the session open.
    let _ = control.set_write_timeout(Some(Duration::from_secs(1)));
    if let Some((status, why)) = goodbye {
        writer.send(Out::Goodbye { status, why });
        writer.settle(Duration::from_secs(1));
    }
    // Dropping the engine frees everything the session held, however it ended.
    drop(engine);
    result
}

/// Session limits: the stricter of the backend's and the client's.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub quota: u64,
    pub kernel_time_limit: Option<Duration>,
}

fn limits(shared: &Shared, tenant: &TenantConfig, asked: &SessionLimits) -> Limits {
    // The tenant's limits stand in for the backend's; the client can only ask for less.
    let own = tenant
        .session_memory_quota
        .unwrap_or(shared.config.session_memory_quota)
        .as_u64();
    let quota = match asked.memory_quota {
        Some(q) => q.min(own),
        None => own,
    };
    let stricter = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let ms = stricter(
        stricter(
            shared.config.kernel_time_limit_ms,
            tenant.kernel_time_limit_ms,
        ),
        asked.kernel_time_limit_ms,
    );
    Limits {
        quota,
        // A limit of 0 would fail every kernel: the smallest limit is 1 ms.
        kernel_time_limit: ms.map(|m| Duration::from_millis(m.max(1))),
    }
}

// The session's pieces, each needed once; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
fn handshake<R: Read, W: io::Write + Send + 'static>(
    frames: &mut FrameReader<R>,
    writer: &Writer<W>,
    replies: &Arc<Replies<W>>,
    console: &Arc<Console>,
    shared: &Shared,
    session_id: u64,
    peer: &str,
    peer_id: &Peer,
) -> Result<(Box<dyn Engine>, Limits, TenantSession, u16), SessionError> {
    let h = frames.next()?.ok_or(SessionError::Closed)?;
    if h.data_len != 0 || h.no_reply() {
        return Err(SessionError::Protocol("malformed hello frame".into()));
    }
    let req: Request =
        ops::decode(&frames.ctrl).map_err(|e| SessionError::Protocol(e.to_string()))?;
    let Request::Hello {
        version_min,
        version_max,
        token,
        client,
        limits: asked,
    } = req
    else {
        return Err(SessionError::Protocol(
            "the first request must be Hello".into(),
        ));
    };
    let cert_tenant = peer_id.identity.as_ref().and_then(|i| i.tenant.as_ref());
    // A pool vGPU placed here: its token names its tenant (which a certificate must match).
    let grant = crate::pool::grant_for(&token);
    let auth = match &grant {
        Some(g) => shared
            .tenants
            .authenticate_grant(cert_tenant, &g.tenant, &g.vgpu),
        None => shared.tenants.authenticate(cert_tenant, &token),
    };
    let tenant = auth
        .and_then(|t| t.admit())
        .map_err(|e| {
            warn!(session = session_id, %peer, subject = ?peer_id.identity.as_ref().map(|i| &i.subject), reason = %e, "session refused");
            SessionError::Refused(e.to_string())
        })?;
    let version = PROTOCOL_VERSION.min(version_max);
    if version < MIN_PROTOCOL_VERSION.max(version_min) {
        return Err(SessionError::Refused(format!(
            "no common protocol version: client speaks {version_min}..={version_max}, backend {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
        )));
    }
    if shared.shutting_down.load(Ordering::Acquire) {
        return Err(SessionError::Shutdown);
    }
    let mut limits = limits(shared, &tenant.tenant().config, &asked);
    // A pool vGPU's token: never more than the vGPU's recorded quota.
    if let Some(g) = &grant {
        limits.quota = limits.quota.min(g.memory);
    }
    let sink: Arc<dyn Sink> = replies.clone();
    let engine = shared
        .executor
        .open(SessionSetup {
            quota: limits.quota,
            kernel_time_limit: limits.kernel_time_limit,
            tenant_memory: tenant.tenant().memory.clone(),
            sink,
            console: console.clone(),
        })
        .map_err(|e| SessionError::Refused(format!("cannot open a device session: {e}")))?;
    if let Some(m) = SessionMetrics::open(metrics::Identity {
        session_id,
        vgpu: grant.as_ref().map_or("", |g| g.vgpu.as_str()),
        // The grant's tenant even when served under `default`'s limits.
        tenant: grant
            .as_ref()
            .map_or(tenant.tenant().name.as_str(), |g| g.tenant.as_str()),
        quota: limits.quota,
    }) {
        let _ = replies.metrics.set(m);
    }
    writer.send(Out::Reply {
        id: h.request_id,
        status: CuResult::SUCCESS,
        body: Some(Reply::Welcome {
            version,
            session_id,
            max_data_len: shared.max_data,
            server: format!("netgpu-backend {}", env!("CARGO_PKG_VERSION")),
        }),
        data: None,
    });
    info!(session = session_id, %peer, %client, tenant = %tenant.tenant().name, tls = peer_id.tls, version, quota = limits.quota, time_limit_ms = limits.kernel_time_limit.map(|d| d.as_millis() as u64), "session open");
    Ok((engine, limits, tenant, version))
}

/// A completion for request `id` answered through `replies`.
fn completion<W: io::Write + Send + 'static>(
    replies: &Arc<Replies<W>>,
    id: u64,
    mode: Mode,
) -> Completion {
    let sink: Arc<dyn Sink> = replies.clone();
    Completion::new(sink, id, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    use netgpu_proto::wire::client::encode_request;
    use netgpu_proto::wire::frame::FLAG_NO_REPLY;

    /// Hands out its bytes `chunk` at a time (a socket's short reads).
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn frames_of(reqs: &[(Request, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (i, (r, data)) in reqs.iter().enumerate() {
            encode_request(i as u64 + 1, FLAG_NO_REPLY, r, data.len(), &mut buf).unwrap();
            out.extend_from_slice(&buf);
            out.extend_from_slice(data);
        }
        out
    }

    fn reader(bytes: Vec<u8>, chunk: usize, capacity: usize) -> FrameReader<Trickle> {
        FrameReader {
            r: BufReader::with_capacity(
                capacity,
                Trickle {
                    bytes,
                    at: 0,
                    chunk,
                },
            ),
            max_data: 1 << 20,
            ctrl: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Every way the bytes can arrive and be buffered: frames wholly in the buffer (decoded
    /// in place), straddling reads, and never fully buffered (read piece by piece).
    const SHAPES: [(usize, usize); 5] = [
        (1 << 16, 1 << 16),
        (1, 1 << 16),
        (7, 64),
        (1 << 16, 16),
        (5, 33),
    ];

    #[test]
    fn frames_decode_the_same_however_their_bytes_arrive() {
        let reqs = vec![
            (
                Request::LaunchKernel {
                    func: 0x1234_5678_9abc,
                    grid: [3, 2, 1],
                    block: [256, 1, 1],
                    shared_mem_bytes: 1024,
                    stream: 7,
                    flags: 0,
                },
                vec![1, 2, 3, 4, 5, 6, 7, 8],
            ),
            (Request::Null, vec![]),
            (
                Request::LaunchKernel {
                    func: 1,
                    grid: [1, 1, 1],
                    block: [1, 1, 1],
                    shared_mem_bytes: 0,
                    stream: 0,
                    flags: 0,
                },
                (0..200u8).collect(),
            ),
            (
                Request::MemcpyHtoD {
                    ctx: 9,
                    dst: 0x1000,
                    stream: 0,
                },
                (0..100u8).collect(),
            ),
            (
                Request::ModuleGetFunction {
                    module: 5,
                    name: "a_kernel_with_a_long_name".into(),
                },
                vec![],
            ),
        ];
        let bytes = frames_of(&reqs);
        for (chunk, capacity) in SHAPES {
            let mut f = reader(bytes.clone(), chunk, capacity);
            for (i, (want, data)) in reqs.iter().enumerate() {
                let (h, got) = f.next_request().unwrap().unwrap();
                assert_eq!(
                    h.request_id,
                    i as u64 + 1,
                    "chunk {chunk}, buffer {capacity}"
                );
                assert!(h.no_reply());
                assert_eq!(h.data_len as usize, data.len());
                assert_eq!(&got.unwrap(), want, "chunk {chunk}, buffer {capacity}");
                if i % 2 == 0 {
                    // Borrowed from the read buffer or read into the scratch buffer.
                    let seen = f.with_data(h.data_len, |d| d.to_vec()).unwrap();
                    assert_eq!(&seen, data, "chunk {chunk}, buffer {capacity}");
                } else {
                    assert_eq!(&f.read_vec(h.data_len).unwrap(), data);
                }
            }
            assert!(f.next_request().unwrap().is_none(), "a clean end of stream");
        }
    }

    #[test]
    fn bad_frames_are_refused_however_their_bytes_arrive() {
        let good = frames_of(&[(Request::Null, vec![])]);
        // An undecodable control section is the request's error, not the session's.
        let mut garbage = good.clone();
        let last = garbage.len() - 1;
        garbage[last] = 0xff;
        // A reply frame from the client, a bad magic, a truncated frame.
        let mut reply = good.clone();
        reply[2] = FrameKind::Reply as u8;
        let mut magic = good.clone();
        magic[0] ^= 0xff;
        let truncated = good[..good.len() - 1].to_vec();
        for (chunk, capacity) in SHAPES {
            let mut f = reader(garbage.clone(), chunk, capacity);
            let (_, req) = f.next_request().unwrap().unwrap();
            assert!(req.is_err(), "chunk {chunk}, buffer {capacity}");
            let e = reader(reply.clone(), chunk, capacity).next_request();
            assert!(matches!(e, Err(SessionError::Protocol(_))), "{e:?}");
            let e = reader(magic.clone(), chunk, capacity).next_request();
            assert!(matches!(e, Err(SessionError::Frame(_))), "{e:?}");
            let e = reader(truncated.clone(), chunk, capacity).next_request();
            assert!(matches!(e, Err(SessionError::Io(_))), "{e:?}");
        }
    }
}
