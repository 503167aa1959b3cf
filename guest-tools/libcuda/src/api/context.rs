//! Contexts: explicit ones, the per-thread current-context stack, and per-context settings.

use std::ffi::{c_int, c_uint, c_ulonglong};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::Request;

use super::{guard, handle_of, opaque, put, CUdevice, CUresult, Opaque, R};
use crate::state::{self, lock};

/// The API version every context reports (contexts of the `_v2` API, CUDA 3.2 on).
const CTX_API_VERSION: c_uint = 3020;

/// The context a call names: NULL is the current one.
fn ctx_arg(ctx: Opaque) -> Result<std::sync::Arc<state::Context>, CuResult> {
    let drv = state::driver()?;
    if ctx.is_null() {
        state::current_context()
    } else {
        drv.context(handle_of(ctx))
    }
}

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
        let c = drv.ctx_create(flags)?;
        let id = c.id;
        state::push(c);
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(pctx, opaque(id)) }
    })
}

/// `cuCtxCreate_v4` (CUDA 12.5 on): execution-affinity and CIG parameters are refused.
///
/// # Safety
/// As [`cuCtxCreate_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut Opaque,
    params: *const std::ffi::c_void,
    flags: c_uint,
    d: CUdevice,
) -> CUresult {
    if !params.is_null() {
        return state::unsupported("cuCtxCreate_v4 (CUctxCreateParams)").0;
    }
    // SAFETY: same contract.
    unsafe { cuCtxCreate_v2(pctx, flags, d) }
}

/// `cuCtxCreate_v3` (CUDA 11.4): execution affinity is refused.
///
/// # Safety
/// As [`cuCtxCreate_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v3(
    pctx: *mut Opaque,
    params: *const std::ffi::c_void,
    num_params: c_int,
    flags: c_uint,
    d: CUdevice,
) -> CUresult {
    if !params.is_null() && num_params > 0 {
        return state::unsupported("cuCtxCreate_v3 (execution affinity)").0;
    }
    // SAFETY: same contract.
    unsafe { cuCtxCreate_v2(pctx, flags, d) }
}

#[no_mangle]
pub extern "C" fn cuCtxDestroy_v2(ctx: Opaque) -> CUresult {
    guard(|| state::driver()?.ctx_destroy(handle_of(ctx)))
}

#[no_mangle]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: Opaque) -> CUresult {
    guard(|| {
        let c = state::driver()?.context(handle_of(ctx))?;
        state::push(c);
        Ok(())
    })
}

/// # Safety
/// `pctx` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut Opaque) -> CUresult {
    guard(|| {
        state::driver()?;
        let c = state::pop().ok_or(CuResult::INVALID_CONTEXT)?;
        if !pctx.is_null() {
            // SAFETY: the caller's out-pointer, non-NULL.
            unsafe { put(pctx, opaque(c.id))? };
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let c = if ctx.is_null() {
            None
        } else {
            Some(drv.context(handle_of(ctx))?)
        };
        state::set_current(c);
        Ok(())
    })
}

/// # Safety
/// `pctx` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut Opaque) -> CUresult {
    guard(|| {
        state::driver()?;
        let id = state::current_context().map(|c| c.id).unwrap_or(0);
        // SAFETY: the caller's out-pointer.
        unsafe { put(pctx, opaque(id)) }
    })
}

/// # Safety
/// `device` must be NULL or valid for writing a CUdevice.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    guard(|| {
        state::current_context()?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, 0) }
    })
}

/// `cuCtxGetDevice_v2` (CUDA 13): the device of `ctx` (NULL: the current context).
///
/// # Safety
/// `device` must be NULL or valid for writing a CUdevice.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice_v2(device: *mut CUdevice, ctx: Opaque) -> CUresult {
    guard(|| {
        ctx_arg(ctx)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, 0) }
    })
}

fn synchronize(ctx: Opaque) -> R {
    let drv = state::driver()?;
    let ctx = ctx_arg(ctx)?.backend(drv)?;
    drv.call(&Request::CtxSynchronize { ctx }).map(|_| ())
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    guard(|| synchronize(std::ptr::null_mut()))
}

/// `cuCtxSynchronize_v2` (CUDA 13): synchronises `ctx` (NULL: the current context).
#[no_mangle]
pub extern "C" fn cuCtxSynchronize_v2(ctx: Opaque) -> CUresult {
    guard(|| synchronize(ctx))
}

/// # Safety
/// `version` must be NULL or valid for writing an unsigned int.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(ctx: Opaque, version: *mut c_uint) -> CUresult {
    guard(|| {
        ctx_arg(ctx)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(version, CTX_API_VERSION) }
    })
}

/// # Safety
/// `flags` must be NULL or valid for writing an unsigned int.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    guard(|| {
        let c = state::current_context()?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(flags, c.flags()) }
    })
}

/// # Safety
/// `id` must be NULL or valid for writing an unsigned long long.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetId(ctx: Opaque, id: *mut c_ulonglong) -> CUresult {
    guard(|| {
        let c = ctx_arg(ctx)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(id, c.id) }
    })
}

/// `CUlimit` values a program can read back. The CPU executor has no fixed stack, printf
/// buffer or device heap, so any requested size is honoured; the CUDA executor's GPU sets
/// its own (see docs/libcuda.md).
static LIMITS: std::sync::Mutex<[usize; 8]> =
    std::sync::Mutex::new([1024, 1 << 20, 8 << 20, 2, 2048, 0, 0, 0]);

/// # Safety
/// `value` must be NULL or valid for writing a size_t.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetLimit(value: *mut usize, limit: c_int) -> CUresult {
    guard(|| {
        state::current_context()?;
        let v = *lock(&LIMITS)
            .get(limit as usize)
            .ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(value, v) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetLimit(limit: c_int, value: usize) -> CUresult {
    guard(|| {
        state::current_context()?;
        let mut l = lock(&LIMITS);
        *l.get_mut(limit as usize).ok_or(CuResult::INVALID_VALUE)? = value;
        Ok(())
    })
}

/// Stream priorities: 0 is the lowest (and default), -5 the highest, as on NVIDIA GPUs; the
/// backend orders ready work by them.
pub const LEAST_PRIORITY: c_int = 0;
pub const GREATEST_PRIORITY: c_int = -5;

/// # Safety
/// Both pointers NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> CUresult {
    guard(|| {
        state::current_context()?;
        // SAFETY: the caller's out-pointers, each optional.
        unsafe {
            if !least.is_null() {
                put(least, LEAST_PRIORITY)?;
            }
            if !greatest.is_null() {
                put(greatest, GREATEST_PRIORITY)?;
            }
        }
        Ok(())
    })
}

/// Cache and shared-memory bank preferences are hints in CUDA; the executors have one
/// configuration, which is what these report.
///
/// # Safety
/// `config` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCacheConfig(config: *mut c_int) -> CUresult {
    guard(|| {
        state::current_context()?;
        // SAFETY: the caller's out-pointer (CU_FUNC_CACHE_PREFER_NONE).
        unsafe { put(config, 0) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetCacheConfig(config: c_int) -> CUresult {
    guard(|| {
        state::current_context()?;
        if !(0..=3).contains(&config) {
            return Err(CuResult::INVALID_VALUE);
        }
        Ok(())
    })
}

/// # Safety
/// `config` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetSharedMemConfig(config: *mut c_int) -> CUresult {
    guard(|| {
        state::current_context()?;
        // SAFETY: the caller's out-pointer (CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE).
        unsafe { put(config, 1) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetSharedMemConfig(config: c_int) -> CUresult {
    guard(|| {
        state::current_context()?;
        if !(0..=2).contains(&config) {
            return Err(CuResult::INVALID_VALUE);
        }
        Ok(())
    })
}
