//! CUDA driver API result codes and device attribute numbers shared by every side.
//!
//! The numbers are those of the CUDA driver API (`cuda.h`), so a result travels from the
//! backend's executor through the wire protocol and the device ABI to the guest's
//! `libcuda.so.1` unchanged. [`CuResult`] is a newtype rather than an enum because a peer may
//! send any code, including ones newer than this crate; unknown codes are carried, not lost.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A `CUresult` value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CuResult(pub u32);

macro_rules! cu_results {
    ($($name:ident = $val:expr),* $(,)?) => {
        impl CuResult {
            $(pub const $name: CuResult = CuResult($val);)*

            /// The `CUDA_ERROR_*` name, as `cuGetErrorName` returns it.
            pub fn name(self) -> &'static str {
                match self.0 {
                    0 => "CUDA_SUCCESS",
                    $($val => concat!("CUDA_ERROR_", stringify!($name)),)*
                    _ => "CUDA_ERROR_UNKNOWN",
                }
            }
        }
    };
}

cu_results! {
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    NOT_INITIALIZED = 3,
    DEINITIALIZED = 4,
    STUB_LIBRARY = 34,
    DEVICE_UNAVAILABLE = 46,
    NO_DEVICE = 100,
    INVALID_DEVICE = 101,
    INVALID_IMAGE = 200,
    INVALID_CONTEXT = 201,
    NO_BINARY_FOR_GPU = 209,
    INVALID_PTX = 218,
    UNSUPPORTED_PTX_VERSION = 222,
    INVALID_SOURCE = 300,
    FILE_NOT_FOUND = 301,
    OPERATING_SYSTEM = 304,
    INVALID_HANDLE = 400,
    ILLEGAL_STATE = 401,
    NOT_FOUND = 500,
    NOT_READY = 600,
    ILLEGAL_ADDRESS = 700,
    LAUNCH_OUT_OF_RESOURCES = 701,
    LAUNCH_TIMEOUT = 702,
    CONTEXT_IS_DESTROYED = 709,
    ASSERT = 710,
    HARDWARE_STACK_ERROR = 714,
    ILLEGAL_INSTRUCTION = 715,
    MISALIGNED_ADDRESS = 716,
    INVALID_ADDRESS_SPACE = 717,
    INVALID_PC = 718,
    LAUNCH_FAILED = 719,
    NOT_PERMITTED = 800,
    NOT_SUPPORTED = 801,
    STREAM_CAPTURE_UNSUPPORTED = 900,
    STREAM_CAPTURE_INVALIDATED = 901,
    STREAM_CAPTURE_MERGE = 902,
    STREAM_CAPTURE_UNMATCHED = 903,
    STREAM_CAPTURE_UNJOINED = 904,
    STREAM_CAPTURE_ISOLATION = 905,
    STREAM_CAPTURE_IMPLICIT = 906,
    CAPTURED_EVENT = 907,
    STREAM_CAPTURE_WRONG_THREAD = 908,
    GRAPH_EXEC_UPDATE_FAILURE = 910,
    UNKNOWN = 999,
}

impl CuResult {
    pub const SUCCESS: CuResult = CuResult(0);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// `Ok(())` for success, `Err(self)` otherwise.
    pub fn ok(self) -> Result<(), CuResult> {
        if self.is_success() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Whether this error poisons the context, as it does in CUDA: after it every later call
    /// in the same context fails with the same code.
    pub fn is_sticky(self) -> bool {
        matches!(self.0, 700 | 714..=719)
    }
}

impl fmt::Debug for CuResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for CuResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for CuResult {}

/// `CUdevice_attribute` numbers that netgpu reports (the device query carries any number of
/// `(attribute, value)` pairs; these are the ones both executors fill in).
pub mod attr {
    pub const MAX_THREADS_PER_BLOCK: u32 = 1;
    pub const MAX_BLOCK_DIM_X: u32 = 2;
    pub const MAX_BLOCK_DIM_Y: u32 = 3;
    pub const MAX_BLOCK_DIM_Z: u32 = 4;
    pub const MAX_GRID_DIM_X: u32 = 5;
    pub const MAX_GRID_DIM_Y: u32 = 6;
    pub const MAX_GRID_DIM_Z: u32 = 7;
    pub const MAX_SHARED_MEMORY_PER_BLOCK: u32 = 8;
    pub const TOTAL_CONSTANT_MEMORY: u32 = 9;
    pub const WARP_SIZE: u32 = 10;
    pub const MAX_PITCH: u32 = 11;
    pub const MAX_REGISTERS_PER_BLOCK: u32 = 12;
    pub const CLOCK_RATE: u32 = 13;
    pub const TEXTURE_ALIGNMENT: u32 = 14;
    pub const MULTIPROCESSOR_COUNT: u32 = 16;
    pub const INTEGRATED: u32 = 18;
    pub const CAN_MAP_HOST_MEMORY: u32 = 19;
    pub const CONCURRENT_KERNELS: u32 = 31;
    pub const PCI_BUS_ID: u32 = 33;
    pub const PCI_DEVICE_ID: u32 = 34;
    pub const MEMORY_CLOCK_RATE: u32 = 36;
    pub const GLOBAL_MEMORY_BUS_WIDTH: u32 = 37;
    pub const L2_CACHE_SIZE: u32 = 38;
    pub const MAX_THREADS_PER_MULTIPROCESSOR: u32 = 39;
    pub const ASYNC_ENGINE_COUNT: u32 = 40;
    pub const UNIFIED_ADDRESSING: u32 = 41;
    pub const COMPUTE_CAPABILITY_MAJOR: u32 = 75;
    pub const COMPUTE_CAPABILITY_MINOR: u32 = 76;
    pub const MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: u32 = 81;
    pub const MAX_REGISTERS_PER_MULTIPROCESSOR: u32 = 82;
    pub const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: u32 = 97;
}

/// `CUfunction_attribute` numbers (`cuFuncGetAttribute`, `cuFuncSetAttribute`); a function
/// record carries `(attribute, value)` pairs.
pub mod func_attr {
    pub const MAX_THREADS_PER_BLOCK: u32 = 0;
    pub const SHARED_SIZE_BYTES: u32 = 1;
    pub const CONST_SIZE_BYTES: u32 = 2;
    pub const LOCAL_SIZE_BYTES: u32 = 3;
    pub const NUM_REGS: u32 = 4;
    pub const PTX_VERSION: u32 = 5;
    pub const BINARY_VERSION: u32 = 6;
    pub const CACHE_MODE_CA: u32 = 7;
    pub const MAX_DYNAMIC_SHARED_SIZE_BYTES: u32 = 8;
    pub const PREFERRED_SHARED_MEMORY_CARVEOUT: u32 = 9;
    pub const CLUSTER_SIZE_MUST_BE_SET: u32 = 10;
    pub const REQUIRED_CLUSTER_WIDTH: u32 = 11;
    pub const REQUIRED_CLUSTER_HEIGHT: u32 = 12;
    pub const REQUIRED_CLUSTER_DEPTH: u32 = 13;
    pub const NON_PORTABLE_CLUSTER_SIZE_ALLOWED: u32 = 14;
    pub const CLUSTER_SCHEDULING_POLICY_PREFERENCE: u32 = 15;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_driver_api() {
        assert_eq!(CuResult::SUCCESS.name(), "CUDA_SUCCESS");
        assert_eq!(
            CuResult::ILLEGAL_ADDRESS.name(),
            "CUDA_ERROR_ILLEGAL_ADDRESS"
        );
        assert_eq!(CuResult(123456).name(), "CUDA_ERROR_UNKNOWN");
        assert_eq!(CuResult::OUT_OF_MEMORY.0, 2);
    }

    #[test]
    fn launch_faults_are_sticky_but_argument_errors_are_not() {
        assert!(CuResult::ILLEGAL_ADDRESS.is_sticky());
        assert!(CuResult::MISALIGNED_ADDRESS.is_sticky());
        assert!(!CuResult::INVALID_VALUE.is_sticky());
        assert!(!CuResult::OUT_OF_MEMORY.is_sticky());
    }
}
