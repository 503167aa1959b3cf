//! One client connection: the handshake, the frame loop and dispatch to the session's
//! [`Engine`].
//!
//! A session runs on its own OS thread with blocking socket I/O. Requests execute in the
//! order they arrive; replies are buffered and flushed whenever the session has no more
//! input waiting, so a pipelined burst of requests costs one write. Bulk data moves without
//! staging where the engine's memory is host memory: a host-to-device copy is read from the
//! socket straight into the allocation, and a device-to-host copy is written to the socket
//! straight from it.
//!
//! Stream-ordered requests sent with `FLAG_NO_REPLY` get no answer; the first failure among
//! them is kept and returned by the next synchronising request (as a CUDA program sees an
//! asynchronous error at its next `cuStreamSynchronize`).
//!
//! Everything the session holds belongs to its engine, which is dropped however the
//! connection ends, freeing all the session's device memory and objects.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameError, FrameHeader, FrameKind};
use netgpu_proto::wire::ops::{self, DeviceInfo, FunctionInfo, Reply, Request};
use netgpu_proto::wire::{HEADER_LEN, MAX_CTRL_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::executor::{Engine, LaunchDims};
use crate::server::Shared;

const IO_BUFFER: usize = 256 * 1024;

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

struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    max_data: u32,
    ctrl: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    /// Reads the next frame header and control section; `Ok(None)` on a clean EOF.
    fn read_frame(&mut self) -> Result<Option<FrameHeader>, SessionError> {
        if self.reader.buffer().is_empty() {
            self.writer.flush()?;
        }
        let mut hdr = [0u8; HEADER_LEN];
        match self.reader.read_exact(&mut hdr[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.reader.read_exact(&mut hdr[1..])?;
        let h = FrameHeader::decode(&hdr, MAX_CTRL_LEN, self.max_data)?;
        if h.kind != FrameKind::Request {
            return Err(SessionError::Protocol(format!(
                "client sent a {:?} frame",
                h.kind
            )));
        }
        self.ctrl.resize(h.ctrl_len as usize, 0);
        self.reader.read_exact(&mut self.ctrl)?;
        Ok(Some(h))
    }

    fn read_data(&mut self, len: u32, into: &mut Vec<u8>) -> io::Result<()> {
        into.clear();
        into.resize(len as usize, 0);
        self.reader.read_exact(into)
    }

    fn skip_data(&mut self, len: u32) -> io::Result<()> {
        let n = io::copy(
            &mut (&mut self.reader).take(u64::from(len)),
            &mut io::sink(),
        )?;
        if n != u64::from(len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn write_reply(
        &mut self,
        id: u64,
        status: CuResult,
        reply: Option<&Reply>,
        data: &[u8],
    ) -> Result<(), SessionError> {
        self.out.clear();
        if let Some(r) = reply {
            ops::encode_into(r, &mut self.out)
                .map_err(|e| SessionError::Protocol(e.to_string()))?;
        }
        let h = FrameHeader::reply(id, status, self.out.len() as u32, data.len() as u32);
        self.writer.write_all(&h.encode())?;
        self.writer.write_all(&self.out)?;
        self.writer.write_all(data)?;
        Ok(())
    }

    fn goodbye(&mut self, status: CuResult, why: &str) {
        let body = ops::encode(&Reply::Error(why.to_string())).unwrap_or_default();
        let h = FrameHeader::goodbye(status, body.len() as u32);
        let _ = self.writer.write_all(&h.encode());
        let _ = self.writer.write_all(&body);
        let _ = self.writer.flush();
    }
}

/// Serves one connection until it ends; never panics on client input.
pub fn run(stream: TcpStream, shared: Arc<Shared>, session_id: u64) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let result = stream
        .try_clone()
        .map_err(SessionError::from)
        .and_then(|w| serve(stream, w, &shared, session_id, &peer));
    match result {
        Ok(()) | Err(SessionError::Closed) => info!(session = session_id, %peer, "session closed"),
        Err(SessionError::Shutdown) => {
            info!(session = session_id, %peer, "session ended by shutdown")
        }
        Err(e) => warn!(session = session_id, %peer, error = %e, "session ended"),
    }
}

fn serve(
    stream: TcpStream,
    wstream: TcpStream,
    shared: &Shared,
    session_id: u64,
    peer: &str,
) -> Result<(), SessionError> {
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(Duration::from_millis(
        shared.config.handshake_timeout_ms,
    )))?;
    let read_half = stream.try_clone()?;
    let mut conn = Conn {
        reader: BufReader::with_capacity(IO_BUFFER, read_half),
        writer: BufWriter::with_capacity(IO_BUFFER, wstream),
        max_data: shared.max_data,
        ctrl: Vec::new(),
        out: Vec::new(),
    };
    let mut engine = match handshake(&mut conn, shared, session_id, peer) {
        Ok(e) => e,
        Err(e) => {
            let (status, why) = match &e {
                SessionError::Refused(why) => (CuResult::NOT_PERMITTED, why.clone()),
                other => (CuResult::INVALID_VALUE, other.to_string()),
            };
            conn.goodbye(status, &why);
            return Err(e);
        }
    };
    stream.set_read_timeout(None)?;
    let result = frame_loop(&mut conn, engine.as_mut(), shared);
    match &result {
        Err(SessionError::Frame(e)) => conn.goodbye(CuResult::INVALID_VALUE, &e.to_string()),
        Err(SessionError::Protocol(e)) => conn.goodbye(CuResult::INVALID_VALUE, e),
        Err(SessionError::Shutdown) => {
            conn.goodbye(CuResult::DEVICE_UNAVAILABLE, "backend shutting down")
        }
        _ => {}
    }
    // Dropping the engine frees everything the session held, however it ended.
    drop(engine);
    result
}

fn handshake(
    conn: &mut Conn,
    shared: &Shared,
    session_id: u64,
    peer: &str,
) -> Result<Box<dyn Engine>, SessionError> {
    let h = conn.read_frame()?.ok_or(SessionError::Closed)?;
    if h.data_len != 0 || h.no_reply() {
        return Err(SessionError::Protocol("malformed hello frame".into()));
    }
    let req: Request =
        ops::decode(&conn.ctrl).map_err(|e| SessionError::Protocol(e.to_string()))?;
    let Request::Hello {
        version_min,
        version_max,
        token,
        client,
        limits: _,
    } = req
    else {
        return Err(SessionError::Protocol(
            "the first request must be Hello".into(),
        ));
    };
    if !shared.token_ok(&token) {
        warn!(session = session_id, %peer, "unknown token refused");
        return Err(SessionError::Refused(
            "authentication failed: unknown token".into(),
        ));
    }
    let version = PROTOCOL_VERSION.min(version_max);
    if version < MIN_PROTOCOL_VERSION.max(version_min) {
        return Err(SessionError::Refused(format!(
            "no common protocol version: client speaks {version_min}..={version_max}, backend {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
        )));
    }
    if shared.shutting_down.load(Ordering::Acquire) {
        return Err(SessionError::Shutdown);
    }
    let engine = shared
        .executor
        .open(crate::pool::quota_for(
            &token,
            shared.config.session_memory_quota.as_u64(),
        ))
        .map_err(|e| SessionError::Refused(format!("cannot open a device session: {e}")))?;
    let welcome = Reply::Welcome {
        version,
        session_id,
        max_data_len: shared.max_data,
        server: format!("netgpu-backend {}", env!("CARGO_PKG_VERSION")),
    };
    conn.write_reply(h.request_id, CuResult::SUCCESS, Some(&welcome), &[])?;
    conn.writer.flush()?;
    info!(session = session_id, %peer, %client, version, "session open");
    Ok(engine)
}

fn frame_loop(
    conn: &mut Conn,
    engine: &mut dyn Engine,
    shared: &Shared,
) -> Result<(), SessionError> {
    // First failure of stream-ordered work sent without a reply.
    let mut deferred: Option<CuResult> = None;
    let mut data = Vec::new();
    loop {
        let Some(h) = conn.read_frame()? else {
            return if shared.shutting_down.load(Ordering::Acquire) {
                Err(SessionError::Shutdown)
            } else {
                Err(SessionError::Closed)
            };
        };
        let req: Request = match ops::decode(&conn.ctrl) {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "undecodable request");
                conn.skip_data(h.data_len)?;
                refuse(conn, &h, &mut deferred, CuResult::INVALID_VALUE)?;
                continue;
            }
        };
        if (h.data_len != 0 && !req.accepts_data())
            || (h.no_reply() && !req.may_skip_reply())
            || matches!(req, Request::Hello { .. })
        {
            conn.skip_data(h.data_len)?;
            refuse(conn, &h, &mut deferred, CuResult::INVALID_VALUE)?;
            continue;
        }
        if req.is_synchronising(h.no_reply()) {
            if let Some(e) = deferred.take() {
                conn.skip_data(h.data_len)?;
                conn.write_reply(h.request_id, e, None, &[])?;
                continue;
            }
        }
        let result = execute(
            conn,
            engine,
            shared.executor.device_info(),
            &req,
            &h,
            &mut data,
        )?;
        match result {
            Outcome::Replied => {}
            Outcome::Result(r) => {
                if h.no_reply() {
                    if let Err(e) = r {
                        debug!(op = req.name(), error = %e, "stream-ordered request failed");
                        deferred.get_or_insert(e);
                    }
                } else {
                    match r {
                        Ok(reply) => {
                            conn.write_reply(h.request_id, CuResult::SUCCESS, Some(&reply), &[])?
                        }
                        Err(e) => conn.write_reply(h.request_id, e, None, &[])?,
                    }
                }
            }
        }
    }
}

fn refuse(
    conn: &mut Conn,
    h: &FrameHeader,
    deferred: &mut Option<CuResult>,
    e: CuResult,
) -> Result<(), SessionError> {
    if h.no_reply() {
        deferred.get_or_insert(e);
        Ok(())
    } else {
        conn.write_reply(h.request_id, e, None, &[])
    }
}

enum Outcome {
    /// The reply (with its data) is already written.
    Replied,
    Result(Result<Reply, CuResult>),
}

fn execute(
    conn: &mut Conn,
    engine: &mut dyn Engine,
    info: &DeviceInfo,
    req: &Request,
    h: &FrameHeader,
    data: &mut Vec<u8>,
) -> Result<Outcome, SessionError> {
    use Reply::*;
    let r = match *req {
        Request::Hello { .. } => Err(CuResult::INVALID_VALUE),
        Request::Null => Ok(Done),
        Request::DeviceQuery => Ok(Device(session_device_info(info, engine))),
        Request::CtxCreate { flags } => engine.ctx_create(flags).map(Handle),
        Request::CtxDestroy { ctx } => engine.ctx_destroy(ctx).map(|_| Done),
        Request::CtxSynchronize { ctx } => engine.ctx_synchronize(ctx).map(|_| Done),
        Request::MemAlloc { ctx, size } => engine.mem_alloc(ctx, size).map(DevPtr),
        Request::MemFree { ptr } => engine.mem_free(ptr).map(|_| Done),
        Request::MemGetInfo => {
            let (free, total) = engine.mem_info();
            Ok(MemInfo { free, total })
        }
        Request::MemcpyHtoD { ctx, dst, stream } => {
            let len = u64::from(h.data_len);
            // Zero-copy: read straight into device memory where it is host memory. The
            // stream is validated first so a bad stream does not leave a half-done copy.
            if len > 0 && engine.memcpy_htod(ctx, dst, &[], stream).is_ok() {
                if let Some(view) = engine.host_view_mut(ctx, dst, len) {
                    conn.reader.read_exact(view)?;
                    return Ok(Outcome::Result(Ok(Done)));
                }
            }
            conn.read_data(h.data_len, data)?;
            engine.memcpy_htod(ctx, dst, data, stream).map(|_| Done)
        }
        Request::MemcpyDtoH {
            ctx,
            src,
            len,
            stream,
        } => {
            if len > u64::from(conn.max_data) {
                Err(CuResult::INVALID_VALUE)
            } else {
                let mut status = engine.memcpy_dtoh(ctx, &mut [], src, stream);
                if status.is_ok() {
                    if let Some(view) = engine.host_view(ctx, src, len) {
                        conn.write_reply(h.request_id, CuResult::SUCCESS, Some(&Done), view)?;
                        return Ok(Outcome::Replied);
                    }
                    data.clear();
                    data.resize(len as usize, 0);
                    status = engine.memcpy_dtoh(ctx, data, src, stream);
                    if status.is_ok() {
                        conn.write_reply(h.request_id, CuResult::SUCCESS, Some(&Done), data)?;
                        return Ok(Outcome::Replied);
                    }
                }
                status.map(|_| Done)
            }
        }
        Request::MemcpyDtoD {
            ctx,
            dst,
            src,
            len,
            stream,
        } => engine.memcpy_dtod(ctx, dst, src, len, stream).map(|_| Done),
        Request::Memset {
            ctx,
            dst,
            value,
            elem_size,
            count,
            stream,
        } => engine
            .memset(ctx, dst, value, elem_size, count, stream)
            .map(|_| Done),
        Request::ModuleLoad { ctx, ref parts } => {
            conn.read_data(h.data_len, data)?;
            if parts.len() > 1 {
                Err(CuResult::NOT_SUPPORTED)
            } else {
                engine.module_load(ctx, data).map(Handle)
            }
        }
        Request::ModuleUnload { module } => engine.module_unload(module).map(|_| Done),
        Request::ModuleGetFunction { module, ref name } => engine
            .module_get_function(module, name)
            .map(|(handle, params)| {
                let param_buffer_size = params.iter().map(|p| p.offset + p.size).max().unwrap_or(0);
                Function(FunctionInfo {
                    handle,
                    params,
                    param_buffer_size,
                    attributes: Vec::new(),
                })
            }),
        Request::ModuleGetGlobal { module, ref name } => engine
            .module_get_global(module, name)
            .map(|(ptr, size)| Global { ptr, size }),
        Request::LaunchKernel {
            func,
            grid,
            block,
            shared_mem_bytes,
            stream,
            flags,
        } => {
            conn.read_data(h.data_len, data)?;
            if flags != 0 {
                return Ok(Outcome::Result(Err(CuResult::NOT_SUPPORTED)));
            }
            let dims = LaunchDims {
                grid,
                block,
                shared_mem_bytes,
            };
            engine.launch(func, dims, data, stream).map(|_| Done)
        }
        Request::StreamCreate { ctx, flags, .. } => engine.stream_create(ctx, flags).map(Handle),
        Request::StreamDestroy { stream } => engine.stream_destroy(stream).map(|_| Done),
        Request::StreamSynchronize { stream } => engine.stream_synchronize(stream).map(|_| Done),
        Request::StreamQuery { stream } => engine.stream_query(stream).and_then(|done| {
            if done {
                Ok(Done)
            } else {
                Err(CuResult::NOT_READY)
            }
        }),
        Request::EventCreate { ctx, flags } => engine.event_create(ctx, flags).map(Handle),
        Request::EventRecord { event, stream } => engine.event_record(event, stream).map(|_| Done),
        Request::EventSynchronize { event } => engine.event_synchronize(event).map(|_| Done),
        Request::EventQuery { event } => engine.event_query(event).and_then(|done| {
            if done {
                Ok(Done)
            } else {
                Err(CuResult::NOT_READY)
            }
        }),
        Request::EventElapsedTime { start, end } => {
            engine.event_elapsed_ms(start, end).map(ElapsedMs)
        }
        Request::EventDestroy { event } => engine.event_destroy(event).map(|_| Done),
        // Protocol 2 operations the executors do not implement yet.
        Request::FuncSetAttribute { .. }
        | Request::StreamWaitEvent { .. }
        | Request::Memcpy3D { .. }
        | Request::MemFreeAsync { .. }
        | Request::ConsoleRead { .. } => {
            conn.skip_data(h.data_len)?;
            Err(CuResult::NOT_SUPPORTED)
        }
    };
    Ok(Outcome::Result(r))
}

fn session_device_info(info: &DeviceInfo, engine: &dyn Engine) -> DeviceInfo {
    let mut info = info.clone();
    // A session sees its quota as the device's memory, as a guest sees its vGPU's size.
    info.total_mem = engine.mem_info().1;
    info
}
