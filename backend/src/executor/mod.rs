//! Executors: where forwarded CUDA work actually runs.
//!
//! An [`Executor`] is created once per backend process and describes the device it serves.
//! Every session opens its own [`Engine`] from it: the engine owns that session's contexts,
//! memory, modules, streams and events, enforces its memory quota, and frees everything when
//! dropped. Handles are engine-local, so a handle from one session means nothing in another.
//!
//! - [`cpu`]: device memory in host memory, kernels run by the PTX interpreter.
//! - [`cuda`]: a physical GPU through the CUDA driver API (cudarc, loaded at run time).

pub mod cpu;
pub mod cuda;
mod handles;

pub use handles::HandleTable;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DevPtr, DeviceInfo, Handle, ParamInfo};

pub type ExecResult<T> = Result<T, CuResult>;

/// Geometry of a kernel launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

pub trait Executor: Send + Sync + 'static {
    fn device_info(&self) -> &DeviceInfo;
    /// Opens an isolated engine for one session, with a device-memory quota in bytes.
    fn open(&self, quota: u64) -> ExecResult<Box<dyn Engine>>;
}

/// One session's device. Calls come from the session's thread, in request order.
///
/// Stream and event handles of 0 mean the context's null stream and "none". Stream-ordered
/// calls (`*_on` with a stream) may return before the work is done; errors of such work
/// surface at the next synchronising call, as in CUDA.
pub trait Engine: Send {
    fn ctx_create(&mut self, flags: u32) -> ExecResult<Handle>;
    fn ctx_destroy(&mut self, ctx: Handle) -> ExecResult<()>;
    fn ctx_synchronize(&mut self, ctx: Handle) -> ExecResult<()>;

    fn mem_alloc(&mut self, ctx: Handle, size: u64) -> ExecResult<DevPtr>;
    fn mem_free(&mut self, ptr: DevPtr) -> ExecResult<()>;
    /// `(free, total)` for this session: its quota minus what it holds, and its quota.
    fn mem_info(&self) -> (u64, u64);

    /// Zero-copy path: the device bytes `[ptr, ptr+len)` as host memory, when device memory
    /// is host memory and the whole range lies in one allocation of this session.
    fn host_view_mut(&mut self, ctx: Handle, ptr: DevPtr, len: u64) -> Option<&mut [u8]>;
    fn host_view(&mut self, ctx: Handle, ptr: DevPtr, len: u64) -> Option<&[u8]>;

    fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: &[u8],
        stream: Handle,
    ) -> ExecResult<()>;
    fn memcpy_dtoh(
        &mut self,
        ctx: Handle,
        dst: &mut [u8],
        src: DevPtr,
        stream: Handle,
    ) -> ExecResult<()>;
    fn memcpy_dtod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<()>;
    fn memset(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
    ) -> ExecResult<()>;

    fn module_load(&mut self, ctx: Handle, image: &[u8]) -> ExecResult<Handle>;
    fn module_unload(&mut self, module: Handle) -> ExecResult<()>;
    fn module_get_function(
        &mut self,
        module: Handle,
        name: &str,
    ) -> ExecResult<(Handle, Vec<ParamInfo>)>;
    fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)>;
    fn launch(
        &mut self,
        func: Handle,
        dims: LaunchDims,
        params: &[u8],
        stream: Handle,
    ) -> ExecResult<()>;

    fn stream_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle>;
    fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()>;
    fn stream_synchronize(&mut self, stream: Handle) -> ExecResult<()>;
    /// `Ok(true)` when all work on the stream is done.
    fn stream_query(&mut self, stream: Handle) -> ExecResult<bool>;

    fn event_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle>;
    fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()>;
    fn event_synchronize(&mut self, event: Handle) -> ExecResult<()>;
    fn event_query(&mut self, event: Handle) -> ExecResult<bool>;
    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32>;
    fn event_destroy(&mut self, event: Handle) -> ExecResult<()>;
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

/// Checks a launch's geometry against the limits every executor shares.
pub fn check_launch_dims(dims: &LaunchDims, max_threads: u32, max_shared: u32) -> ExecResult<()> {
    let threads = dims.block.iter().try_fold(1u64, |acc, &d| {
        if d == 0 {
            None
        } else {
            Some(acc * u64::from(d))
        }
    });
    if dims.grid.contains(&0)
        || dims.block[2] > 64
        || dims.grid[1] > 65_535
        || dims.grid[2] > 65_535
    {
        return Err(CuResult::INVALID_VALUE);
    }
    match threads {
        Some(t) if t <= u64::from(max_threads) => {}
        _ => return Err(CuResult::INVALID_VALUE),
    }
    if dims.shared_mem_bytes > max_shared {
        return Err(CuResult::INVALID_VALUE);
    }
    Ok(())
}
