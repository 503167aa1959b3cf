//! `cuGetProcAddress`: the entry points by name, as the CUDA runtime and loaders resolve
//! them. Callers ask for the base name (`cuMemAlloc`) and the CUDA version they were built
//! for; every name here resolves to the newest ABI of the call, which is what a CUDA 12
//! caller expects.

use std::ffi::{c_char, c_int, c_void, CStr};

use netgpu_proto::cuda::CuResult;

use super::{
    context::*, device::*, errors::*, guard, memory::*, module::*, put, stream::*, CUresult,
};

macro_rules! table {
    ($($name:literal => $f:expr),* $(,)?) => {
        fn lookup(name: &str) -> Option<*mut c_void> {
            Some(match name {
                $($name => $f as *mut c_void,)*
                _ => return None,
            })
        }
        /// Every name `cuGetProcAddress` resolves.
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

table! {
    "cuInit" => cuInit as *const (),
    "cuDriverGetVersion" => cuDriverGetVersion as *const (),
    "cuGetErrorName" => cuGetErrorName as *const (),
    "cuGetErrorString" => cuGetErrorString as *const (),
    "cuGetProcAddress" => cuGetProcAddress_v2 as *const (),
    "cuDeviceGet" => cuDeviceGet as *const (),
    "cuDeviceGetCount" => cuDeviceGetCount as *const (),
    "cuDeviceGetName" => cuDeviceGetName as *const (),
    "cuDeviceGetUuid" => cuDeviceGetUuid as *const (),
    "cuDeviceTotalMem" => cuDeviceTotalMem_v2 as *const (),
    "cuDeviceGetAttribute" => cuDeviceGetAttribute as *const (),
    "cuDeviceComputeCapability" => cuDeviceComputeCapability as *const (),
    "cuDevicePrimaryCtxRetain" => cuDevicePrimaryCtxRetain as *const (),
    "cuDevicePrimaryCtxRelease" => cuDevicePrimaryCtxRelease_v2 as *const (),
    "cuDevicePrimaryCtxReset" => cuDevicePrimaryCtxReset_v2 as *const (),
    "cuDevicePrimaryCtxSetFlags" => cuDevicePrimaryCtxSetFlags_v2 as *const (),
    "cuDevicePrimaryCtxGetState" => cuDevicePrimaryCtxGetState as *const (),
    "cuCtxCreate" => cuCtxCreate_v2 as *const (),
    "cuCtxDestroy" => cuCtxDestroy_v2 as *const (),
    "cuCtxPushCurrent" => cuCtxPushCurrent_v2 as *const (),
    "cuCtxPopCurrent" => cuCtxPopCurrent_v2 as *const (),
    "cuCtxSetCurrent" => cuCtxSetCurrent as *const (),
    "cuCtxGetCurrent" => cuCtxGetCurrent as *const (),
    "cuCtxGetDevice" => cuCtxGetDevice as *const (),
    "cuCtxSynchronize" => cuCtxSynchronize as *const (),
    "cuCtxGetApiVersion" => cuCtxGetApiVersion as *const (),
    "cuMemAlloc" => cuMemAlloc_v2 as *const (),
    "cuMemFree" => cuMemFree_v2 as *const (),
    "cuMemGetInfo" => cuMemGetInfo_v2 as *const (),
    "cuMemHostAlloc" => cuMemHostAlloc as *const (),
    "cuMemAllocHost" => cuMemAllocHost_v2 as *const (),
    "cuMemFreeHost" => cuMemFreeHost as *const (),
    "cuMemcpyHtoD" => cuMemcpyHtoD_v2 as *const (),
    "cuMemcpyDtoH" => cuMemcpyDtoH_v2 as *const (),
    "cuMemcpyDtoD" => cuMemcpyDtoD_v2 as *const (),
    "cuMemcpyHtoDAsync" => cuMemcpyHtoDAsync_v2 as *const (),
    "cuMemcpyDtoHAsync" => cuMemcpyDtoHAsync_v2 as *const (),
    "cuMemcpyDtoDAsync" => cuMemcpyDtoDAsync_v2 as *const (),
    "cuMemsetD8" => cuMemsetD8_v2 as *const (),
    "cuMemsetD16" => cuMemsetD16_v2 as *const (),
    "cuMemsetD32" => cuMemsetD32_v2 as *const (),
    "cuMemsetD8Async" => cuMemsetD8Async as *const (),
    "cuMemsetD16Async" => cuMemsetD16Async as *const (),
    "cuMemsetD32Async" => cuMemsetD32Async as *const (),
    "cuModuleLoad" => cuModuleLoad as *const (),
    "cuModuleLoadData" => cuModuleLoadData as *const (),
    "cuModuleLoadDataEx" => cuModuleLoadDataEx as *const (),
    "cuModuleUnload" => cuModuleUnload as *const (),
    "cuModuleGetFunction" => cuModuleGetFunction as *const (),
    "cuModuleGetGlobal" => cuModuleGetGlobal_v2 as *const (),
    "cuLaunchKernel" => cuLaunchKernel as *const (),
    "cuFuncGetAttribute" => cuFuncGetAttribute as *const (),
    "cuStreamCreate" => cuStreamCreate as *const (),
    "cuStreamCreateWithPriority" => cuStreamCreateWithPriority as *const (),
    "cuStreamDestroy" => cuStreamDestroy_v2 as *const (),
    "cuStreamSynchronize" => cuStreamSynchronize as *const (),
    "cuStreamQuery" => cuStreamQuery as *const (),
    "cuStreamWaitEvent" => cuStreamWaitEvent as *const (),
    "cuEventCreate" => cuEventCreate as *const (),
    "cuEventRecord" => cuEventRecord as *const (),
    "cuEventSynchronize" => cuEventSynchronize as *const (),
    "cuEventQuery" => cuEventQuery as *const (),
    "cuEventElapsedTime" => cuEventElapsedTime as *const (),
    "cuEventDestroy" => cuEventDestroy_v2 as *const (),
}

/// `CU_GET_PROC_ADDRESS_SUCCESS` / `..._SYMBOL_NOT_FOUND`.
const FOUND: c_int = 0;
const NOT_FOUND: c_int = 1;

fn resolve(symbol: *const c_char) -> Result<*mut c_void, CuResult> {
    if symbol.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: a NUL-terminated symbol name (API contract).
    let name = unsafe { CStr::from_ptr(symbol) }
        .to_str()
        .map_err(|_| CuResult::NOT_FOUND)?;
    // Versioned spellings ("cuMemAlloc_v2") resolve like their base name.
    let base = name.split("_v").next().unwrap_or(name);
    lookup(name)
        .or_else(|| lookup(base))
        .ok_or(CuResult::NOT_FOUND)
}

/// # Safety
/// `symbol` NUL-terminated; `pfn` and `status` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    _cuda_version: c_int,
    _flags: u64,
    status: *mut c_int,
) -> CUresult {
    guard(|| {
        let r = resolve(symbol);
        if !status.is_null() {
            // SAFETY: non-NULL out-pointer of the caller.
            unsafe { put(status, if r.is_ok() { FOUND } else { NOT_FOUND })? };
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(pfn, r?) }
    })
}

/// # Safety
/// As [`cuGetProcAddress_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
) -> CUresult {
    // SAFETY: same contract, without the status output.
    unsafe { cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, std::ptr::null_mut()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_and_versioned_names_resolve_to_the_same_entry_point() {
        let base = resolve(c"cuMemAlloc".as_ptr()).unwrap();
        assert_eq!(resolve(c"cuMemAlloc_v2".as_ptr()).unwrap(), base);
        assert_eq!(base, cuMemAlloc_v2 as *const () as *mut c_void);
        assert_eq!(resolve(c"cuGraphLaunch".as_ptr()), Err(CuResult::NOT_FOUND));
        for n in NAMES {
            assert!(lookup(n).is_some());
        }
    }

    #[test]
    fn an_unknown_symbol_reports_not_found_in_the_status() {
        let mut pfn = std::ptr::null_mut();
        let mut status = -1;
        // SAFETY: valid out-pointers and a NUL-terminated name.
        let r = unsafe {
            cuGetProcAddress_v2(c"cuNoSuchThing".as_ptr(), &mut pfn, 12000, 0, &mut status)
        };
        assert_eq!(r, CuResult::NOT_FOUND.0);
        assert_eq!(status, NOT_FOUND);
    }
}
