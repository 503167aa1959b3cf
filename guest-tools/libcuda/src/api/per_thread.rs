//! Per-thread default streams (`--default-stream per-thread`, `CU_STREAM_PER_THREAD`, the
//! `_ptsz`/`_ptds` entry points).
//!
//! Each thread gets its own backend stream per context, created on first use with the flags
//! of a blocking stream: it orders with the legacy NULL stream as CUDA defines (the backend
//! keeps blocking streams and the NULL stream in order) but not with other threads' default
//! streams, so threads run concurrently. The per-thread entry points are the base functions
//! with "NULL means this thread's stream" in effect for the call ([`active`]); the streams
//! are destroyed when their thread exits.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_uint, c_void};

use netgpu_proto::wire::ops::{Handle, Request};

use super::graph::InstantiateParams;
use super::memory::{Memcpy2D, Memcpy3D};
use super::module::LaunchConfig;
use super::stream::{HostFn, StreamCallback};
use super::{CUdeviceptr, CUresult, Opaque};
use crate::state;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static STREAMS: RefCell<Streams> = const { RefCell::new(Streams(Vec::new())) };
}

/// This thread's default streams: `(backend context, stream)`.
struct Streams(Vec<(Handle, Handle)>);

impl Drop for Streams {
    fn drop(&mut self) {
        // The thread is exiting: its streams go with it.
        if let Ok(drv) = state::driver() {
            for (_, stream) in self.0.drain(..) {
                let _ = drv.transport.flush();
                let _ = drv.call(&Request::StreamDestroy { stream });
            }
        }
    }
}

/// Whether NULL means the thread's default stream in the call being made.
pub fn active() -> bool {
    ACTIVE.with(Cell::get)
}

/// The calling thread's default stream in the current context (created on first use);
/// the NULL stream when there is no context (the call then fails on its own check).
pub fn stream() -> Handle {
    let Ok(ctx) = state::current() else {
        return 0;
    };
    if let Some(s) = STREAMS.with(|s| s.borrow().0.iter().find(|(c, _)| *c == ctx).map(|e| e.1)) {
        return s;
    }
    let Ok(drv) = state::driver() else {
        return 0;
    };
    let created = drv.handle(&Request::StreamCreate {
        ctx,
        flags: 0,
        priority: 0,
    });
    match created {
        Ok(s) => {
            STREAMS.with(|st| st.borrow_mut().0.push((ctx, s)));
            s
        }
        Err(e) => {
            crate::log(&format!(
                "cannot create this thread's default stream ({}); using the NULL stream",
                e.name()
            ));
            0
        }
    }
}

/// Whether `h` is one of this thread's default streams.
pub fn is_default(h: Handle) -> bool {
    h != 0 && STREAMS.with(|s| s.borrow().0.iter().any(|e| e.1 == h))
}

/// Runs `f` with NULL meaning this thread's default stream.
fn with<T>(f: impl FnOnce() -> T) -> T {
    let was = ACTIVE.with(|a| a.replace(true));
    let r = f();
    ACTIVE.with(|a| a.set(was));
    r
}

/// Per-thread variants: `name => base(args)`, each the base function with [`with`] in effect.
macro_rules! per_thread {
    ($($name:ident => $base:ident ($($a:ident : $t:ty),* $(,)?);)*) => {$(
        /// The per-thread default stream variant of the base function.
        ///
        /// # Safety
        /// As the base function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> CUresult {
            #[allow(unused_unsafe)]
            // SAFETY: the base function's contract, which the caller keeps.
            with(|| unsafe { $base($($a),*) })
        }
    )*};
}

use super::graph::*;
use super::memory::*;
use super::module::*;
use super::pools::*;
use super::stream::*;

per_thread! {
    cuMemcpyHtoD_v2_ptds => cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize);
    cuMemcpyDtoH_v2_ptds => cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize);
    cuMemcpyDtoD_v2_ptds => cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize);
    cuMemcpy_ptds => cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, n: usize);
    cuMemcpy2D_v2_ptds => cuMemcpy2D_v2(p: *const Memcpy2D);
    cuMemcpy2DUnaligned_v2_ptds => cuMemcpy2DUnaligned_v2(p: *const Memcpy2D);
    cuMemcpy3D_v2_ptds => cuMemcpy3D_v2(p: *const Memcpy3D);
    cuMemsetD8_v2_ptds => cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize);
    cuMemsetD16_v2_ptds => cuMemsetD16_v2(dst: CUdeviceptr, v: u16, n: usize);
    cuMemsetD32_v2_ptds => cuMemsetD32_v2(dst: CUdeviceptr, v: u32, n: usize);
    cuMemsetD2D8_v2_ptds => cuMemsetD2D8_v2(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, h: usize);
    cuMemsetD2D16_v2_ptds => cuMemsetD2D16_v2(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, h: usize);
    cuMemsetD2D32_v2_ptds => cuMemsetD2D32_v2(dst: CUdeviceptr, pitch: usize, v: u32, w: usize, h: usize);
    cuMemcpyAsync_ptsz => cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: Opaque);
    cuMemcpyHtoDAsync_v2_ptsz => cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, n: usize, s: Opaque);
    cuMemcpyDtoHAsync_v2_ptsz => cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, n: usize, s: Opaque);
    cuMemcpyDtoDAsync_v2_ptsz => cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: Opaque);
    cuMemcpy2DAsync_v2_ptsz => cuMemcpy2DAsync_v2(p: *const Memcpy2D, s: Opaque);
    cuMemcpy3DAsync_v2_ptsz => cuMemcpy3DAsync_v2(p: *const Memcpy3D, s: Opaque);
    cuMemsetD8Async_ptsz => cuMemsetD8Async(dst: CUdeviceptr, v: u8, n: usize, s: Opaque);
    cuMemsetD16Async_ptsz => cuMemsetD16Async(dst: CUdeviceptr, v: u16, n: usize, s: Opaque);
    cuMemsetD32Async_ptsz => cuMemsetD32Async(dst: CUdeviceptr, v: u32, n: usize, s: Opaque);
    cuMemsetD2D8Async_ptsz => cuMemsetD2D8Async(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, h: usize, s: Opaque);
    cuMemsetD2D16Async_ptsz => cuMemsetD2D16Async(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, h: usize, s: Opaque);
    cuMemsetD2D32Async_ptsz => cuMemsetD2D32Async(dst: CUdeviceptr, pitch: usize, v: u32, w: usize, h: usize, s: Opaque);
    cuMemAllocAsync_ptsz => cuMemAllocAsync(dptr: *mut CUdeviceptr, size: usize, s: Opaque);
    cuMemAllocFromPoolAsync_ptsz => cuMemAllocFromPoolAsync(dptr: *mut CUdeviceptr, size: usize, pool: Opaque, s: Opaque);
    cuMemFreeAsync_ptsz => cuMemFreeAsync(ptr: CUdeviceptr, s: Opaque);
    cuLaunchKernel_ptsz => cuLaunchKernel(f: Opaque, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, smem: c_uint, s: Opaque, params: *mut *mut c_void, extra: *mut *mut c_void);
    cuLaunchCooperativeKernel_ptsz => cuLaunchCooperativeKernel(f: Opaque, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, smem: c_uint, s: Opaque, params: *mut *mut c_void);
    cuLaunchKernelEx_ptsz => cuLaunchKernelEx(config: *const LaunchConfig, f: Opaque, params: *mut *mut c_void, extra: *mut *mut c_void);
    cuLaunchHostFunc_ptsz => cuLaunchHostFunc(s: Opaque, f: HostFn, data: *mut c_void);
    cuLaunchHostFunc_v2_ptsz => cuLaunchHostFunc_v2(s: Opaque, f: HostFn, data: *mut c_void, mode: c_uint);
    cuStreamAddCallback_ptsz => cuStreamAddCallback(s: Opaque, cb: StreamCallback, data: *mut c_void, flags: c_uint);
    cuEventRecord_ptsz => cuEventRecord(event: Opaque, s: Opaque);
    cuEventRecordWithFlags_ptsz => cuEventRecordWithFlags(event: Opaque, s: Opaque, flags: c_uint);
    cuStreamSynchronize_ptsz => cuStreamSynchronize(s: Opaque);
    cuStreamQuery_ptsz => cuStreamQuery(s: Opaque);
    cuStreamWaitEvent_ptsz => cuStreamWaitEvent(s: Opaque, event: Opaque, flags: c_uint);
    cuStreamGetFlags_ptsz => cuStreamGetFlags(s: Opaque, flags: *mut c_uint);
    cuStreamGetPriority_ptsz => cuStreamGetPriority(s: Opaque, priority: *mut c_int);
    cuStreamGetCtx_ptsz => cuStreamGetCtx(s: Opaque, pctx: *mut Opaque);
    cuStreamGetCtx_v2_ptsz => cuStreamGetCtx_v2(s: Opaque, pctx: *mut Opaque, green: *mut Opaque);
    cuStreamGetId_ptsz => cuStreamGetId(s: Opaque, id: *mut u64);
    cuStreamGetDevice_ptsz => cuStreamGetDevice(s: Opaque, device: *mut c_int);
    cuStreamIsCapturing_ptsz => cuStreamIsCapturing(s: Opaque, status: *mut c_int);
    cuStreamGetCaptureInfo_ptsz => cuStreamGetCaptureInfo(s: Opaque, status: *mut c_int, id: *mut u64);
    cuStreamGetCaptureInfo_v2_ptsz => cuStreamGetCaptureInfo_v2(s: Opaque, status: *mut c_int, id: *mut u64, graph: *mut Opaque, deps: *mut *const Opaque, num: *mut usize);
    cuStreamGetCaptureInfo_v3_ptsz => cuStreamGetCaptureInfo_v3(s: Opaque, status: *mut c_int, id: *mut u64, graph: *mut Opaque, deps: *mut *const Opaque, edges: *mut *const c_void, num: *mut usize);
    cuStreamBeginCapture_ptsz => cuStreamBeginCapture(s: Opaque);
    cuStreamBeginCapture_v2_ptsz => cuStreamBeginCapture_v2(s: Opaque, mode: c_int);
    cuStreamEndCapture_ptsz => cuStreamEndCapture(s: Opaque, graph: *mut Opaque);
    cuGraphLaunch_ptsz => cuGraphLaunch(exec: Opaque, s: Opaque);
    cuGraphUpload_ptsz => cuGraphUpload(exec: Opaque, s: Opaque);
    cuGraphInstantiateWithParams_ptsz => cuGraphInstantiateWithParams(exec: *mut Opaque, g: Opaque, params: *mut InstantiateParams);
}

#[cfg(test)]
mod tests {
    use super::super::stream_of;
    use super::*;

    #[test]
    fn null_means_the_threads_stream_only_inside_a_per_thread_call() {
        assert!(!active());
        assert_eq!(stream_of(std::ptr::null_mut()), 0);
        assert_eq!(
            stream_of(1 as Opaque),
            0,
            "CU_STREAM_LEGACY is the NULL stream"
        );
        assert_eq!(stream_of(0x5000 as Opaque), 0x5000);
        with(|| {
            assert!(active());
            with(|| assert!(active()));
            assert!(active(), "nested calls restore the flag");
        });
        assert!(!active());
        assert!(!is_default(0));
    }
}
