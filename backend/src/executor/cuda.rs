//! The CUDA executor: a physical GPU through the CUDA driver API, via cudarc loaded at run
//! time so the backend builds and starts on machines without CUDA.
//!
//! cudarc panics when `libcuda.so` is missing, so [`CudaExecutor::open`] probes with
//! `is_culib_present()` first and turns every failure into a [`CudaError`].

use netgpu_proto::wire::ops::DeviceInfo;
use thiserror::Error;

use super::{Engine, ExecResult, Executor};

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("libcuda.so was not found: install the NVIDIA driver, or run with --executor cpu")]
    NoDriver,
    #[error("CUDA driver call {call} failed: {code}")]
    Driver { call: &'static str, code: String },
}

pub struct CudaExecutor {
    info: DeviceInfo,
}

impl CudaExecutor {
    pub fn open(_ordinal: u32) -> Result<CudaExecutor, CudaError> {
        // SAFETY: only tries to dlopen libcuda and reports whether that worked; it touches no
        // CUDA state.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        Err(CudaError::Driver {
            call: "open",
            code: "CUDA executor not built yet".into(),
        })
    }
}

impl Executor for CudaExecutor {
    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    fn open(&self, _quota: u64) -> ExecResult<Box<dyn Engine>> {
        Err(netgpu_proto::cuda::CuResult::NOT_SUPPORTED)
    }
}
