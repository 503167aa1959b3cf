//! Executors: where forwarded CUDA work actually runs.
//!
//! An [`Executor`] is created once per backend process and describes the device it serves.
//! Every session opens its own [`Engine`] from it: the engine owns that session's contexts,
//! memory, modules, streams and events, enforces its limits, and frees everything when
//! dropped. Handles are engine-local, so a handle from one session means nothing in another.
//!
//! Engines never block their caller (the session's dispatcher). Work that takes time (stream
//! work, synchronisation, releases that must wait for running work) completes through a
//! [`Completion`], called from whatever thread finishes it; see `docs/backend.md` for the
//! ordering rules both executors implement.
//!
//! - [`cpu`]: device memory in host memory, kernels run by the PTX interpreter.
//! - [`cuda`]: a physical GPU through the CUDA driver API (cudarc, loaded at run time).
//! - [`limits`]: the driver's validation rules both executors apply.
//! - [`blocking`]: a blocking facade over an engine, for tests and tools.

pub mod blocking;
pub mod budget;
pub mod completion;
pub mod console;
pub mod cpu;
pub mod cuda;
mod handles;
pub mod limits;
pub mod pool;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

pub use completion::{Completion, HostBuf, Mode, Output, Sink};
pub use console::Console;
pub use handles::HandleTable;
pub use limits::LaunchDims;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Copy3D, DevPtr, DeviceInfo, FunctionInfo, Handle};

pub type ExecResult<T> = Result<T, CuResult>;

/// What a session gives its engine.
#[derive(Clone)]
pub struct SessionSetup {
    /// Device memory the session may hold, in bytes (already the stricter of the backend's
    /// and the client's limits).
    pub quota: u64,
    /// Longest a kernel may run; past it the launch fails with `LAUNCH_TIMEOUT`.
    pub kernel_time_limit: Option<Duration>,
    /// The tenant's memory pool, shared by all its sessions (`crate::tenant`), when its
    /// `memory_quota` is set: every allocation is charged to it too.
    pub tenant_memory: Option<Arc<budget::MemoryPool>>,
    /// Where completions and deferred failures go.
    pub sink: Arc<dyn Sink>,
    /// Where device-side `printf` output goes.
    pub console: Arc<Console>,
}

pub trait Executor: Send + Sync + 'static {
    fn device_info(&self) -> &DeviceInfo;
    /// Opens an isolated engine for one session.
    fn open(&self, setup: SessionSetup) -> ExecResult<Box<dyn Engine>>;
}

/// Where the session reads a host-to-device copy's bytes.
pub enum HtodTarget {
    /// Straight into device memory: the copy is complete (and ordered) once the buffer is
    /// filled and dropped.
    Direct(HostBuf),
    /// Into a staging buffer, which the session then hands to [`Engine::memcpy_htod`].
    Staged(HostBuf),
}

/// One session's device. Calls come from the session's dispatcher thread, in request order.
///
/// Stream handle 0 is the context's legacy null stream; for requests that name no context
/// (`StreamSynchronize`, `StreamQuery`) it means the null streams of all the session's
/// contexts. Methods without a [`Completion`] answer at once; methods with one return at once
/// too and call it exactly once when the work is done (at once for a validation error).
/// Stream-ordered methods without a completion (`launch`, `event_record`, ...) report
/// failures found when the work runs through [`Sink::deferred`].
pub trait Engine: Send {
    fn ctx_create(&mut self, flags: u32) -> ExecResult<Handle>;
    /// Completes once the context's queued work has finished and everything it held is freed.
    fn ctx_destroy(&mut self, ctx: Handle, done: Completion);
    fn ctx_synchronize(&mut self, ctx: Handle, done: Completion);

    /// Completes with [`Output::DevPtr`].
    fn mem_alloc(&mut self, ctx: Handle, size: u64, done: Completion);
    /// `cuMemFree`: the address is invalid for new work at once; the memory is released (and
    /// the call completes) when the context's earlier work has finished.
    fn mem_free(&mut self, ptr: DevPtr, done: Completion);
    /// `cuMemFreeAsync`: freed once earlier work on `stream` (and anything else that may still
    /// use it) has finished; the call itself completes at once.
    fn mem_free_async(&mut self, ptr: DevPtr, stream: Handle) -> ExecResult<()>;
    /// `(free, total)` for this session: its quota minus what it holds, and its quota.
    fn mem_info(&self) -> (u64, u64);

    /// Validates a host-to-device copy of `len` bytes and says where to read its bytes.
    fn htod_target(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<HtodTarget>;
    fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: HostBuf,
        stream: Handle,
        done: Completion,
    );
    /// Completes with [`Output::Data`] of `len` bytes.
    fn memcpy_dtoh(&mut self, ctx: Handle, src: DevPtr, len: u64, stream: Handle, done: Completion);
    fn memcpy_dtod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
        done: Completion,
    );
    #[allow(clippy::too_many_arguments)]
    fn memset(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
        done: Completion,
    );
    /// A buffer of `len` bytes for host data the session receives (a 3D copy's source).
    fn staging(&mut self, len: usize) -> ExecResult<HostBuf>;
    /// A pitched copy; `host` holds the packed host side of a host-to-device copy. A
    /// device-to-host copy completes with [`Output::Data`].
    fn memcpy_3d(
        &mut self,
        ctx: Handle,
        copy: Copy3D,
        host: Option<HostBuf>,
        stream: Handle,
        done: Completion,
    );

    /// Loads a module from one image or several to link (completes with
    /// [`Output::Handle`]).
    fn module_load(&mut self, ctx: Handle, images: Vec<Vec<u8>>, done: Completion);
    fn module_unload(&mut self, module: Handle, done: Completion);
    fn module_get_function(&mut self, module: Handle, name: &str) -> ExecResult<FunctionInfo>;
    fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)>;
    fn func_set_attribute(&mut self, func: Handle, attr: u32, value: i32) -> ExecResult<()>;
    /// Validates and queues a launch (`flags`: `LAUNCH_*`). `params` is borrowed (the
    /// dispatcher's read buffer): an engine copies it only for a launch it queues.
    fn launch(
        &mut self,
        func: Handle,
        dims: LaunchDims,
        params: &[u8],
        stream: Handle,
        flags: u32,
    ) -> ExecResult<()>;

    /// `priority` is clamped to the executor's range (see `docs/backend.md`).
    fn stream_create(&mut self, ctx: Handle, flags: u32, priority: i32) -> ExecResult<Handle>;
    /// Queued work still runs; the handle is gone at once.
    fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()>;
    fn stream_synchronize(&mut self, stream: Handle, done: Completion);
    /// `Ok(true)` when all work on the stream is done.
    fn stream_query(&mut self, stream: Handle) -> ExecResult<bool>;
    fn stream_wait_event(&mut self, stream: Handle, event: Handle) -> ExecResult<()>;

    fn event_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle>;
    fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()>;
    fn event_synchronize(&mut self, event: Handle, done: Completion);
    fn event_query(&mut self, event: Handle) -> ExecResult<bool>;
    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32>;
    fn event_destroy(&mut self, event: Handle) -> ExecResult<()>;

    /// Starts work queued since the last call. The session calls it whenever it is about to
    /// wait for input, so a pipelined burst of requests is handed over in one go.
    fn flush(&mut self);
    /// The session is ending: cancels queued and running work, waits up to `grace` for work
    /// that is still running to stop, and returns; dropping the engine frees the rest.
    fn shutdown(&mut self, grace: Duration);
    /// Work items queued or running (see [`streams::BACKLOG_LIMIT`]).
    fn backlog(&self) -> usize;
    /// Waits up to `timeout` until fewer than `below` items are queued or running; true if
    /// so. The caller has flushed, so that the queued work runs.
    fn wait_backlog(&self, below: usize, timeout: Duration) -> bool;
}

/// Validates a `cuMemsetD8/16/32` request: the element size is 1, 2 or 4 bytes and `dst` is
/// aligned to it. Returns the byte length.
pub fn memset_len(dst: DevPtr, elem_size: u8, count: u64) -> ExecResult<u64> {
    let es = u64::from(elem_size);
    if !matches!(elem_size, 1 | 2 | 4) || dst % es != 0 {
        return Err(CuResult::INVALID_VALUE);
    }
    count.checked_mul(es).ok_or(CuResult::INVALID_VALUE)
}
