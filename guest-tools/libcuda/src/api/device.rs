//! Initialisation, the driver version, and device queries. A netgpu device is CUDA device 0;
//! its properties come from the backend's record, read once by `cuInit`.

use std::ffi::{c_char, c_int, c_uint};

use netgpu_proto::cuda::{attr, CuResult};

use super::{guard, put, CUdevice, CUresult, R};
use crate::state;

/// The CUDA driver API version this library implements and reports: CUDA 13.5's, so both
/// cudart 12.x (needs >= 12000) and 13.x (needs >= 13000) accept it, and cudart 13.5 resolves
/// every entry point it knows.
pub const DRIVER_VERSION: c_int = 13050;

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
        let v = attribute(&state::driver()?.info, attrib)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(pi, v) }
    })
}

/// `CU_DEVICE_ATTRIBUTE_*` numbers this library answers itself, whatever the backend says:
/// what the guest library provides (unified addressing through its address-space
/// reservations) or does not (mapped host memory, managed memory).
const UNIFIED_ADDRESSING: u32 = 41;
const CAN_MAP_HOST_MEMORY: u32 = 19;
const MANAGED_MEMORY: u32 = 83;
const CONCURRENT_MANAGED_ACCESS: u32 = 89;
const PAGEABLE_MEMORY_ACCESS: u32 = 88;
const CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: u32 = 91;
const MEMORY_POOLS_SUPPORTED: u32 = 115;
pub const PCI_DOMAIN_ID: u32 = 50;
/// Highest attribute number of CUDA 13.5 (`CU_DEVICE_ATTRIBUTE_MAX` - 1).
const LAST_ATTRIBUTE: c_int = 150;

/// The value of device attribute `attrib`: the backend's record, or 0 for a feature the
/// remote device did not report (as drivers report features a device lacks). cudart asks for
/// every attribute at initialisation and fails on any error, so only numbers outside the
/// enum are refused.
pub fn attribute(
    info: &netgpu_proto::wire::ops::DeviceInfo,
    attrib: c_int,
) -> Result<c_int, CuResult> {
    let a = attrib as u32;
    Ok(match a {
        UNIFIED_ADDRESSING => 1,
        MEMORY_POOLS_SUPPORTED => 1,
        CAN_MAP_HOST_MEMORY
        | MANAGED_MEMORY
        | CONCURRENT_MANAGED_ACCESS
        | PAGEABLE_MEMORY_ACCESS
        | CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM => 0,
        _ => match info.attribute(a) {
            Some(v) => v,
            None if a == attr::COMPUTE_CAPABILITY_MAJOR => info.cc_major as i32,
            None if a == attr::COMPUTE_CAPABILITY_MINOR => info.cc_minor as i32,
            None if a == attr::MULTIPROCESSOR_COUNT => info.multiprocessors as i32,
            None if (1..=LAST_ATTRIBUTE).contains(&attrib) => 0,
            None => return Err(CuResult::INVALID_VALUE),
        },
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
        let c = state::driver()?.primary_retain()?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(pctx, super::opaque(c.id)) }
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

/// # Safety
/// `bus_id` must be valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetPCIBusId(
    bus_id: *mut c_char,
    len: c_int,
    d: CUdevice,
) -> CUresult {
    guard(|| {
        dev(d)?;
        if bus_id.is_null() || len <= 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let info = &state::driver()?.info;
        let s = pci_bus_id(info);
        let n = s.len().min(len as usize - 1);
        // SAFETY: the caller provides `len` writable bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), bus_id.cast::<u8>(), n);
            *bus_id.add(n) = 0;
        }
        Ok(())
    })
}

/// `domain:bus:device.0`, from the attributes the API reports.
fn pci_bus_id(info: &netgpu_proto::wire::ops::DeviceInfo) -> String {
    let a = |n: u32| attribute(info, n as c_int).unwrap_or(0);
    format!(
        "{:08X}:{:02X}:{:02X}.0",
        a(PCI_DOMAIN_ID),
        a(attr::PCI_BUS_ID),
        a(attr::PCI_DEVICE_ID)
    )
}

/// # Safety
/// `device` must be NULL or writable; `bus_id` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetByPCIBusId(
    device: *mut CUdevice,
    bus_id: *const c_char,
) -> CUresult {
    guard(|| {
        let info = &state::driver()?.info;
        if bus_id.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated string (API contract).
        let want = unsafe { std::ffi::CStr::from_ptr(bus_id) }
            .to_string_lossy()
            .to_ascii_uppercase();
        let ours = pci_bus_id(info);
        // "bus:device.function" without the domain names the same device.
        if want != ours && !ours.ends_with(&format!(":{want}")) && want != ours[4..] {
            return Err(CuResult::INVALID_DEVICE);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, 0) }
    })
}

/// One device: no peers.
///
/// # Safety
/// `can` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(
    can: *mut c_int,
    d: CUdevice,
    peer: CUdevice,
) -> CUresult {
    guard(|| {
        dev(d)?;
        dev(peer)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(can, 0) }
    })
}

/// There is one device, so there is no peer pair to describe.
///
/// # Safety
/// `value` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetP2PAttribute(
    value: *mut c_int,
    _attrib: c_int,
    src: CUdevice,
    dst: CUdevice,
) -> CUresult {
    guard(|| {
        dev(src)?;
        dev(dst)?;
        if src == dst {
            return Err(CuResult::INVALID_DEVICE);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(value, 0) }
    })
}
