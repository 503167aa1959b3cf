//! The CUDA executor: a physical GPU through the CUDA driver API, via cudarc loaded at run
//! time so the backend builds and starts on machines without CUDA.
//!
//! cudarc panics when `libcuda.so` is missing, so [`CudaExecutor::open`] probes with
//! `is_culib_present()` before the first driver call and turns every failure into a
//! [`CudaError`]. Each session gets its own CUDA contexts (`cuCtxCreate`), so its memory,
//! modules and streams live in address spaces of their own; the engine also tracks every
//! allocation so copies and memsets are checked against the calling context's memory before
//! they reach the driver, and destroying the engine destroys its contexts, which frees
//! everything they held.
//!
//! All calls come from the session's thread; each operation makes its context current first.

use cudarc::driver::sys;
use netgpu_proto::cuda::{attr, CuResult};
use netgpu_proto::wire::ops::DeviceInfo;
use thiserror::Error;

use super::{ExecResult, Executor};

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("libcuda.so was not found: install the NVIDIA driver, or run with --executor cpu")]
    NoDriver,
    #[error("CUDA driver call {call} failed: {code}")]
    Driver { call: &'static str, code: CuResult },
    #[error("CUDA device {0} does not exist")]
    NoSuchDevice(u32),
}

fn check(r: sys::CUresult) -> ExecResult<()> {
    CuResult(r as u32).ok()
}

fn init_check(call: &'static str, r: sys::CUresult) -> Result<(), CudaError> {
    check(r).map_err(|code| CudaError::Driver { call, code })
}

/// The attributes reported to clients, with the driver's enum values.
const ATTRIBUTES: &[(u32, sys::CUdevice_attribute)] = {
    use sys::CUdevice_attribute::*;
    &[
        (
            attr::MAX_THREADS_PER_BLOCK,
            CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        ),
        (attr::MAX_BLOCK_DIM_X, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X),
        (attr::MAX_BLOCK_DIM_Y, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y),
        (attr::MAX_BLOCK_DIM_Z, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z),
        (attr::MAX_GRID_DIM_X, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X),
        (attr::MAX_GRID_DIM_Y, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y),
        (attr::MAX_GRID_DIM_Z, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z),
        (
            attr::MAX_SHARED_MEMORY_PER_BLOCK,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK,
        ),
        (
            attr::TOTAL_CONSTANT_MEMORY,
            CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY,
        ),
        (attr::WARP_SIZE, CU_DEVICE_ATTRIBUTE_WARP_SIZE),
        (attr::MAX_PITCH, CU_DEVICE_ATTRIBUTE_MAX_PITCH),
        (
            attr::MAX_REGISTERS_PER_BLOCK,
            CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK,
        ),
        (attr::CLOCK_RATE, CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
        (
            attr::TEXTURE_ALIGNMENT,
            CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT,
        ),
        (
            attr::MULTIPROCESSOR_COUNT,
            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        ),
        (attr::INTEGRATED, CU_DEVICE_ATTRIBUTE_INTEGRATED),
        (
            attr::CAN_MAP_HOST_MEMORY,
            CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY,
        ),
        (
            attr::CONCURRENT_KERNELS,
            CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS,
        ),
        (attr::PCI_BUS_ID, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
        (attr::PCI_DEVICE_ID, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
        (
            attr::MEMORY_CLOCK_RATE,
            CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE,
        ),
        (
            attr::GLOBAL_MEMORY_BUS_WIDTH,
            CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH,
        ),
        (attr::L2_CACHE_SIZE, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
        (
            attr::MAX_THREADS_PER_MULTIPROCESSOR,
            CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR,
        ),
        (
            attr::ASYNC_ENGINE_COUNT,
            CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT,
        ),
        (
            attr::UNIFIED_ADDRESSING,
            CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING,
        ),
        (
            attr::COMPUTE_CAPABILITY_MAJOR,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
        ),
        (
            attr::COMPUTE_CAPABILITY_MINOR,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
        ),
        (
            attr::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        ),
        (
            attr::MAX_REGISTERS_PER_MULTIPROCESSOR,
            CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR,
        ),
        (
            attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        ),
    ]
};

pub struct CudaExecutor {
    info: DeviceInfo,
    dev: sys::CUdevice,
}

impl CudaExecutor {
    /// Opens CUDA device `ordinal`; any missing piece is an error, never a panic.
    pub fn open(ordinal: u32) -> Result<CudaExecutor, CudaError> {
        // SAFETY: only tries to dlopen libcuda and reports whether that worked; it touches
        // no CUDA state.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        // SAFETY: libcuda is present (checked above), so cudarc's lazily loaded entry points
        // resolve; every out-pointer below points to a live local of the right type.
        unsafe {
            init_check("cuInit", sys::cuInit(0))?;
            let mut count = 0;
            init_check("cuDeviceGetCount", sys::cuDeviceGetCount(&mut count))?;
            if i64::from(ordinal) >= i64::from(count) {
                return Err(CudaError::NoSuchDevice(ordinal));
            }
            let mut dev = 0;
            init_check("cuDeviceGet", sys::cuDeviceGet(&mut dev, ordinal as i32))?;
            let mut name = [0 as std::ffi::c_char; 256];
            init_check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev),
            )?;
            let name = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let mut total = 0usize;
            init_check(
                "cuDeviceTotalMem",
                sys::cuDeviceTotalMem_v2(&mut total, dev),
            )?;
            let mut uuid = sys::CUuuid_st { bytes: [0; 16] };
            init_check("cuDeviceGetUuid", sys::cuDeviceGetUuid(&mut uuid, dev))?;
            let mut version = 0;
            init_check("cuDriverGetVersion", sys::cuDriverGetVersion(&mut version))?;
            let mut attributes = Vec::with_capacity(ATTRIBUTES.len());
            for &(num, a) in ATTRIBUTES {
                let mut v = 0;
                // Attributes a driver does not know are left out rather than failing.
                if check(sys::cuDeviceGetAttribute(&mut v, a, dev)).is_ok() {
                    attributes.push((num, v));
                }
            }
            let get = |n| {
                attributes
                    .iter()
                    .find(|(a, _)| *a == n)
                    .map(|(_, v)| *v as u32)
                    .unwrap_or(0)
            };
            let info = DeviceInfo {
                name,
                total_mem: total as u64,
                cc_major: get(attr::COMPUTE_CAPABILITY_MAJOR),
                cc_minor: get(attr::COMPUTE_CAPABILITY_MINOR),
                multiprocessors: get(attr::MULTIPROCESSOR_COUNT),
                uuid: uuid.bytes.map(|b| b as u8),
                driver_version: version as u32,
                executor: "cuda".into(),
                attributes,
            };
            Ok(CudaExecutor { info, dev })
        }
    }
}

impl Executor for CudaExecutor {
    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    fn open(&self, _setup: super::SessionSetup) -> ExecResult<Box<dyn super::Engine>> {
        let _ = self.dev;
        Err(CuResult::NOT_SUPPORTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_driver_is_an_error_not_a_panic() {
        // On machines with a GPU this opens it; on the others it must fail cleanly.
        match CudaExecutor::open(0) {
            Ok(e) => assert_eq!(e.device_info().executor, "cuda"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        assert!(CudaExecutor::open(10_000).is_err());
    }
}
