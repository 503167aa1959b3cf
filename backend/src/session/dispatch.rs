//! The dispatcher: parses each request frame, checks the frame-level rules, reads its data
//! section where it goes (device memory, a staging buffer, a parameter buffer) and hands the
//! request to the engine. It never waits for work: results come back through completions;
//! only a session whose queued work is at its bound is held back (`wait_for_backlog`).

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use netgpu_proto::cuda::{attr, CuResult};
use netgpu_proto::wire::frame::FrameHeader;
use netgpu_proto::wire::ops::{Copy3DKind, Reply, Request};
use tracing::debug;

use super::metrics::Direction;
use super::writer::Out;
use super::{completion, FrameReader, Limits, Replies, SessionError};
use crate::executor::limits::MAX_PARAM_BYTES;
use crate::executor::streams::BACKLOG_LIMIT;
use crate::executor::{Console, Engine, HostBuf, HtodTarget, LaunchDims, Mode};
use crate::server::Shared;
use crate::transport::Control;

pub(super) struct Dispatcher<'a, R: Read, W: Write + Send + 'static> {
    pub frames: &'a mut FrameReader<R>,
    pub engine: &'a mut dyn Engine,
    pub replies: Arc<Replies<W>>,
    pub console: Arc<Console>,
    pub shared: &'a Shared,
    pub limits: Limits,
    pub control: Arc<dyn Control>,
    /// The client accepts `FrameKind::Busy` frames (protocol version 3).
    pub busy_frames: bool,
}

/// How often a dispatcher held back by its session's backlog looks for its client leaving.
const BACKLOG_POLL: Duration = Duration::from_millis(50);
/// How often it tells the client so (`FrameKind::Busy`): well inside a client's 1 s before
/// it probes a silent backend.
const BUSY_EVERY: Duration = Duration::from_millis(500);

impl<R: Read, W: Write + Send + 'static> Dispatcher<'_, R, W> {
    pub fn run(&mut self) -> Result<(), SessionError> {
        loop {
            // About to wait for input: hand the burst's work to the executor first.
            if !self.frames.has_buffered_input() {
                self.engine.flush();
                if let Some(m) = self.replies.metrics.get() {
                    let (free, total) = self.engine.mem_info();
                    m.memory_used(total.saturating_sub(free));
                }
            }
            if self.engine.backlog() >= BACKLOG_LIMIT {
                self.wait_for_backlog()?;
            }
            let Some((h, req)) = self.frames.next_request()? else {
                return if self.shared.shutting_down.load(Ordering::Acquire) {
                    Err(SessionError::Shutdown)
                } else {
                    Err(SessionError::Closed)
                };
            };
            let req: Request = match req {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "undecodable request");
                    self.frames.skip(h.data_len)?;
                    self.refuse(&h);
                    continue;
                }
            };
            if (h.data_len != 0 && !req.accepts_data())
                || (h.no_reply() && !req.may_skip_reply())
                || matches!(req, Request::Hello { .. })
            {
                self.frames.skip(h.data_len)?;
                self.refuse(&h);
                continue;
            }
            let mode = if h.no_reply() {
                Mode::NoReply
            } else if req.is_synchronising(false) {
                Mode::SyncReply
            } else {
                Mode::Reply
            };
            self.dispatch(&h, mode, req)?;
        }
    }

    /// The session has [`BACKLOG_LIMIT`] items queued or running: reads no more requests
    /// until half of them have finished (the client's sends wait in the socket, as a
    /// `cuLaunchKernel` waits on a GPU's full command buffer), while still noticing the
    /// client leave and the backend shut down, which end the session as end of stream does.
    /// Meanwhile a `Busy` frame every [`BUSY_EVERY`] tells the client's liveness watchdog
    /// that the backend is alive (it cannot answer the watchdog's probe, which it does not
    /// read).
    fn wait_for_backlog(&mut self) -> Result<(), SessionError> {
        self.engine.flush();
        let backlog = self.engine.backlog();
        debug!(
            backlog,
            "session backlog full; reading no requests until half has run"
        );
        let mut last_busy = std::time::Instant::now();
        loop {
            if self.engine.wait_backlog(BACKLOG_LIMIT / 2, BACKLOG_POLL) {
                return Ok(());
            }
            if self.busy_frames && last_busy.elapsed() >= BUSY_EVERY {
                self.replies.writer.send(Out::Busy);
                last_busy = std::time::Instant::now();
            }
            if self.shared.shutting_down.load(Ordering::Acquire) {
                return Err(SessionError::Shutdown);
            }
            if self.control.peer_gone() {
                return Err(SessionError::Closed);
            }
        }
    }

    fn refuse(&self, h: &FrameHeader) {
        let mode = if h.no_reply() {
            Mode::NoReply
        } else {
            Mode::Reply
        };
        self.replies
            .answer(h.request_id, mode, Err(CuResult::INVALID_VALUE));
    }

    fn device_info(&self) -> netgpu_proto::wire::ops::DeviceInfo {
        let mut info = self.shared.executor.device_info().clone();
        // A session sees its quota as the device's memory, as a guest sees its vGPU's size.
        info.total_mem = self.engine.mem_info().1;
        let timeout = i32::from(self.limits.kernel_time_limit.is_some());
        match info
            .attributes
            .iter_mut()
            .find(|(a, _)| *a == attr::KERNEL_EXEC_TIMEOUT)
        {
            Some(v) => v.1 = timeout,
            None => info.attributes.push((attr::KERNEL_EXEC_TIMEOUT, timeout)),
        }
        info
    }

    fn dispatch(&mut self, h: &FrameHeader, mode: Mode, req: Request) -> Result<(), SessionError> {
        let metrics = self.replies.metrics.get().cloned();
        if let Some(m) = &metrics {
            m.begin(h.request_id, req.name(), moved(&req, h));
        }
        let c = || completion(&self.replies, h.request_id, mode);
        let e = &mut *self.engine;
        match req {
            Request::Hello { .. } => {
                self.replies
                    .answer(h.request_id, mode, Err(CuResult::INVALID_VALUE))
            }
            Request::Null => self.replies.answer_done(h.request_id, mode, Ok(())),
            Request::DeviceQuery => {
                let info = self.device_info();
                self.replies
                    .answer(h.request_id, mode, Ok((Reply::Device(info), None)))
            }
            Request::MemGetInfo => {
                let (free, total) = e.mem_info();
                self.replies.answer(
                    h.request_id,
                    mode,
                    Ok((Reply::MemInfo { free, total }, None)),
                )
            }
            Request::CtxCreate { flags } => {
                let r = e.ctx_create(flags).map(|x| (Reply::Handle(x), None));
                self.replies.answer(h.request_id, mode, r)
            }
            Request::CtxDestroy { ctx } => e.ctx_destroy(ctx, c()),
            Request::CtxSynchronize { ctx } => e.ctx_synchronize(ctx, c()),
            Request::MemAlloc { ctx, size } => e.mem_alloc(ctx, size, c()),
            Request::MemFree { ptr } => e.mem_free(ptr, c()),
            Request::MemFreeAsync { ptr, stream } => {
                let r = e.mem_free_async(ptr, stream);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::MemcpyHtoD { ctx, dst, stream } => {
                match e.htod_target(ctx, dst, u64::from(h.data_len), stream) {
                    Err(err) => {
                        self.frames.skip(h.data_len)?;
                        self.replies.answer(h.request_id, mode, Err(err));
                    }
                    Ok(HtodTarget::Direct(mut buf)) => {
                        // Straight into device memory; the copy is done once the buffer goes.
                        self.frames.read_into(buf.as_mut_slice())?;
                        drop(buf);
                        self.replies.answer_done(h.request_id, mode, Ok(()));
                    }
                    Ok(HtodTarget::Staged(mut buf)) => {
                        self.frames.read_into(buf.as_mut_slice())?;
                        e.memcpy_htod(ctx, dst, buf, stream, c());
                    }
                }
            }
            Request::MemcpyDtoH {
                ctx,
                src,
                len,
                stream,
            } => {
                if len > u64::from(self.shared.max_data) {
                    self.replies
                        .answer(h.request_id, mode, Err(CuResult::INVALID_VALUE));
                } else {
                    e.memcpy_dtoh(ctx, src, len, stream, c());
                }
            }
            Request::MemcpyDtoD {
                ctx,
                dst,
                src,
                len,
                stream,
            } => e.memcpy_dtod(ctx, dst, src, len, stream, c()),
            Request::Memset {
                ctx,
                dst,
                value,
                elem_size,
                count,
                stream,
            } => e.memset(ctx, dst, value, elem_size, count, stream, c()),
            Request::Memcpy3D { ctx, copy, stream } => {
                let packed = copy.packed_len();
                match copy.direction() {
                    Copy3DKind::HostToDevice => {
                        if packed != Some(u64::from(h.data_len)) {
                            self.frames.skip(h.data_len)?;
                            self.replies
                                .answer(h.request_id, mode, Err(CuResult::INVALID_VALUE));
                            return Ok(());
                        }
                        let mut buf = match e.staging(h.data_len as usize) {
                            Ok(b) => b,
                            Err(err) => {
                                self.frames.skip(h.data_len)?;
                                self.replies.answer(h.request_id, mode, Err(err));
                                return Ok(());
                            }
                        };
                        self.frames.read_into(buf.as_mut_slice())?;
                        e.memcpy_3d(ctx, copy, Some(buf), stream, c());
                    }
                    Copy3DKind::DeviceToHost
                        if packed.is_none_or(|n| n > u64::from(self.shared.max_data)) =>
                    {
                        self.replies
                            .answer(h.request_id, mode, Err(CuResult::INVALID_VALUE))
                    }
                    _ => e.memcpy_3d(ctx, copy, None, stream, c()),
                }
            }
            Request::ModuleLoad { ctx, parts } => {
                let data = self.frames.read_vec(h.data_len)?;
                match split_parts(data, &parts) {
                    Ok(images) => e.module_load(ctx, images, c()),
                    Err(err) => self.replies.answer(h.request_id, mode, Err(err)),
                }
            }
            Request::ModuleUnload { module } => e.module_unload(module, c()),
            Request::ModuleGetFunction { module, name } => {
                let r = e
                    .module_get_function(module, &name)
                    .map(|f| (Reply::Function(f), None));
                self.replies.answer(h.request_id, mode, r)
            }
            Request::ModuleGetGlobal { module, name } => {
                let r = e
                    .module_get_global(module, &name)
                    .map(|(ptr, size)| (Reply::Global { ptr, size }, None));
                self.replies.answer(h.request_id, mode, r)
            }
            Request::LaunchKernel {
                func,
                grid,
                block,
                shared_mem_bytes,
                stream,
                flags,
            } => {
                if h.data_len > MAX_PARAM_BYTES {
                    // CUDA's parameter space; do not even buffer more.
                    self.frames.skip(h.data_len)?;
                    self.replies
                        .answer(h.request_id, mode, Err(CuResult::INVALID_VALUE));
                    return Ok(());
                }
                let dims = LaunchDims {
                    grid,
                    block,
                    shared_mem_bytes,
                };
                let r = self.frames.with_data(h.data_len, |params| {
                    e.launch(func, dims, params, stream, flags)
                })?;
                if let (Some(m), Ok(())) = (&metrics, &r) {
                    m.launched();
                }
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::FuncSetAttribute { func, attr, value } => {
                let r = e.func_set_attribute(func, attr, value);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::StreamCreate {
                ctx,
                flags,
                priority,
            } => {
                let r = e
                    .stream_create(ctx, flags, priority)
                    .map(|x| (Reply::Handle(x), None));
                self.replies.answer(h.request_id, mode, r)
            }
            Request::StreamDestroy { stream } => {
                let r = e.stream_destroy(stream);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::StreamSynchronize { stream } => e.stream_synchronize(stream, c()),
            Request::StreamQuery { stream } => {
                let r = e.stream_query(stream).and_then(ready);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::StreamWaitEvent { stream, event } => {
                let r = e.stream_wait_event(stream, event);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::EventCreate { ctx, flags } => {
                let r = e.event_create(ctx, flags).map(|x| (Reply::Handle(x), None));
                self.replies.answer(h.request_id, mode, r)
            }
            Request::EventRecord { event, stream } => {
                let r = e.event_record(event, stream);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::EventSynchronize { event } => e.event_synchronize(event, c()),
            Request::EventQuery { event } => {
                let r = e.event_query(event).and_then(ready);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::EventElapsedTime { start, end } => {
                let r = e
                    .event_elapsed_ms(start, end)
                    .map(|ms| (Reply::ElapsedMs(ms), None));
                self.replies.answer(h.request_id, mode, r)
            }
            Request::EventDestroy { event } => {
                let r = e.event_destroy(event);
                self.replies.answer_done(h.request_id, mode, r)
            }
            Request::ConsoleRead { max } => {
                let n = max.min(self.shared.max_data) as usize;
                let out = self.console.take(n);
                self.replies.answer(
                    h.request_id,
                    mode,
                    Ok((Reply::Done, Some(HostBuf::from_vec(out)))),
                )
            }
        }
        Ok(())
    }
}

/// The bytes a request copies if it succeeds, for the transfer metrics.
fn moved(req: &Request, h: &FrameHeader) -> Option<(Direction, u64)> {
    match req {
        Request::MemcpyHtoD { .. } => Some((Direction::HtoD, u64::from(h.data_len))),
        Request::MemcpyDtoH { len, .. } => Some((Direction::DtoH, *len)),
        Request::MemcpyDtoD { len, .. } => Some((Direction::DtoD, *len)),
        Request::Memcpy3D { copy, .. } => {
            let n = copy.packed_len()?;
            match copy.direction() {
                Copy3DKind::HostToDevice => Some((Direction::HtoD, n)),
                Copy3DKind::DeviceToHost => Some((Direction::DtoH, n)),
                Copy3DKind::DeviceToDevice => Some((Direction::DtoD, n)),
                Copy3DKind::HostToHost => None,
            }
        }
        _ => None,
    }
}

fn ready(done: bool) -> Result<(), CuResult> {
    if done {
        Ok(())
    } else {
        Err(CuResult::NOT_READY)
    }
}

/// Splits a `ModuleLoad` data section into its images: `parts` lists their lengths, which
/// must add up to the whole section exactly (empty: one image).
pub fn split_parts(data: Vec<u8>, parts: &[u32]) -> Result<Vec<Vec<u8>>, CuResult> {
    if parts.is_empty() {
        return Ok(vec![data]);
    }
    let total = parts
        .iter()
        .try_fold(0u64, |acc, &p| acc.checked_add(u64::from(p)))
        .ok_or(CuResult::INVALID_VALUE)?;
    if total != data.len() as u64 || parts.contains(&0) {
        return Err(CuResult::INVALID_VALUE);
    }
    let mut out = Vec::with_capacity(parts.len());
    let mut off = 0usize;
    for &p in parts {
        let end = off + p as usize;
        out.push(data[off..end].to_vec());
        off = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_parts_must_cover_the_data_exactly() {
        assert_eq!(split_parts(vec![1, 2, 3], &[]), Ok(vec![vec![1, 2, 3]]));
        assert_eq!(
            split_parts(vec![1, 2, 3], &[1, 2]),
            Ok(vec![vec![1], vec![2, 3]])
        );
        assert_eq!(
            split_parts(vec![1, 2, 3], &[1, 1]),
            Err(CuResult::INVALID_VALUE)
        );
        assert_eq!(
            split_parts(vec![1, 2, 3], &[4]),
            Err(CuResult::INVALID_VALUE)
        );
        assert_eq!(
            split_parts(vec![1, 2, 3], &[u32::MAX, u32::MAX, 5]),
            Err(CuResult::INVALID_VALUE)
        );
        assert_eq!(
            split_parts(vec![1, 2, 3], &[0, 3]),
            Err(CuResult::INVALID_VALUE)
        );
    }
}
