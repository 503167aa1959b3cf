//! `cuGetProcAddress`: entry points by (name, CUDA version, flags), as the CUDA runtime and
//! loaders resolve them.
//!
//! An entry point's signature changed at some CUDA versions (`cuCtxSynchronize` took no
//! argument until 13.0, then a context); [`abi_versions::ABI`] lists those versions for every
//! name NVIDIA's headers know. A request is answered with the ABI version the caller was
//! built for (the newest at or below its `cudaVersion`) or not at all: never an older ABI
//! than the caller expects. With `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM` the
//! `_ptds`/`_ptsz` variants are preferred. A name whose ABI this library does not implement
//! resolves to an entry point that logs its name and returns `CUDA_ERROR_NOT_SUPPORTED`, so a
//! program learns which call it is ("operation not supported") instead of being told to
//! update its driver.

use std::ffi::{c_char, c_int, c_void, CStr};

use netgpu_proto::cuda::CuResult;

use super::abi_versions::ABI;
use super::{
    context::*, device::*, errors::*, graph::*, guard, link::*, memory::*, module::*, occupancy::*,
    per_thread::*, pools::*, put, stream::*, CUresult,
};
use crate::dark::cuGetExportTable;

/// Generates [`TRAMPOLINES`]: for index `i` of [`ABI`], an entry point that reports its name
/// as not supported.
#[macro_export]
macro_rules! trampolines {
    ($($i:literal),* $(,)?) => {
        /// The NOT_SUPPORTED entry point of each [`ABI`] name, by index.
        pub static TRAMPOLINES: &[extern "C" fn() -> u32] = &[$({
            extern "C" fn t() -> u32 {
                $crate::state::unsupported(ABI[$i].0).0
            }
            t
        }),*];
    };
}

/// `(name, ABI version, per-thread variant, implementation)`.
type Row = (&'static str, u32, bool, *const ());

macro_rules! rows {
    ($($name:literal $ver:literal $($pt:ident)? => $f:expr;)*) => {
        const ROWS: &[Row] = &[$(($name, $ver, rows!(@pt $($pt)?), $f as *const ())),*];
    };
    (@pt pt) => { true };
    (@pt) => { false };
}

rows! {
    "cuInit" 2000 => cuInit;
    "cuDriverGetVersion" 2020 => cuDriverGetVersion;
    "cuGetErrorName" 6000 => cuGetErrorName;
    "cuGetErrorString" 6000 => cuGetErrorString;
    "cuGetProcAddress" 11030 => cuGetProcAddress;
    "cuGetProcAddress" 12000 => cuGetProcAddress_v2;
    "cuGetExportTable" 3000 => cuGetExportTable;
    "cuDeviceGet" 2000 => cuDeviceGet;
    "cuDeviceGetCount" 2000 => cuDeviceGetCount;
    "cuDeviceGetName" 2000 => cuDeviceGetName;
    "cuDeviceGetUuid" 9020 => cuDeviceGetUuid;
    "cuDeviceGetUuid" 11040 => cuDeviceGetUuid_v2;
    "cuDeviceTotalMem" 3020 => cuDeviceTotalMem_v2;
    "cuDeviceGetAttribute" 2000 => cuDeviceGetAttribute;
    "cuDeviceComputeCapability" 2000 => cuDeviceComputeCapability;
    "cuDeviceGetPCIBusId" 4010 => cuDeviceGetPCIBusId;
    "cuDeviceGetByPCIBusId" 4010 => cuDeviceGetByPCIBusId;
    "cuDeviceCanAccessPeer" 4000 => cuDeviceCanAccessPeer;
    "cuDeviceGetP2PAttribute" 8000 => cuDeviceGetP2PAttribute;
    "cuDevicePrimaryCtxRetain" 7000 => cuDevicePrimaryCtxRetain;
    "cuDevicePrimaryCtxRelease" 7000 => cuDevicePrimaryCtxRelease_v2;
    "cuDevicePrimaryCtxRelease" 11000 => cuDevicePrimaryCtxRelease_v2;
    "cuDevicePrimaryCtxReset" 7000 => cuDevicePrimaryCtxReset_v2;
    "cuDevicePrimaryCtxReset" 11000 => cuDevicePrimaryCtxReset_v2;
    "cuDevicePrimaryCtxSetFlags" 7000 => cuDevicePrimaryCtxSetFlags_v2;
    "cuDevicePrimaryCtxSetFlags" 11000 => cuDevicePrimaryCtxSetFlags_v2;
    "cuDevicePrimaryCtxGetState" 7000 => cuDevicePrimaryCtxGetState;
    "cuCtxCreate" 3020 => cuCtxCreate_v2;
    "cuCtxCreate" 11040 => cuCtxCreate_v3;
    "cuCtxCreate" 12050 => cuCtxCreate_v4;
    "cuCtxDestroy" 4000 => cuCtxDestroy_v2;
    "cuCtxPushCurrent" 4000 => cuCtxPushCurrent_v2;
    "cuCtxPopCurrent" 4000 => cuCtxPopCurrent_v2;
    "cuCtxSetCurrent" 4000 => cuCtxSetCurrent;
    "cuCtxGetCurrent" 4000 => cuCtxGetCurrent;
    "cuCtxGetDevice" 2000 => cuCtxGetDevice;
    "cuCtxGetDevice" 13000 => cuCtxGetDevice_v2;
    "cuCtxSynchronize" 2000 => cuCtxSynchronize;
    "cuCtxSynchronize" 13000 => cuCtxSynchronize_v2;
    "cuCtxGetApiVersion" 3020 => cuCtxGetApiVersion;
    "cuCtxGetFlags" 7000 => cuCtxGetFlags;
    "cuCtxGetId" 12000 => cuCtxGetId;
    "cuCtxGetLimit" 3010 => cuCtxGetLimit;
    "cuCtxSetLimit" 3010 => cuCtxSetLimit;
    "cuCtxGetStreamPriorityRange" 5050 => cuCtxGetStreamPriorityRange;
    "cuCtxGetCacheConfig" 3020 => cuCtxGetCacheConfig;
    "cuCtxSetCacheConfig" 3020 => cuCtxSetCacheConfig;
    "cuCtxGetSharedMemConfig" 4020 => cuCtxGetSharedMemConfig;
    "cuCtxSetSharedMemConfig" 4020 => cuCtxSetSharedMemConfig;
    "cuMemAlloc" 3020 => cuMemAlloc_v2;
    "cuMemFree" 3020 => cuMemFree_v2;
    "cuMemGetInfo" 3020 => cuMemGetInfo_v2;
    "cuMemHostAlloc" 2020 => cuMemHostAlloc;
    "cuMemAllocHost" 3020 => cuMemAllocHost_v2;
    "cuMemFreeHost" 2000 => cuMemFreeHost;
    "cuMemcpyHtoD" 3020 => cuMemcpyHtoD_v2;
    "cuMemcpyHtoD" 7000 pt => cuMemcpyHtoD_v2_ptds;
    "cuMemcpyDtoH" 3020 => cuMemcpyDtoH_v2;
    "cuMemcpyDtoH" 7000 pt => cuMemcpyDtoH_v2_ptds;
    "cuMemcpyDtoD" 3020 => cuMemcpyDtoD_v2;
    "cuMemcpyDtoD" 7000 pt => cuMemcpyDtoD_v2_ptds;
    "cuMemcpyHtoDAsync" 3020 => cuMemcpyHtoDAsync_v2;
    "cuMemcpyHtoDAsync" 7000 pt => cuMemcpyHtoDAsync_v2_ptsz;
    "cuMemcpyDtoHAsync" 3020 => cuMemcpyDtoHAsync_v2;
    "cuMemcpyDtoHAsync" 7000 pt => cuMemcpyDtoHAsync_v2_ptsz;
    "cuMemcpyDtoDAsync" 3020 => cuMemcpyDtoDAsync_v2;
    "cuMemcpyDtoDAsync" 7000 pt => cuMemcpyDtoDAsync_v2_ptsz;
    "cuMemsetD8" 3020 => cuMemsetD8_v2;
    "cuMemsetD8" 7000 pt => cuMemsetD8_v2_ptds;
    "cuMemsetD16" 3020 => cuMemsetD16_v2;
    "cuMemsetD16" 7000 pt => cuMemsetD16_v2_ptds;
    "cuMemsetD32" 3020 => cuMemsetD32_v2;
    "cuMemsetD32" 7000 pt => cuMemsetD32_v2_ptds;
    "cuMemsetD8Async" 3020 => cuMemsetD8Async;
    "cuMemsetD8Async" 7000 pt => cuMemsetD8Async_ptsz;
    "cuMemsetD16Async" 3020 => cuMemsetD16Async;
    "cuMemsetD16Async" 7000 pt => cuMemsetD16Async_ptsz;
    "cuMemsetD32Async" 3020 => cuMemsetD32Async;
    "cuMemsetD32Async" 7000 pt => cuMemsetD32Async_ptsz;
    "cuModuleLoad" 2000 => cuModuleLoad;
    "cuModuleLoadData" 2000 => cuModuleLoadData;
    "cuModuleLoadDataEx" 2010 => cuModuleLoadDataEx;
    "cuModuleLoadFatBinary" 2000 => cuModuleLoadFatBinary;
    "cuModuleUnload" 2000 => cuModuleUnload;
    "cuModuleGetFunction" 2000 => cuModuleGetFunction;
    "cuModuleGetGlobal" 3020 => cuModuleGetGlobal_v2;
    "cuModuleGetLoadingMode" 11070 => cuModuleGetLoadingMode;
    "cuLinkCreate" 5050 => cuLinkCreate_v2;
    "cuLinkCreate" 6050 => cuLinkCreate_v2;
    "cuLinkAddData" 5050 => cuLinkAddData_v2;
    "cuLinkAddData" 6050 => cuLinkAddData_v2;
    "cuLinkAddFile" 5050 => cuLinkAddFile_v2;
    "cuLinkAddFile" 6050 => cuLinkAddFile_v2;
    "cuLinkComplete" 5050 => cuLinkComplete;
    "cuLinkDestroy" 5050 => cuLinkDestroy;
    "cuLibraryLoadData" 12000 => cuLibraryLoadData;
    "cuLibraryLoadFromFile" 12000 => cuLibraryLoadFromFile;
    "cuLibraryUnload" 12000 => cuLibraryUnload;
    "cuLibraryGetKernel" 12000 => cuLibraryGetKernel;
    "cuLibraryGetModule" 12000 => cuLibraryGetModule;
    "cuLibraryGetGlobal" 12000 => cuLibraryGetGlobal;
    "cuKernelGetFunction" 12000 => cuKernelGetFunction;
    "cuKernelGetName" 12030 => cuKernelGetName;
    "cuKernelGetAttribute" 12000 => cuKernelGetAttribute;
    "cuKernelSetAttribute" 12000 => cuKernelSetAttribute;
    "cuKernelSetCacheConfig" 12000 => cuKernelSetCacheConfig;
    "cuKernelGetParamInfo" 12040 => cuKernelGetParamInfo;
    "cuKernelGetParamCount" 13020 => cuKernelGetParamCount;
    "cuFuncGetName" 12030 => cuFuncGetName;
    "cuFuncGetParamInfo" 12040 => cuFuncGetParamInfo;
    "cuFuncGetParamCount" 13020 => cuFuncGetParamCount;
    "cuFuncGetAttribute" 2020 => cuFuncGetAttribute;
    "cuFuncSetAttribute" 9000 => cuFuncSetAttribute;
    "cuFuncSetCacheConfig" 3000 => cuFuncSetCacheConfig;
    "cuFuncSetSharedMemConfig" 4020 => cuFuncSetSharedMemConfig;
    "cuLaunchKernel" 4000 => cuLaunchKernel;
    "cuLaunchKernel" 7000 pt => cuLaunchKernel_ptsz;
    "cuLaunchCooperativeKernel" 9000 => cuLaunchCooperativeKernel;
    "cuLaunchCooperativeKernel" 9000 pt => cuLaunchCooperativeKernel_ptsz;
    "cuLaunchKernelEx" 11060 => cuLaunchKernelEx;
    "cuLaunchKernelEx" 11060 pt => cuLaunchKernelEx_ptsz;
    "cuOccupancyMaxActiveBlocksPerMultiprocessor" 6050 => cuOccupancyMaxActiveBlocksPerMultiprocessor;
    "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags" 7000 => cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags;
    "cuOccupancyMaxPotentialBlockSize" 6050 => cuOccupancyMaxPotentialBlockSize;
    "cuOccupancyMaxPotentialBlockSizeWithFlags" 7000 => cuOccupancyMaxPotentialBlockSizeWithFlags;
    "cuOccupancyAvailableDynamicSMemPerBlock" 10020 => cuOccupancyAvailableDynamicSMemPerBlock;
    "cuStreamCreate" 2000 => cuStreamCreate;
    "cuStreamCreateWithPriority" 5050 => cuStreamCreateWithPriority;
    "cuStreamDestroy" 4000 => cuStreamDestroy_v2;
    "cuStreamSynchronize" 2000 => cuStreamSynchronize;
    "cuStreamSynchronize" 7000 pt => cuStreamSynchronize_ptsz;
    "cuStreamQuery" 2000 => cuStreamQuery;
    "cuStreamQuery" 7000 pt => cuStreamQuery_ptsz;
    "cuStreamWaitEvent" 3020 => cuStreamWaitEvent;
    "cuStreamWaitEvent" 7000 pt => cuStreamWaitEvent_ptsz;
    "cuEventCreate" 2000 => cuEventCreate;
    "cuEventRecord" 2000 => cuEventRecord;
    "cuEventRecord" 7000 pt => cuEventRecord_ptsz;
    "cuEventRecordWithFlags" 11010 => cuEventRecordWithFlags;
    "cuEventRecordWithFlags" 11010 pt => cuEventRecordWithFlags_ptsz;
    "cuEventSynchronize" 2000 => cuEventSynchronize;
    "cuEventQuery" 2000 => cuEventQuery;
    "cuEventElapsedTime" 2000 => cuEventElapsedTime;
    "cuEventElapsedTime" 12080 => cuEventElapsedTime;
    "cuEventDestroy" 4000 => cuEventDestroy_v2;
    "cuStreamGetFlags" 5050 => cuStreamGetFlags;
    "cuStreamGetFlags" 7000 pt => cuStreamGetFlags_ptsz;
    "cuStreamGetPriority" 5050 => cuStreamGetPriority;
    "cuStreamGetPriority" 7000 pt => cuStreamGetPriority_ptsz;
    "cuStreamGetCtx" 9020 => cuStreamGetCtx;
    "cuStreamGetCtx" 9020 pt => cuStreamGetCtx_ptsz;
    "cuStreamGetCtx" 12050 => cuStreamGetCtx_v2;
    "cuStreamGetCtx" 12050 pt => cuStreamGetCtx_v2_ptsz;
    "cuStreamGetId" 12000 => cuStreamGetId;
    "cuStreamGetId" 12000 pt => cuStreamGetId_ptsz;
    "cuStreamGetDevice" 12080 => cuStreamGetDevice;
    "cuStreamGetDevice" 12080 pt => cuStreamGetDevice_ptsz;
    "cuStreamIsCapturing" 10000 => cuStreamIsCapturing;
    "cuStreamIsCapturing" 10000 pt => cuStreamIsCapturing_ptsz;
    "cuStreamGetCaptureInfo" 10010 => cuStreamGetCaptureInfo;
    "cuStreamGetCaptureInfo" 10010 pt => cuStreamGetCaptureInfo_ptsz;
    "cuStreamGetCaptureInfo" 11030 => cuStreamGetCaptureInfo_v2;
    "cuStreamGetCaptureInfo" 11030 pt => cuStreamGetCaptureInfo_v2_ptsz;
    "cuStreamGetCaptureInfo" 12030 => cuStreamGetCaptureInfo_v3;
    "cuStreamGetCaptureInfo" 12030 pt => cuStreamGetCaptureInfo_v3_ptsz;
    "cuThreadExchangeStreamCaptureMode" 10010 => cuThreadExchangeStreamCaptureMode;
    "cuLaunchHostFunc" 10000 => cuLaunchHostFunc;
    "cuLaunchHostFunc" 10000 pt => cuLaunchHostFunc_ptsz;
    "cuLaunchHostFunc" 13010 => cuLaunchHostFunc_v2;
    "cuLaunchHostFunc" 13010 pt => cuLaunchHostFunc_v2_ptsz;
    "cuStreamAddCallback" 5000 => cuStreamAddCallback;
    "cuStreamAddCallback" 7000 pt => cuStreamAddCallback_ptsz;
    "cuMemcpy" 4000 => cuMemcpy;
    "cuMemcpy" 7000 pt => cuMemcpy_ptds;
    "cuMemcpyAsync" 4000 => cuMemcpyAsync;
    "cuMemcpyAsync" 7000 pt => cuMemcpyAsync_ptsz;
    "cuMemcpy2D" 3020 => cuMemcpy2D_v2;
    "cuMemcpy2D" 7000 pt => cuMemcpy2D_v2_ptds;
    "cuMemcpy2DUnaligned" 3020 => cuMemcpy2DUnaligned_v2;
    "cuMemcpy2DUnaligned" 7000 pt => cuMemcpy2DUnaligned_v2_ptds;
    "cuMemcpy2DAsync" 3020 => cuMemcpy2DAsync_v2;
    "cuMemcpy2DAsync" 7000 pt => cuMemcpy2DAsync_v2_ptsz;
    "cuMemcpy3D" 3020 => cuMemcpy3D_v2;
    "cuMemcpy3D" 7000 pt => cuMemcpy3D_v2_ptds;
    "cuMemcpy3DAsync" 3020 => cuMemcpy3DAsync_v2;
    "cuMemcpy3DAsync" 7000 pt => cuMemcpy3DAsync_v2_ptsz;
    "cuMemsetD2D8" 3020 => cuMemsetD2D8_v2;
    "cuMemsetD2D8" 7000 pt => cuMemsetD2D8_v2_ptds;
    "cuMemsetD2D16" 3020 => cuMemsetD2D16_v2;
    "cuMemsetD2D16" 7000 pt => cuMemsetD2D16_v2_ptds;
    "cuMemsetD2D32" 3020 => cuMemsetD2D32_v2;
    "cuMemsetD2D32" 7000 pt => cuMemsetD2D32_v2_ptds;
    "cuMemsetD2D8Async" 3020 => cuMemsetD2D8Async;
    "cuMemsetD2D8Async" 7000 pt => cuMemsetD2D8Async_ptsz;
    "cuMemsetD2D16Async" 3020 => cuMemsetD2D16Async;
    "cuMemsetD2D16Async" 7000 pt => cuMemsetD2D16Async_ptsz;
    "cuMemsetD2D32Async" 3020 => cuMemsetD2D32Async;
    "cuMemsetD2D32Async" 7000 pt => cuMemsetD2D32Async_ptsz;
    "cuMemAllocPitch" 3020 => cuMemAllocPitch_v2;
    "cuMemGetAddressRange" 3020 => cuMemGetAddressRange_v2;
    "cuPointerGetAttribute" 4000 => cuPointerGetAttribute;
    "cuPointerGetAttributes" 7000 => cuPointerGetAttributes;
    "cuMemHostRegister" 4000 => cuMemHostRegister;
    "cuMemHostRegister" 6050 => cuMemHostRegister_v2;
    "cuMemHostUnregister" 4000 => cuMemHostUnregister;
    "cuMemHostGetFlags" 2030 => cuMemHostGetFlags;
    "cuMemAllocAsync" 11020 => cuMemAllocAsync;
    "cuMemAllocAsync" 11020 pt => cuMemAllocAsync_ptsz;
    "cuMemAllocFromPoolAsync" 11020 => cuMemAllocFromPoolAsync;
    "cuMemAllocFromPoolAsync" 11020 pt => cuMemAllocFromPoolAsync_ptsz;
    "cuMemFreeAsync" 11020 => cuMemFreeAsync;
    "cuMemFreeAsync" 11020 pt => cuMemFreeAsync_ptsz;
    "cuDeviceGetDefaultMemPool" 11020 => cuDeviceGetDefaultMemPool;
    "cuDeviceGetMemPool" 11020 => cuDeviceGetMemPool;
    "cuDeviceSetMemPool" 11020 => cuDeviceSetMemPool;
    "cuMemPoolCreate" 11020 => cuMemPoolCreate;
    "cuMemPoolDestroy" 11020 => cuMemPoolDestroy;
    "cuMemPoolTrimTo" 11020 => cuMemPoolTrimTo;
    "cuMemPoolGetAttribute" 11020 => cuMemPoolGetAttribute;
    "cuMemPoolSetAttribute" 11020 => cuMemPoolSetAttribute;
    "cuMemPoolSetAccess" 11020 => cuMemPoolSetAccess;
    "cuMemPoolGetAccess" 11020 => cuMemPoolGetAccess;
    "cuStreamBeginCapture" 10000 => cuStreamBeginCapture;
    "cuStreamBeginCapture" 10000 pt => cuStreamBeginCapture_ptsz;
    "cuStreamBeginCapture" 10010 => cuStreamBeginCapture_v2;
    "cuStreamBeginCapture" 10010 pt => cuStreamBeginCapture_v2_ptsz;
    "cuStreamEndCapture" 10000 => cuStreamEndCapture;
    "cuStreamEndCapture" 10000 pt => cuStreamEndCapture_ptsz;
    "cuGraphCreate" 10000 => cuGraphCreate;
    "cuGraphDestroy" 10000 => cuGraphDestroy;
    "cuGraphGetNodes" 10000 => cuGraphGetNodes;
    "cuGraphNodeGetType" 10000 => cuGraphNodeGetType;
    "cuGraphInstantiate" 10000 => cuGraphInstantiate_v2;
    "cuGraphInstantiate" 11000 => cuGraphInstantiate_v2;
    "cuGraphInstantiateWithFlags" 11040 => cuGraphInstantiateWithFlags;
    "cuGraphInstantiateWithParams" 12000 => cuGraphInstantiateWithParams;
    "cuGraphInstantiateWithParams" 12000 pt => cuGraphInstantiateWithParams_ptsz;
    "cuGraphLaunch" 10000 => cuGraphLaunch;
    "cuGraphLaunch" 10000 pt => cuGraphLaunch_ptsz;
    "cuGraphUpload" 11010 => cuGraphUpload;
    "cuGraphUpload" 11010 pt => cuGraphUpload_ptsz;
    "cuGraphExecDestroy" 10000 => cuGraphExecDestroy;
}

/// `CU_GET_PROC_ADDRESS_*` flags and `CUdriverProcAddressQueryResult` values.
const LEGACY_STREAM: u64 = 1;
const PER_THREAD_DEFAULT_STREAM: u64 = 2;
const FOUND: c_int = 0;
const SYMBOL_NOT_FOUND: c_int = 1;
const VERSION_NOT_SUFFICIENT: c_int = 2;

fn abi_of(name: &str) -> Option<(usize, &'static [(u32, bool)])> {
    let i = ABI.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
    Some((i, ABI[i].1))
}

/// What a request resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A working implementation of the requested ABI.
    Implemented(*const ()),
    /// A name this library knows but does not implement at the requested ABI: an entry point
    /// that returns `CUDA_ERROR_NOT_SUPPORTED`.
    NotSupported(*const ()),
    /// Older than the name's first ABI.
    VersionNotSufficient,
    NotFound,
}

/// Resolves `(name, version, flags)`.
pub fn resolve(name: &str, version: u32, flags: u64) -> Resolution {
    let per_thread = flags & PER_THREAD_DEFAULT_STREAM != 0 && flags & LEGACY_STREAM == 0;
    // Versioned spellings ("cuMemAlloc_v2", "cuMemcpy_ptds") name the base entry point.
    let mut base = name;
    let mut want_pt = per_thread;
    for suffix in ["_ptds", "_ptsz"] {
        if let Some(b) = base.strip_suffix(suffix) {
            base = b;
            want_pt = true;
        }
    }
    if let Some(i) = base.rfind("_v") {
        if base[i + 2..].chars().all(|c| c.is_ascii_digit()) && i + 2 < base.len() {
            base = &base[..i];
        }
    }
    let Some((index, abis)) = abi_of(base) else {
        // Not in NVIDIA's typedefs: only our own rows can answer.
        return ROWS
            .iter()
            .filter(|r| r.0 == base && r.1 <= version && (!r.2 || want_pt))
            .max_by_key(|r| (r.1, r.2))
            .map_or(Resolution::NotFound, |r| Resolution::Implemented(r.3));
    };
    let Some(&(abi_ver, abi_pt)) = abis
        .iter()
        .filter(|(v, pt)| *v <= version && (!*pt || want_pt))
        .max_by_key(|(v, pt)| (*v, *pt))
    else {
        return Resolution::VersionNotSufficient;
    };
    match ROWS
        .iter()
        .find(|r| r.0 == base && r.1 == abi_ver && r.2 == abi_pt)
    {
        Some(r) => Resolution::Implemented(r.3),
        None => Resolution::NotSupported(super::abi_versions::TRAMPOLINES[index] as *const ()),
    }
}

/// # Safety
/// `symbol` NUL-terminated; `pfn` and `status` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CUresult {
    guard(|| {
        if symbol.is_null() || pfn.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated symbol name (API contract).
        let name = unsafe { CStr::from_ptr(symbol) }.to_str().unwrap_or("");
        let (p, st) = match resolve(name, cuda_version.max(0) as u32, flags) {
            Resolution::Implemented(p) | Resolution::NotSupported(p) => (p as *mut c_void, FOUND),
            Resolution::VersionNotSufficient => (std::ptr::null_mut(), VERSION_NOT_SUFFICIENT),
            Resolution::NotFound => (std::ptr::null_mut(), SYMBOL_NOT_FOUND),
        };
        // SAFETY: the caller's out-pointers (`status` is optional).
        unsafe {
            put(pfn, p)?;
            if !status.is_null() {
                put(status, st)?;
            }
        }
        if p.is_null() {
            Err(CuResult::NOT_FOUND)
        } else {
            Ok(())
        }
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

    fn implemented(name: &str, v: u32, flags: u64) -> *const () {
        match resolve(name, v, flags) {
            Resolution::Implemented(p) => p,
            other => panic!("{name}@{v}/{flags}: {other:?}"),
        }
    }

    #[test]
    fn each_version_gets_the_abi_it_was_built_for() {
        assert_eq!(
            implemented("cuCtxSynchronize", 12090, 0),
            cuCtxSynchronize as *const ()
        );
        assert_eq!(
            implemented("cuCtxSynchronize", 13050, 0),
            cuCtxSynchronize_v2 as *const ()
        );
        assert_eq!(
            implemented("cuCtxGetDevice", 13000, 0),
            cuCtxGetDevice_v2 as *const ()
        );
        assert_eq!(
            implemented("cuGetProcAddress", 12000, 0),
            cuGetProcAddress_v2 as *const ()
        );
        assert_eq!(
            implemented("cuGetProcAddress", 11030, 0),
            cuGetProcAddress as *const ()
        );
        assert_eq!(
            implemented("cuMemAlloc_v2", 12000, 0),
            cuMemAlloc_v2 as *const ()
        );
        // 32-bit-pointer ABIs of CUDA 2.x are never handed out.
        assert!(matches!(
            resolve("cuMemAlloc", 2000, 0),
            Resolution::NotSupported(_)
        ));
        assert_eq!(
            resolve("cuLibraryLoadData", 11080, 0),
            Resolution::VersionNotSufficient
        );
        assert_eq!(resolve("", 0, 0), Resolution::NotFound);
        assert_eq!(resolve("cuNoSuchThing", 13000, 0), Resolution::NotFound);
    }

    #[test]
    fn per_thread_requests_get_the_per_thread_variant_and_legacy_wins() {
        for (name, want) in [("cuLaunchKernel", 7000), ("cuMemcpyHtoD", 7000)] {
            let (i, abis) = abi_of(name).unwrap();
            assert!(abis.contains(&(want, true)), "{i}");
            assert!(ROWS.iter().any(|r| r.0 == name && r.1 == want && r.2));
        }
        assert!(matches!(
            resolve("cuLaunchKernel", 12000, PER_THREAD_DEFAULT_STREAM),
            Resolution::Implemented(_)
        ));
        assert!(matches!(
            resolve(
                "cuLaunchKernel",
                12000,
                PER_THREAD_DEFAULT_STREAM | LEGACY_STREAM
            ),
            Resolution::Implemented(_)
        ));
    }

    #[test]
    fn an_unimplemented_name_is_a_named_not_supported_entry_point() {
        let Resolution::NotSupported(p) = resolve("cuGraphAddKernelNode", 12000, 0) else {
            panic!("cuGraphAddKernelNode should be a NOT_SUPPORTED entry point");
        };
        // SAFETY: a trampoline takes no arguments it reads.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(p) };
        assert_eq!(f(), CuResult::NOT_SUPPORTED.0);
    }

    #[test]
    fn every_row_is_an_abi_nvidia_defines() {
        for r in ROWS {
            let Some((_, abis)) = abi_of(r.0) else {
                panic!("{} is not a driver entry point", r.0)
            };
            assert!(
                abis.contains(&(r.1, r.2)),
                "{} has no ABI {} (per-thread {})",
                r.0,
                r.1,
                r.2
            );
        }
        assert!(ABI.windows(2).all(|w| w[0].0 < w[1].0), "ABI is sorted");
        assert_eq!(TRAMPOLINES_LEN, ABI.len());
    }

    const TRAMPOLINES_LEN: usize = super::super::abi_versions::TRAMPOLINES.len();

    #[test]
    fn an_unknown_symbol_reports_not_found_in_the_status() {
        let mut pfn = std::ptr::null_mut();
        let mut status = -1;
        // SAFETY: valid out-pointers and a NUL-terminated name.
        let r = unsafe {
            cuGetProcAddress_v2(c"cuNoSuchThing".as_ptr(), &mut pfn, 12000, 0, &mut status)
        };
        assert_eq!(r, CuResult::NOT_FOUND.0);
        assert_eq!(status, SYMBOL_NOT_FOUND);
    }

    /// Names the runtimes look up that NVIDIA's `cudaTypedefs.h` does not define and this
    /// library deliberately does not provide: graphics interop (a remote GPU has no display),
    /// the profiler, green contexts and device resources (partitioning a physical GPU).
    fn deliberately_absent(name: &str) -> bool {
        [
            "cuGL",
            "cuEGL",
            "cuGraphicsGL",
            "cuGraphicsEGL",
            "cuGraphicsVDPAU",
            "cuVDPAU",
            "cuProfiler",
            "cuGreenCtx",
            "cuDevResource",
            "cuDevSmResource",
            "cuSubgrid",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || [
                "cuDeviceGetDevResource",
                "cuCtxGetDevResource",
                "cuStreamGetDevResource",
                "cuCtxFromGreenCtx",
                "cuCtxRecordEvent",
                "cuCtxWaitEvent",
                "cuDeviceRegisterAsyncNotification",
                "cuDeviceUnregisterAsyncNotification",
                "cuGraphicsResourceGetMappedEglFrame",
            ]
            .contains(&name)
    }

    fn lookups(text: &str) -> Vec<(String, u32, u64)> {
        text.lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                let (n, v, f) = (p.next()?, p.next()?, p.next()?);
                Some((n.to_string(), v.parse().ok()?, f.parse().ok()?))
            })
            .collect()
    }

    /// Every lookup cudart 12.9 and 13.5 were measured making (see
    /// `/work/shared/cuda-runtime/README.md`) resolves, or is deliberately absent; the calls
    /// the runtimes cannot start without are real implementations.
    #[test]
    fn every_measured_runtime_lookup_resolves_or_is_deliberately_absent() {
        let mut missing = Vec::new();
        for list in [
            include_str!("../../tests/data/lookups_cudart12.9.txt"),
            include_str!("../../tests/data/lookups_cudart13.5.txt"),
        ] {
            let l = lookups(list);
            assert!(l.len() > 400, "the measured list is there");
            for (name, v, f) in l {
                match resolve(&name, v, f) {
                    Resolution::Implemented(_) | Resolution::NotSupported(_) => {}
                    Resolution::NotFound if deliberately_absent(&name) => {}
                    other => missing.push(format!("{name} {v} {f}: {other:?}")),
                }
            }
        }
        assert!(missing.is_empty(), "silently missing: {missing:#?}");
        for (name, v) in [
            ("cuInit", 2000),
            ("cuGetExportTable", 3000),
            ("cuDeviceGetCount", 2000),
            ("cuDeviceGet", 2000),
            ("cuDeviceGetName", 2000),
            ("cuDeviceTotalMem", 3020),
            ("cuDeviceGetAttribute", 2000),
            ("cuDeviceGetUuid", 9020),
            ("cuDeviceGetUuid", 11040),
            ("cuCtxGetCurrent", 4000),
            ("cuCtxSetCurrent", 4000),
            ("cuDevicePrimaryCtxRetain", 7000),
            ("cuMemAlloc", 3020),
            ("cuMemcpyHtoD", 3020),
            ("cuMemcpyDtoH", 3020),
            ("cuLibraryLoadData", 12000),
            ("cuLaunchKernel", 4000),
            ("cuCtxGetDevice", 2000),
            ("cuCtxGetDevice", 13000),
            ("cuDriverGetVersion", 2020),
            ("cuCtxPushCurrent", 4000),
            ("cuCtxPopCurrent", 4000),
            ("cuLibraryGetModule", 12000),
            ("cuModuleGetFunction", 2000),
            ("cuLibraryGetKernel", 12000),
            ("cuModuleGetLoadingMode", 11070),
            ("cuDevicePrimaryCtxRelease", 7000),
            ("cuLibraryUnload", 12000),
            ("cuMemFree", 3020),
            ("cuCtxGetApiVersion", 3020),
            ("cuCtxSynchronize", 2000),
            ("cuCtxSynchronize", 13000),
            ("cuDevicePrimaryCtxReset", 7000),
        ] {
            assert!(
                matches!(resolve(name, v, 0), Resolution::Implemented(_)),
                "{name}@{v} must be implemented"
            );
        }
    }
}
