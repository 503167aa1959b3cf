//! The exported CUDA driver API. Names are the symbols `cuda.h` (12.x) binds to: versioned
//! ones (`cuMemAlloc_v2`, ...) where the header maps a name to a version.
//!
//! Conventions: every function returns a `CUresult`, runs inside [`guard`] (a panic becomes
//! `CUDA_ERROR_UNKNOWN` instead of unwinding into C), and checks each out-pointer before
//! writing through it (`CUDA_ERROR_INVALID_VALUE` for NULL).

#[rustfmt::skip]
pub mod abi_versions;
pub mod context;
pub mod device;
pub mod errors;
pub mod graph;
pub mod link;
pub mod memory;
pub mod module;
pub mod occupancy;
pub mod optional;
pub mod per_thread;
pub mod pools;
pub mod proc;
pub mod stream;

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::Handle;

/// `CUresult` as C sees it.
pub type CUresult = u32;
pub type CUdevice = i32;
pub type CUdeviceptr = u64;
/// `CUcontext`, `CUmodule`, `CUfunction`, `CUstream`, `CUevent`: backend handles as opaque
/// pointer values.
pub type Opaque = *mut c_void;

pub type R = Result<(), CuResult>;

/// Runs an API body: maps its result to a `CUresult` and stops any panic at the C boundary.
/// With `NETGPU_TRACE_ERRORS=1` every failing call is logged with the place in this library
/// that answered it (for finding which call a program's error came from).
#[track_caller]
pub fn guard(f: impl FnOnce() -> R) -> CUresult {
    let r = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e,
        Err(_) => CuResult::UNKNOWN,
    };
    if trace_errors() {
        let at = std::panic::Location::caller();
        crate::log(&format!("{} at {}:{}", r.name(), at.file(), at.line()));
    }
    r.0
}

fn trace_errors() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("NETGPU_TRACE_ERRORS").is_some_and(|v| v != "0"))
}

/// Writes `v` through a caller's out-pointer.
///
/// # Safety
/// `p` must be NULL or valid for a write of `T`.
pub unsafe fn put<T>(p: *mut T, v: T) -> R {
    if p.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: non-NULL, and the caller guarantees validity (the C API contract).
    unsafe { p.write_unaligned(v) };
    Ok(())
}

pub fn handle_of(p: Opaque) -> Handle {
    p as usize as Handle
}

pub fn opaque(h: Handle) -> Opaque {
    h as usize as Opaque
}

/// A stream argument: `CU_STREAM_LEGACY` (1) is the NULL stream; `CU_STREAM_PER_THREAD` (2) is
/// the calling thread's default stream, and so is NULL inside a per-thread (`_ptsz`/`_ptds`)
/// entry point; NULL otherwise is the NULL stream.
pub fn stream_of(p: Opaque) -> Handle {
    match p as usize {
        0 if !per_thread::active() => 0,
        1 => 0,
        0 | 2 => per_thread::stream(),
        h => h as Handle,
    }
}

/// The stream a synchronous call without a stream argument runs on: the NULL stream, or the
/// thread's default stream inside a per-thread entry point.
pub fn default_stream() -> Handle {
    stream_of(std::ptr::null_mut())
}

/// The context a stream-taking call acts on: the current context.
pub fn ctx() -> Result<Handle, CuResult> {
    crate::state::current()
}
