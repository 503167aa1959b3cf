//! Explicit contexts and the per-thread current-context stack.

use std::ffi::c_uint;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::Request;

use super::{guard, handle_of, opaque, put, CUdevice, CUresult, Opaque};
use crate::state;

/// # Safety
/// `pctx` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(pctx: *mut Opaque, flags: c_uint, d: CUdevice) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        if d != 0 {
            return Err(CuResult::INVALID_DEVICE);
        }
        if pctx.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let h = drv.ctx_create(flags)?;
        state::push(h);
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(pctx, opaque(h)) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxDestroy_v2(ctx: Opaque) -> CUresult {
    guard(|| state::driver()?.ctx_destroy(handle_of(ctx)))
}

#[no_mangle]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let h = handle_of(ctx);
        if !drv.is_context(h) {
            return Err(CuResult::INVALID_CONTEXT);
        }
        state::push(h);
        Ok(())
    })
}

/// # Safety
/// `pctx` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut Opaque) -> CUresult {
    guard(|| {
        state::driver()?;
        let h = state::pop().ok_or(CuResult::INVALID_CONTEXT)?;
        if !pctx.is_null() {
            // SAFETY: the caller's out-pointer, non-NULL.
            unsafe { put(pctx, opaque(h))? };
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let h = handle_of(ctx);
        if h != 0 && !drv.is_context(h) {
            return Err(CuResult::INVALID_CONTEXT);
        }
        state::set_current(h);
        Ok(())
    })
}

/// # Safety
/// `pctx` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut Opaque) -> CUresult {
    guard(|| {
        state::driver()?;
        let h = state::current().unwrap_or(0);
        // SAFETY: the caller's out-pointer.
        unsafe { put(pctx, opaque(h)) }
    })
}

/// # Safety
/// `device` must be NULL or valid for writing a CUdevice.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    guard(|| {
        state::current()?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, 0) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    guard(|| {
        let ctx = state::current()?;
        state::driver()?
            .call(&Request::CtxSynchronize { ctx })
            .map(|_| ())
    })
}

/// # Safety
/// `version` must be NULL or valid for writing an unsigned int.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(ctx: Opaque, version: *mut c_uint) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let h = if ctx.is_null() {
            state::current()?
        } else {
            handle_of(ctx)
        };
        if !drv.is_context(h) {
            return Err(CuResult::INVALID_CONTEXT);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(version, 12090) }
    })
}
