//! Initialisation, the driver version, and device queries. A netgpu device is CUDA device 0;
//! its properties come from the backend's record, read once by `cuInit`.

use std::ffi::{c_char, c_int, c_uint};

use netgpu_proto::cuda::{attr, CuResult};

use super::{guard, put, CUdevice, CUresult, R};
use crate::state;

/// The CUDA driver API version this library implements.
pub const DRIVER_VERSION: c_int = 12090;

fn dev(d: CUdevice) -> R {
    state::driver()?;
    if d == 0 {
        Ok(())
    } else {
        Err(CuResult::INVALID_DEVICE)
    }
}

#[no_mangle]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    guard(|| {
        if flags != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        state::init().map(|_| ())
    })
}

/// # Safety
/// `v` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CUresult {
    // SAFETY: the caller's out-pointer.
    guard(|| unsafe { put(v, DRIVER_VERSION) })
}

/// # Safety
/// `device` must be NULL or valid for writing a CUdevice.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    guard(|| {
        dev(ordinal)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, 0) }
    })
}

/// # Safety
/// `count` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    guard(|| {
        state::driver()?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(count, 1) }
    })
}

/// # Safety
/// `name` must be valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, d: CUdevice) -> CUresult {
    guard(|| {
        dev(d)?;
        if name.is_null() || len <= 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let s = state::driver()?.info.name.as_bytes();
        let n = s.len().min(len as usize - 1);
        // SAFETY: the caller provides `len` writable bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), name.cast::<u8>(), n);
            *name.add(n) = 0;
        }
        Ok(())
    })
}

/// # Safety
/// `uuid` must be NULL or valid for writing 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], d: CUdevice) -> CUresult {
    guard(|| {
        dev(d)?;
        // SAFETY: the caller's out-pointer (CUuuid is 16 bytes).
        unsafe { put(uuid, state::driver()?.info.uuid) }
    })
}

/// # Safety
/// As [`cuDeviceGetUuid`].
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], d: CUdevice) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuDeviceGetUuid(uuid, d) }
}

/// # Safety
/// `bytes` must be NULL or valid for writing a size_t.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, d: CUdevice) -> CUresult {
    guard(|| {
        dev(d)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(bytes, state::driver()?.info.total_mem as usize) }
    })
}

/// # Safety
/// `pi` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attrib: c_int,
    d: CUdevice,
) -> CUresult {
    guard(|| {
        dev(d)?;
        let info = &state::driver()?.info;
        let v = match info.attribute(attrib as u32) {
            Some(v) => v,
            None if attrib as u32 == attr::COMPUTE_CAPABILITY_MAJOR => info.cc_major as i32,
            None if attrib as u32 == attr::COMPUTE_CAPABILITY_MINOR => info.cc_minor as i32,
            None if attrib as u32 == attr::MULTIPROCESSOR_COUNT => info.multiprocessors as i32,
            // An attribute the remote device did not report: 0, as drivers do for features
            // a device lacks.
            None if (1..=200).contains(&attrib) => 0,
            None => return Err(CuResult::INVALID_VALUE),
        };
        // SAFETY: the caller's out-pointer.
        unsafe { put(pi, v) }
    })
}

/// # Safety
/// `major` and `minor` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    d: CUdevice,
) -> CUresult {
    guard(|| {
        dev(d)?;
        let info = &state::driver()?.info;
        // SAFETY: the caller's out-pointers.
        unsafe {
            put(major, info.cc_major as c_int)?;
            put(minor, info.cc_minor as c_int)
        }
    })
}

/// # Safety
/// `pctx` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(
    pctx: *mut super::Opaque,
    d: CUdevice,
) -> CUresult {
    guard(|| {
        dev(d)?;
        if pctx.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let h = state::driver()?.primary_retain()?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(pctx, super::opaque(h)) }
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(d: CUdevice) -> CUresult {
    guard(|| {
        dev(d)?;
        state::driver()?.primary_release()
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(d: CUdevice) -> CUresult {
    guard(|| {
        dev(d)?;
        state::driver()?.primary_reset()
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(d: CUdevice, flags: c_uint) -> CUresult {
    guard(|| {
        dev(d)?;
        state::driver()?.primary_set_flags(flags);
        Ok(())
    })
}

/// # Safety
/// `flags` and `active` must be NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    d: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    guard(|| {
        dev(d)?;
        let (f, a) = state::driver()?.primary_state();
        // SAFETY: the caller's out-pointers.
        unsafe {
            put(flags, f)?;
            put(active, c_int::from(a))
        }
    })
}
