//! The connection: handshake, request writer, reply reader task, and the operations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::client::{self, HandshakeError};
use netgpu_proto::wire::frame::{FrameHeader, FrameKind, FLAG_NO_REPLY};
use netgpu_proto::wire::ops::{
    DevPtr, DeviceInfo, FunctionInfo, Handle, Reply, Request, SessionLimits,
};
use netgpu_proto::wire::{HEADER_LEN, MAX_CTRL_LEN};
use netgpu_tls::{ClientTls, NetTuning};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::debug;

use crate::error::{ClientError, Result};
use crate::liveness::{Liveness, Progress, Stamped};

const IO_BUFFER: usize = 256 * 1024;

/// The connection's byte stream, plain TCP or TLS, split for the reader task and the writer.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
/// Largest reply data the client accepts (its own limit, independent of the backend's).
const MAX_REPLY_DATA: u32 = 1 << 30;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Free text naming this client in the backend's logs.
    pub name: String,
    pub connect_timeout: Duration,
    /// Limits asked for in the handshake (the backend applies the stricter of these and its
    /// own).
    pub limits: SessionLimits,
    /// TLS to the backend; `None` is plain TCP, which is refused unless every address the
    /// backend's name resolves to is loopback (see `docs/security.md`).
    pub tls: Option<Arc<ClientTls>>,
    /// Keepalive and user timeout of the connection: how soon a partition fails the calls
    /// waiting on it.
    pub net: NetTuning,
    /// Fail waiting calls when the backend stops answering although the connection stays
    /// up (see [`Liveness`]; on by default); `None` leaves that to TCP alone.
    pub liveness: Option<Liveness>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: format!("netgpu-client {}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
            limits: SessionLimits::default(),
            tls: None,
            net: NetTuning::default(),
            // The backend answers a Null while other work of the session runs (its
            // dispatcher never blocks), so probing a silent connection is safe.
            liveness: Some(Liveness::default()),
        }
    }
}

struct Response {
    status: CuResult,
    reply: Option<Reply>,
    data: Vec<u8>,
}

/// A caller waiting for a reply, with the buffer the reply's data should land in (reused
/// across calls by callers that copy a lot, so large replies cost no fresh allocation).
struct Waiter {
    tx: oneshot::Sender<Response>,
    buf: Vec<u8>,
}

type Pending = Mutex<HashMap<u64, Waiter>>;

struct Writer {
    io: BufWriter<WriteHalf>,
    next_id: u64,
    ctrl: Vec<u8>,
}

struct Inner {
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Pending>,
    dead: Arc<Mutex<Option<String>>>,
    closed: Arc<AtomicBool>,
    max_data: u32,
    session_id: u64,
    reader: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.watchdog {
            w.abort();
        }
    }
}

/// One backend session. Clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects, authenticates with `token` and opens a session.
    pub async fn connect(addr: &str, token: &str) -> Result<Client> {
        Self::connect_with(addr, token, ClientOptions::default()).await
    }

    pub async fn connect_with(addr: &str, token: &str, opts: ClientOptions) -> Result<Client> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let (r, w) = open(addr, &opts).await?;
        let progress = Progress::new();
        let (r, w): (ReadHalf, WriteHalf) = (
            Box::new(Stamped::new(r, progress.clone())),
            Box::new(Stamped::new(w, progress.clone())),
        );
        let mut reader = BufReader::with_capacity(IO_BUFFER, r);
        let mut writer = Writer {
            io: BufWriter::with_capacity(IO_BUFFER, w),
            next_id: 1,
            ctrl: Vec::new(),
        };
        // With TLS 1.3 the backend checks this client's certificate after the client's side
        // of the handshake is done: a refusal shows up here, and is explained.
        let explain = |e: std::io::Error| match &opts.tls {
            Some(tls) => tls.explain(&e, addr),
            None => e.to_string(),
        };
        let hello = client::hello(token, &opts.name, opts.limits);
        write_frame(&mut writer, &hello, &[], 0)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        writer
            .io
            .flush()
            .await
            .map_err(|e| connect_err(explain(e)))?;
        let handshake = tokio::time::timeout(opts.connect_timeout, read_frame(&mut reader))
            .await
            .map_err(|_| connect_err("no answer to the handshake".into()))?
            .map_err(|e| connect_err(explain(e)))?;
        let (h, resp) = handshake;
        let session = client::welcome(&h, resp.reply).map_err(|e| match e {
            HandshakeError::Refused { status, reason } => ClientError::Refused { status, reason },
            HandshakeError::Unexpected(reason) => ClientError::Refused {
                status: h.status,
                reason,
            },
        })?;
        debug!(version = session.version, session_id = session.session_id, server = %session.server, "session open");
        let pending: Arc<Pending> = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(Mutex::new(None));
        let closed = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(reader_task(
            reader,
            pending.clone(),
            dead.clone(),
            closed.clone(),
        ));
        let inner = Arc::new_cyclic(|me: &std::sync::Weak<Inner>| Inner {
            writer: tokio::sync::Mutex::new(writer),
            pending,
            dead,
            closed,
            max_data: session.max_data_len,
            session_id: session.session_id,
            reader,
            watchdog: opts
                .liveness
                .map(|l| tokio::spawn(watchdog(me.clone(), progress, l))),
        });
        Ok(Client { inner })
    }

    /// The backend's id for this session (for logs).
    pub fn session_id(&self) -> u64 {
        self.inner.session_id
    }

    /// Largest data section the backend accepts in one frame.
    pub fn max_data(&self) -> u32 {
        self.inner.max_data
    }

    /// Whether the connection is known to be gone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn dead_error(&self) -> ClientError {
        let why = self
            .inner
            .dead
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or_else(|| "connection closed".into());
        ClientError::Disconnected(why)
    }

    /// Sends one request. With `want_reply` the returned receiver yields its reply.
    async fn send(
        &self,
        req: &Request,
        data: &[u8],
        want_reply: bool,
    ) -> Result<Option<oneshot::Receiver<Response>>> {
        self.send_with(req, data, want_reply, Vec::new()).await
    }

    /// As `send`, with the buffer the reply's data should be received into.
    async fn send_with(
        &self,
        req: &Request,
        data: &[u8],
        want_reply: bool,
        buf: Vec<u8>,
    ) -> Result<Option<oneshot::Receiver<Response>>> {
        if self.is_closed() {
            return Err(self.dead_error());
        }
        // Uncontended (one thread sending, as a launch loop does) the lock is taken without
        // building and polling its future.
        let mut w = match self.inner.writer.try_lock() {
            Ok(w) => w,
            Err(_) => self.inner.writer.lock().await,
        };
        let id = w.next_id;
        w.next_id += 1;
        let rx = if want_reply {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut p) = self.inner.pending.lock() {
                p.insert(id, Waiter { tx, buf });
            }
            // The reader marks the connection closed before it drops every waiter: a waiter
            // inserted after that would never wake, so look again.
            if self.is_closed() {
                if let Ok(mut p) = self.inner.pending.lock() {
                    p.remove(&id);
                }
                return Err(self.dead_error());
            }
            Some(rx)
        } else {
            None
        };
        let flags = if want_reply { 0 } else { FLAG_NO_REPLY };
        let res = async {
            write_frame_id(&mut w, id, req, data, flags).await?;
            if want_reply {
                w.io.flush()
                    .await
                    .map_err(|e| ClientError::Disconnected(e.to_string()))?;
            }
            Ok::<_, ClientError>(())
        }
        .await;
        if let Err(e) = res {
            if let Ok(mut p) = self.inner.pending.lock() {
                p.remove(&id);
            }
            return Err(match e {
                ClientError::Disconnected(_) => self.dead_error(),
                other => other,
            });
        }
        Ok(rx)
    }

    async fn wait(&self, rx: oneshot::Receiver<Response>) -> Result<Response> {
        let resp = rx.await.map_err(|_| self.dead_error())?;
        if !resp.status.is_success() {
            return Err(ClientError::Cuda(resp.status));
        }
        Ok(resp)
    }

    async fn call(&self, req: &Request, data: &[u8]) -> Result<Response> {
        let rx = self
            .send(req, data, true)
            .await?
            .ok_or_else(|| ClientError::Protocol("no reply channel".into()))?;
        self.wait(rx).await
    }

    async fn call_reply(&self, req: &Request, data: &[u8]) -> Result<Reply> {
        self.call(req, data)
            .await?
            .reply
            .ok_or_else(|| ClientError::Protocol("reply without a body".into()))
    }

    /// Sends buffered stream-ordered work to the backend now.
    pub async fn flush(&self) -> Result<()> {
        let mut w = self.inner.writer.lock().await;
        w.io.flush()
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))
    }

    /// A request that does nothing: one round trip.
    pub async fn null(&self) -> Result<()> {
        self.call(&Request::Null, &[]).await.map(|_| ())
    }

    pub async fn device_query(&self) -> Result<DeviceInfo> {
        match self.call_reply(&Request::DeviceQuery, &[]).await? {
            Reply::Device(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    pub async fn ctx_create(&self, flags: u32) -> Result<Handle> {
        handle(self.call_reply(&Request::CtxCreate { flags }, &[]).await?)
    }

    pub async fn ctx_destroy(&self, ctx: Handle) -> Result<()> {
        self.call(&Request::CtxDestroy { ctx }, &[])
            .await
            .map(|_| ())
    }

    pub async fn ctx_synchronize(&self, ctx: Handle) -> Result<()> {
        self.call(&Request::CtxSynchronize { ctx }, &[])
            .await
            .map(|_| ())
    }

    pub async fn mem_alloc(&self, ctx: Handle, size: u64) -> Result<DevPtr> {
        match self
            .call_reply(&Request::MemAlloc { ctx, size }, &[])
            .await?
        {
            Reply::DevPtr(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub async fn mem_free(&self, ptr: DevPtr) -> Result<()> {
        self.call(&Request::MemFree { ptr }, &[]).await.map(|_| ())
    }

    /// `(free, total)` bytes of this session's device memory.
    pub async fn mem_get_info(&self) -> Result<(u64, u64)> {
        match self.call_reply(&Request::MemGetInfo, &[]).await? {
            Reply::MemInfo { free, total } => Ok((free, total)),
            other => Err(unexpected(other)),
        }
    }

    /// Host-to-device copy; returns when the data is in device memory. Reports earlier
    /// stream-ordered failures, as `cuMemcpyHtoD` does.
    pub async fn memcpy_htod(
        &self,
        ctx: Handle,
        dst: DevPtr,
        src: &[u8],
        stream: Handle,
    ) -> Result<()> {
        let chunks = self.chunks(src.len());
        let last = chunks.len() - 1;
        for (i, (off, len)) in chunks.into_iter().enumerate() {
            let req = Request::MemcpyHtoD {
                ctx,
                dst: dst.wrapping_add(off as u64),
                stream,
            };
            let rx = self.send(&req, &src[off..off + len], i == last).await?;
            if let Some(rx) = rx {
                self.wait(rx).await?;
            }
        }
        Ok(())
    }

    /// Stream-ordered host-to-device copy: `src` is sent now, the call does not wait.
    pub async fn memcpy_htod_async(
        &self,
        ctx: Handle,
        dst: DevPtr,
        src: &[u8],
        stream: Handle,
    ) -> Result<()> {
        for (off, len) in self.chunks(src.len()) {
            let req = Request::MemcpyHtoD {
                ctx,
                dst: dst.wrapping_add(off as u64),
                stream,
            };
            self.send(&req, &src[off..off + len], false).await?;
        }
        Ok(())
    }

    /// Device-to-host copy of `len` bytes; stream-ordered after earlier work on `stream`.
    pub async fn memcpy_dtoh(
        &self,
        ctx: Handle,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> Result<Vec<u8>> {
        self.memcpy_dtoh_into(ctx, src, len, stream, Vec::new())
            .await
    }

    /// As [`Client::memcpy_dtoh`], receiving into `buf`, whose allocation is reused: a caller
    /// that copies repeatedly passes back the vector it got the last time.
    pub async fn memcpy_dtoh_into(
        &self,
        ctx: Handle,
        src: DevPtr,
        len: u64,
        stream: Handle,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| ClientError::Cuda(CuResult::INVALID_VALUE))?;
        let chunks = self.chunks(len);
        if chunks.len() == 1 {
            let req = Request::MemcpyDtoH {
                ctx,
                src,
                len: len as u64,
                stream,
            };
            let rx = self
                .send_with(&req, &[], true, buf)
                .await?
                .ok_or_else(|| ClientError::Protocol("no reply channel".into()))?;
            return check_len(self.wait(rx).await?.data, len);
        }
        // Pipelined: every chunk request goes out before the first reply is awaited.
        let mut rxs = Vec::with_capacity(chunks.len());
        for (off, clen) in &chunks {
            let req = Request::MemcpyDtoH {
                ctx,
                src: src.wrapping_add(*off as u64),
                len: *clen as u64,
                stream,
            };
            rxs.push(self.send(&req, &[], true).await?);
        }
        let mut out = Vec::with_capacity(len);
        for (rx, (_, clen)) in rxs.into_iter().zip(chunks) {
            let rx = rx.ok_or_else(|| ClientError::Protocol("no reply channel".into()))?;
            let data = check_len(self.wait(rx).await?.data, clen)?;
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    pub async fn memcpy_dtod(
        &self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> Result<()> {
        self.call(
            &Request::MemcpyDtoD {
                ctx,
                dst,
                src,
                len,
                stream,
            },
            &[],
        )
        .await
        .map(|_| ())
    }

    pub async fn memcpy_dtod_async(
        &self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> Result<()> {
        self.send(
            &Request::MemcpyDtoD {
                ctx,
                dst,
                src,
                len,
                stream,
            },
            &[],
            false,
        )
        .await
        .map(|_| ())
    }

    /// `cuMemsetD8/D16/D32`: `elem_size` is 1, 2 or 4.
    pub async fn memset(
        &self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
    ) -> Result<()> {
        let req = Request::Memset {
            ctx,
            dst,
            value,
            elem_size,
            count,
            stream,
        };
        self.call(&req, &[]).await.map(|_| ())
    }

    pub async fn memset_async(
        &self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
    ) -> Result<()> {
        let req = Request::Memset {
            ctx,
            dst,
            value,
            elem_size,
            count,
            stream,
        };
        self.send(&req, &[], false).await.map(|_| ())
    }

    /// Loads a PTX module image.
    pub async fn module_load(&self, ctx: Handle, image: &[u8]) -> Result<Handle> {
        if image.len() > self.inner.max_data as usize {
            return Err(ClientError::Cuda(CuResult::INVALID_IMAGE));
        }
        handle(
            self.call_reply(&Request::ModuleLoad { ctx, parts: vec![] }, image)
                .await?,
        )
    }

    pub async fn module_unload(&self, module: Handle) -> Result<()> {
        self.call(&Request::ModuleUnload { module }, &[])
            .await
            .map(|_| ())
    }

    pub async fn module_get_function(&self, module: Handle, name: &str) -> Result<FunctionInfo> {
        match self
            .call_reply(
                &Request::ModuleGetFunction {
                    module,
                    name: name.to_string(),
                },
                &[],
            )
            .await?
        {
            Reply::Function(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }

    /// `(device pointer, size)` of a module global.
    pub async fn module_get_global(&self, module: Handle, name: &str) -> Result<(DevPtr, u64)> {
        match self
            .call_reply(
                &Request::ModuleGetGlobal {
                    module,
                    name: name.to_string(),
                },
                &[],
            )
            .await?
        {
            Reply::Global { ptr, size } => Ok((ptr, size)),
            other => Err(unexpected(other)),
        }
    }

    /// Stream-ordered kernel launch; `params` is the packed parameter buffer (see
    /// [`FunctionInfo::params`] for the layout). Does not wait.
    pub async fn launch_kernel(
        &self,
        func: Handle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
        stream: Handle,
        params: &[u8],
    ) -> Result<()> {
        let req = Request::LaunchKernel {
            func,
            grid,
            block,
            shared_mem_bytes,
            stream,
            flags: 0,
        };
        self.send(&req, params, false).await.map(|_| ())
    }

    pub async fn stream_create(&self, ctx: Handle, flags: u32) -> Result<Handle> {
        handle(
            self.call_reply(
                &Request::StreamCreate {
                    ctx,
                    flags,
                    priority: 0,
                },
                &[],
            )
            .await?,
        )
    }

    pub async fn stream_destroy(&self, stream: Handle) -> Result<()> {
        self.call(&Request::StreamDestroy { stream }, &[])
            .await
            .map(|_| ())
    }

    pub async fn stream_synchronize(&self, stream: Handle) -> Result<()> {
        self.call(&Request::StreamSynchronize { stream }, &[])
            .await
            .map(|_| ())
    }

    /// `Ok(true)` when all work on the stream is done (`cuStreamQuery`'s `NOT_READY` is `Ok(false)`).
    pub async fn stream_query(&self, stream: Handle) -> Result<bool> {
        ready(self.call(&Request::StreamQuery { stream }, &[]).await)
    }

    pub async fn event_create(&self, ctx: Handle, flags: u32) -> Result<Handle> {
        handle(
            self.call_reply(&Request::EventCreate { ctx, flags }, &[])
                .await?,
        )
    }

    /// Stream-ordered; does not wait.
    pub async fn event_record(&self, event: Handle, stream: Handle) -> Result<()> {
        self.send(&Request::EventRecord { event, stream }, &[], false)
            .await
            .map(|_| ())
    }

    pub async fn event_synchronize(&self, event: Handle) -> Result<()> {
        self.call(&Request::EventSynchronize { event }, &[])
            .await
            .map(|_| ())
    }

    pub async fn event_query(&self, event: Handle) -> Result<bool> {
        ready(self.call(&Request::EventQuery { event }, &[]).await)
    }

    pub async fn event_elapsed_time(&self, start: Handle, end: Handle) -> Result<f32> {
        match self
            .call_reply(&Request::EventElapsedTime { start, end }, &[])
            .await?
        {
            Reply::ElapsedMs(ms) => Ok(ms),
            other => Err(unexpected(other)),
        }
    }

    pub async fn event_destroy(&self, event: Handle) -> Result<()> {
        self.call(&Request::EventDestroy { event }, &[])
            .await
            .map(|_| ())
    }

    /// Sends a raw request (for tests and tools): returns the status and reply.
    pub async fn raw_call(
        &self,
        req: &Request,
        data: &[u8],
        no_reply: bool,
    ) -> Result<Option<(CuResult, Option<Reply>, Vec<u8>)>> {
        match self.send(req, data, !no_reply).await? {
            None => Ok(None),
            Some(rx) => {
                let r = rx.await.map_err(|_| self.dead_error())?;
                Ok(Some((r.status, r.reply, r.data)))
            }
        }
    }

    fn chunks(&self, len: usize) -> Vec<(usize, usize)> {
        let max = self.inner.max_data as usize;
        if len == 0 {
            return vec![(0, 0)];
        }
        (0..len)
            .step_by(max)
            .map(|off| (off, max.min(len - off)))
            .collect()
    }
}

/// Probes a silent connection while requests wait, and ends it when it stays silent (see
/// [`crate::liveness`]).
async fn watchdog(inner: std::sync::Weak<Inner>, progress: Arc<Progress>, l: Liveness) {
    let tick = (l.probe_after / 4).max(Duration::from_millis(50));
    // The probe of this silence: whether it was written, and the read count when it was.
    let mut probe: Option<(Arc<AtomicBool>, u64)> = None;
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let waiting = inner.pending.lock().map(|p| p.len()).unwrap_or(0);
        if waiting == 0 {
            probe = None;
            continue;
        }
        if let Some((written, reads)) = &probe {
            if progress.reads() != *reads {
                // The backend spoke: alive.
                probe = None;
            } else if written.load(Ordering::Acquire) {
                // Only the backend's bytes answer a written probe.
                let silence = progress.read_silence();
                if silence >= l.timeout {
                    declare_dead(&inner, silence, waiting);
                    return;
                }
                continue;
            }
        }
        let silence = progress.silence();
        if silence < l.probe_after {
            probe = None;
            continue;
        }
        if silence >= l.timeout {
            declare_dead(&inner, silence, waiting);
            return;
        }
        // One probe per silence: a `Null` the backend answers at once if it is alive. A
        // writer busy with a large request is progress of its own and is not interrupted.
        if probe.is_none() {
            let written = Arc::new(AtomicBool::new(false));
            probe = Some((written.clone(), progress.reads()));
            // On its own task: a probe stuck behind a full socket must not stop the watch.
            let probe = inner.clone();
            tokio::spawn(async move {
                let Ok(mut w) = probe.writer.try_lock() else {
                    return;
                };
                let id = w.next_id;
                w.next_id += 1;
                let (tx, _rx) = oneshot::channel();
                if let Ok(mut p) = probe.pending.lock() {
                    p.insert(
                        id,
                        Waiter {
                            tx,
                            buf: Vec::new(),
                        },
                    );
                }
                let send = async {
                    if write_frame_id(&mut w, id, &Request::Null, &[], 0)
                        .await
                        .is_ok()
                        && w.io.flush().await.is_ok()
                    {
                        written.store(true, Ordering::Release);
                    }
                };
                // Bounded, so a stuck probe does not keep the connection alive forever.
                let _ = tokio::time::timeout(l.timeout, send).await;
            });
        }
    }
}

/// Ends a connection the watchdog found silent: every waiting call fails with the reason.
fn declare_dead(inner: &Inner, silence: Duration, waiting: usize) {
    let why = format!(
        "the backend sent nothing for {} ms while {waiting} request(s) waited (the backend or the network is stuck)",
        silence.as_millis()
    );
    debug!(reason = %why, "connection declared dead");
    if let Ok(mut d) = inner.dead.lock() {
        d.get_or_insert(why);
    }
    inner.closed.store(true, Ordering::Release);
    inner.reader.abort();
    if let Ok(mut p) = inner.pending.lock() {
        p.clear();
    }
}

/// Connects to `addr` as `opts` say: TLS, or plain TCP to a loopback address only; the socket
/// gets the keepalive and user timeout of `opts.net`.
async fn open(addr: &str, opts: &ClientOptions) -> Result<(ReadHalf, WriteHalf)> {
    let connect_err = |reason: String| ClientError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let targets = match &opts.tls {
        Some(_) => tokio::net::lookup_host(addr)
            .await
            .map_err(|e| connect_err(e.to_string()))?
            .collect::<Vec<_>>(),
        None => netgpu_tls::policy::resolve_plain(addr).map_err(|e| connect_err(e.to_string()))?,
    };
    let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&targets[..]))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    opts.net
        .apply(&stream)
        .map_err(|e| connect_err(format!("cannot set socket options: {e}")))?;
    match &opts.tls {
        None => {
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(tls) => {
            let s = netgpu_tls::tokio::connect(stream, tls, addr, opts.connect_timeout)
                .await
                .map_err(|e| connect_err(e.explanation))?;
            let (r, w) = tokio::io::split(s);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

fn unexpected(r: Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {r:?}"))
}

fn handle(r: Reply) -> Result<Handle> {
    match r {
        Reply::Handle(h) => Ok(h),
        other => Err(unexpected(other)),
    }
}

fn ready(r: Result<Response>) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(ClientError::Cuda(c)) if c == CuResult::NOT_READY => Ok(false),
        Err(e) => Err(e),
    }
}

fn check_len(data: Vec<u8>, len: usize) -> Result<Vec<u8>> {
    if data.len() != len {
        return Err(ClientError::Protocol(format!(
            "expected {len} bytes, backend sent {}",
            data.len()
        )));
    }
    Ok(data)
}

async fn write_frame(w: &mut Writer, req: &Request, data: &[u8], flags: u8) -> Result<()> {
    let id = w.next_id;
    w.next_id += 1;
    write_frame_id(w, id, req, data, flags).await
}

async fn write_frame_id(
    w: &mut Writer,
    id: u64,
    req: &Request,
    data: &[u8],
    flags: u8,
) -> Result<()> {
    client::encode_request(id, flags, req, data.len(), &mut w.ctrl).map_err(|e| match e {
        client::FramingError::TooLarge(_) => ClientError::Cuda(CuResult::INVALID_VALUE),
        other => ClientError::Protocol(other.to_string()),
    })?;
    let io_err = |e: std::io::Error| ClientError::Disconnected(e.to_string());
    let head = std::mem::take(&mut w.ctrl);
    let r = w.io.write_all(&head).await;
    w.ctrl = head;
    r.map_err(io_err)?;
    if data.is_empty() {
        return Ok(());
    }
    // Large data bypasses the buffer (tokio's BufWriter writes it straight from `data`).
    w.io.write_all(data).await.map_err(io_err)
}

async fn read_frame(r: &mut BufReader<ReadHalf>) -> std::io::Result<(FrameHeader, Response)> {
    let (h, reply) = read_head(r).await?;
    let mut data = Vec::new();
    read_data(r, h.data_len, &mut data).await?;
    let status = h.status;
    Ok((
        h,
        Response {
            status,
            reply,
            data,
        },
    ))
}

/// Reads a frame's header and control section, leaving its data section unread.
async fn read_head(r: &mut BufReader<ReadHalf>) -> std::io::Result<(FrameHeader, Option<Reply>)> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut hdr = [0u8; HEADER_LEN];
    r.read_exact(&mut hdr).await?;
    let h = FrameHeader::decode(&hdr, MAX_CTRL_LEN, MAX_REPLY_DATA)
        .map_err(|e| invalid(e.to_string()))?;
    let mut ctrl = vec![0u8; h.ctrl_len as usize];
    r.read_exact(&mut ctrl).await?;
    let reply = client::decode_reply(&ctrl).map_err(|e| invalid(e.to_string()))?;
    Ok((h, reply))
}

/// Reads a data section into `data`; a reused vector of the right length is not rewritten
/// before the read.
async fn read_data(
    r: &mut BufReader<ReadHalf>,
    len: u32,
    data: &mut Vec<u8>,
) -> std::io::Result<()> {
    data.resize(len as usize, 0);
    r.read_exact(data).await.map(|_| ())
}

async fn reader_task(
    mut r: BufReader<ReadHalf>,
    pending: Arc<Pending>,
    dead: Arc<Mutex<Option<String>>>,
    closed: Arc<AtomicBool>,
) {
    let why = loop {
        match read_head(&mut r).await {
            Ok((h, reply)) => match h.kind {
                FrameKind::Reply => {
                    let waiter = pending
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&h.request_id));
                    let Some(Waiter { tx, mut buf }) = waiter else {
                        break format!("backend answered unknown request {}", h.request_id);
                    };
                    if let Err(e) = read_data(&mut r, h.data_len, &mut buf).await {
                        break e.to_string();
                    }
                    let _ = tx.send(Response {
                        status: h.status,
                        reply,
                        data: buf,
                    });
                }
                FrameKind::Goodbye => {
                    let reason = match reply {
                        Some(Reply::Error(s)) => s,
                        _ => "no reason given".into(),
                    };
                    break format!("backend closed the session ({}): {reason}", h.status);
                }
                FrameKind::Request => break "backend sent a request frame".into(),
                // The backend holds our requests back (its bytes were the point).
                FrameKind::Busy => continue,
            },
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "backend closed the connection".into()
            }
            Err(e) => break e.to_string(),
        }
    };
    debug!(reason = %why, "connection ended");
    if let Ok(mut d) = dead.lock() {
        d.get_or_insert(why);
    }
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiter with the disconnect error.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

/// Protocol-2 operations (stream priorities, launch flags, function attributes, event waits,
/// pitched copies, stream-ordered frees, linked modules, kernel console output).
impl Client {
    /// `cuStreamCreateWithPriority` (the backend clamps `priority` to its range).
    pub async fn stream_create_with_priority(
        &self,
        ctx: Handle,
        flags: u32,
        priority: i32,
    ) -> Result<Handle> {
        let req = Request::StreamCreate {
            ctx,
            flags,
            priority,
        };
        handle(self.call_reply(&req, &[]).await?)
    }

    /// As [`Client::launch_kernel`], with `LAUNCH_*` flags (`LAUNCH_COOPERATIVE`). Does not
    /// wait.
    #[allow(clippy::too_many_arguments)]
    pub async fn launch_kernel_flags(
        &self,
        func: Handle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
        stream: Handle,
        flags: u32,
        params: &[u8],
    ) -> Result<()> {
        let req = Request::LaunchKernel {
            func,
            grid,
            block,
            shared_mem_bytes,
            stream,
            flags,
        };
        self.send(&req, params, false).await.map(|_| ())
    }

    /// A launch that answers at once with its validation result (the launch still runs
    /// asynchronously): `cuLaunchKernel`'s own errors without waiting for a sync.
    #[allow(clippy::too_many_arguments)]
    pub async fn launch_kernel_checked(
        &self,
        func: Handle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
        stream: Handle,
        flags: u32,
        params: &[u8],
    ) -> Result<()> {
        let req = Request::LaunchKernel {
            func,
            grid,
            block,
            shared_mem_bytes,
            stream,
            flags,
        };
        self.call(&req, params).await.map(|_| ())
    }

    /// `cuFuncSetAttribute`.
    pub async fn func_set_attribute(&self, func: Handle, attr: u32, value: i32) -> Result<()> {
        self.call(&Request::FuncSetAttribute { func, attr, value }, &[])
            .await
            .map(|_| ())
    }

    /// `cuStreamWaitEvent`; stream-ordered, does not wait.
    pub async fn stream_wait_event(&self, stream: Handle, event: Handle) -> Result<()> {
        self.send(&Request::StreamWaitEvent { stream, event }, &[], false)
            .await
            .map(|_| ())
    }

    /// `cuMemcpy3D`: `host` is the packed host side of a host-to-device copy; a
    /// device-to-host copy returns its packed bytes. Waits for the copy.
    pub async fn memcpy_3d(
        &self,
        ctx: Handle,
        copy: netgpu_proto::wire::ops::Copy3D,
        host: &[u8],
        stream: Handle,
    ) -> Result<Vec<u8>> {
        let req = Request::Memcpy3D { ctx, copy, stream };
        Ok(self.call(&req, host).await?.data)
    }

    /// `cuMemFreeAsync`; stream-ordered, does not wait.
    pub async fn mem_free_async(&self, ptr: DevPtr, stream: Handle) -> Result<()> {
        self.send(&Request::MemFreeAsync { ptr, stream }, &[], false)
            .await
            .map(|_| ())
    }

    /// Loads several images linked into one module (`cuLinkCreate` ... `cuLinkComplete`).
    pub async fn module_link(&self, ctx: Handle, images: &[&[u8]]) -> Result<Handle> {
        let mut data = Vec::new();
        let mut parts = Vec::with_capacity(images.len());
        for i in images {
            parts.push(
                u32::try_from(i.len()).map_err(|_| ClientError::Cuda(CuResult::INVALID_IMAGE))?,
            );
            data.extend_from_slice(i);
        }
        if data.len() > self.inner.max_data as usize {
            return Err(ClientError::Cuda(CuResult::INVALID_IMAGE));
        }
        handle(
            self.call_reply(&Request::ModuleLoad { ctx, parts }, &data)
                .await?,
        )
    }

    /// Takes up to `max` bytes of the session's kernel console output (device `printf`).
    pub async fn console_read(&self, max: u32) -> Result<Vec<u8>> {
        Ok(self.call(&Request::ConsoleRead { max }, &[]).await?.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_tcp_to_a_non_loopback_address_is_refused_before_connecting() {
        let e = Client::connect("198.18.0.2:7070", "t").await.err().unwrap();
        let s = e.to_string();
        assert!(
            s.contains("plain TCP refused") && s.contains("configure [tls]"),
            "{s}"
        );
        assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE);
    }
}
