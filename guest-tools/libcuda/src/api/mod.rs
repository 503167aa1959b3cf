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
pub mod link;
pub mod memory;
pub mod module;
pub mod occupancy;
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
pub fn guard(f: impl FnOnce() -> R) -> CUresult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.0,
        Err(_) => CuResult::UNKNOWN.0,
    }
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

/// A stream argument: NULL and the special legacy/per-thread streams are the null stream.
pub fn stream_of(p: Opaque) -> Handle {
    match p as usize {
        0..=2 => 0,
        h => h as Handle,
    }
}

/// The context a stream-taking call acts on: the current context.
pub fn ctx() -> Result<Handle, CuResult> {
    crate::state::current()
}
