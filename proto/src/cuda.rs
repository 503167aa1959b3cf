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
    COOPERATIVE_LAUNCH_TOO_LARGE = 720,
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
    /// in the same context fails with the same code (illegal address, launch timeout, device
    /// assert, and the launch-failure family 714..=719).
    pub fn is_sticky(self) -> bool {
        matches!(self.0, 700 | 702 | 710 | 714..=719)
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

/// `CUdevice_attribute` numbers (the device query carries `(attribute, value)` pairs; both
/// executors answer every one of [`attr::ALL`]). Generated from CUDA 13.5's `cuda.h`; where
/// the header has two names for one number (`SHARED_MEMORY_PER_BLOCK` = 8, ...) the first is
/// used.
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
    pub const GPU_OVERLAP: u32 = 15;
    pub const MULTIPROCESSOR_COUNT: u32 = 16;
    pub const KERNEL_EXEC_TIMEOUT: u32 = 17;
    pub const INTEGRATED: u32 = 18;
    pub const CAN_MAP_HOST_MEMORY: u32 = 19;
    pub const COMPUTE_MODE: u32 = 20;
    pub const MAXIMUM_TEXTURE1D_WIDTH: u32 = 21;
    pub const MAXIMUM_TEXTURE2D_WIDTH: u32 = 22;
    pub const MAXIMUM_TEXTURE2D_HEIGHT: u32 = 23;
    pub const MAXIMUM_TEXTURE3D_WIDTH: u32 = 24;
    pub const MAXIMUM_TEXTURE3D_HEIGHT: u32 = 25;
    pub const MAXIMUM_TEXTURE3D_DEPTH: u32 = 26;
    pub const MAXIMUM_TEXTURE2D_LAYERED_WIDTH: u32 = 27;
    pub const MAXIMUM_TEXTURE2D_LAYERED_HEIGHT: u32 = 28;
    pub const MAXIMUM_TEXTURE2D_LAYERED_LAYERS: u32 = 29;
    pub const SURFACE_ALIGNMENT: u32 = 30;
    pub const CONCURRENT_KERNELS: u32 = 31;
    pub const ECC_ENABLED: u32 = 32;
    pub const PCI_BUS_ID: u32 = 33;
    pub const PCI_DEVICE_ID: u32 = 34;
    pub const TCC_DRIVER: u32 = 35;
    pub const MEMORY_CLOCK_RATE: u32 = 36;
    pub const GLOBAL_MEMORY_BUS_WIDTH: u32 = 37;
    pub const L2_CACHE_SIZE: u32 = 38;
    pub const MAX_THREADS_PER_MULTIPROCESSOR: u32 = 39;
    pub const ASYNC_ENGINE_COUNT: u32 = 40;
    pub const UNIFIED_ADDRESSING: u32 = 41;
    pub const MAXIMUM_TEXTURE1D_LAYERED_WIDTH: u32 = 42;
    pub const MAXIMUM_TEXTURE1D_LAYERED_LAYERS: u32 = 43;
    pub const CAN_TEX2D_GATHER: u32 = 44;
    pub const MAXIMUM_TEXTURE2D_GATHER_WIDTH: u32 = 45;
    pub const MAXIMUM_TEXTURE2D_GATHER_HEIGHT: u32 = 46;
    pub const MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE: u32 = 47;
    pub const MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE: u32 = 48;
    pub const MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE: u32 = 49;
    pub const PCI_DOMAIN_ID: u32 = 50;
    pub const TEXTURE_PITCH_ALIGNMENT: u32 = 51;
    pub const MAXIMUM_TEXTURECUBEMAP_WIDTH: u32 = 52;
    pub const MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH: u32 = 53;
    pub const MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS: u32 = 54;
    pub const MAXIMUM_SURFACE1D_WIDTH: u32 = 55;
    pub const MAXIMUM_SURFACE2D_WIDTH: u32 = 56;
    pub const MAXIMUM_SURFACE2D_HEIGHT: u32 = 57;
    pub const MAXIMUM_SURFACE3D_WIDTH: u32 = 58;
    pub const MAXIMUM_SURFACE3D_HEIGHT: u32 = 59;
    pub const MAXIMUM_SURFACE3D_DEPTH: u32 = 60;
    pub const MAXIMUM_SURFACE1D_LAYERED_WIDTH: u32 = 61;
    pub const MAXIMUM_SURFACE1D_LAYERED_LAYERS: u32 = 62;
    pub const MAXIMUM_SURFACE2D_LAYERED_WIDTH: u32 = 63;
    pub const MAXIMUM_SURFACE2D_LAYERED_HEIGHT: u32 = 64;
    pub const MAXIMUM_SURFACE2D_LAYERED_LAYERS: u32 = 65;
    pub const MAXIMUM_SURFACECUBEMAP_WIDTH: u32 = 66;
    pub const MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH: u32 = 67;
    pub const MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS: u32 = 68;
    pub const MAXIMUM_TEXTURE1D_LINEAR_WIDTH: u32 = 69;
    pub const MAXIMUM_TEXTURE2D_LINEAR_WIDTH: u32 = 70;
    pub const MAXIMUM_TEXTURE2D_LINEAR_HEIGHT: u32 = 71;
    pub const MAXIMUM_TEXTURE2D_LINEAR_PITCH: u32 = 72;
    pub const MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH: u32 = 73;
    pub const MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT: u32 = 74;
    pub const COMPUTE_CAPABILITY_MAJOR: u32 = 75;
    pub const COMPUTE_CAPABILITY_MINOR: u32 = 76;
    pub const MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH: u32 = 77;
    pub const STREAM_PRIORITIES_SUPPORTED: u32 = 78;
    pub const GLOBAL_L1_CACHE_SUPPORTED: u32 = 79;
    pub const LOCAL_L1_CACHE_SUPPORTED: u32 = 80;
    pub const MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: u32 = 81;
    pub const MAX_REGISTERS_PER_MULTIPROCESSOR: u32 = 82;
    pub const MANAGED_MEMORY: u32 = 83;
    pub const MULTI_GPU_BOARD: u32 = 84;
    pub const MULTI_GPU_BOARD_GROUP_ID: u32 = 85;
    pub const HOST_NATIVE_ATOMIC_SUPPORTED: u32 = 86;
    pub const SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: u32 = 87;
    pub const PAGEABLE_MEMORY_ACCESS: u32 = 88;
    pub const CONCURRENT_MANAGED_ACCESS: u32 = 89;
    pub const COMPUTE_PREEMPTION_SUPPORTED: u32 = 90;
    pub const CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: u32 = 91;
    pub const CAN_USE_STREAM_MEM_OPS_V1: u32 = 92;
    pub const CAN_USE_64_BIT_STREAM_MEM_OPS_V1: u32 = 93;
    pub const CAN_USE_STREAM_WAIT_VALUE_NOR_V1: u32 = 94;
    pub const COOPERATIVE_LAUNCH: u32 = 95;
    pub const COOPERATIVE_MULTI_DEVICE_LAUNCH: u32 = 96;
    pub const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: u32 = 97;
    pub const CAN_FLUSH_REMOTE_WRITES: u32 = 98;
    pub const HOST_REGISTER_SUPPORTED: u32 = 99;
    pub const PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES: u32 = 100;
    pub const DIRECT_MANAGED_MEM_ACCESS_FROM_HOST: u32 = 101;
    pub const VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED: u32 = 102;
    pub const HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: u32 = 103;
    pub const HANDLE_TYPE_WIN32_HANDLE_SUPPORTED: u32 = 104;
    pub const HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED: u32 = 105;
    pub const MAX_BLOCKS_PER_MULTIPROCESSOR: u32 = 106;
    pub const GENERIC_COMPRESSION_SUPPORTED: u32 = 107;
    pub const MAX_PERSISTING_L2_CACHE_SIZE: u32 = 108;
    pub const MAX_ACCESS_POLICY_WINDOW_SIZE: u32 = 109;
    pub const GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED: u32 = 110;
    pub const RESERVED_SHARED_MEMORY_PER_BLOCK: u32 = 111;
    pub const SPARSE_CUDA_ARRAY_SUPPORTED: u32 = 112;
    pub const READ_ONLY_HOST_REGISTER_SUPPORTED: u32 = 113;
    pub const TIMELINE_SEMAPHORE_INTEROP_SUPPORTED: u32 = 114;
    pub const MEMORY_POOLS_SUPPORTED: u32 = 115;
    pub const GPU_DIRECT_RDMA_SUPPORTED: u32 = 116;
    pub const GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS: u32 = 117;
    pub const GPU_DIRECT_RDMA_WRITES_ORDERING: u32 = 118;
    pub const MEMPOOL_SUPPORTED_HANDLE_TYPES: u32 = 119;
    pub const CLUSTER_LAUNCH: u32 = 120;
    pub const DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED: u32 = 121;
    pub const CAN_USE_64_BIT_STREAM_MEM_OPS: u32 = 122;
    pub const CAN_USE_STREAM_WAIT_VALUE_NOR: u32 = 123;
    pub const DMA_BUF_SUPPORTED: u32 = 124;
    pub const IPC_EVENT_SUPPORTED: u32 = 125;
    pub const MEM_SYNC_DOMAIN_COUNT: u32 = 126;
    pub const TENSOR_MAP_ACCESS_SUPPORTED: u32 = 127;
    pub const HANDLE_TYPE_FABRIC_SUPPORTED: u32 = 128;
    pub const UNIFIED_FUNCTION_POINTERS: u32 = 129;
    pub const NUMA_CONFIG: u32 = 130;
    pub const NUMA_ID: u32 = 131;
    pub const MULTICAST_SUPPORTED: u32 = 132;
    pub const MPS_ENABLED: u32 = 133;
    pub const HOST_NUMA_ID: u32 = 134;
    pub const D3D12_CIG_SUPPORTED: u32 = 135;
    pub const MEM_DECOMPRESS_ALGORITHM_MASK: u32 = 136;
    pub const MEM_DECOMPRESS_MAXIMUM_LENGTH: u32 = 137;
    pub const VULKAN_CIG_SUPPORTED: u32 = 138;
    pub const GPU_PCI_DEVICE_ID: u32 = 139;
    pub const GPU_PCI_SUBSYSTEM_ID: u32 = 140;
    pub const HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: u32 = 141;
    pub const HOST_NUMA_MEMORY_POOLS_SUPPORTED: u32 = 142;
    pub const HOST_NUMA_MULTINODE_IPC_SUPPORTED: u32 = 143;
    pub const HOST_MEMORY_POOLS_SUPPORTED: u32 = 144;
    pub const HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: u32 = 145;
    pub const HOST_ALLOC_DMA_BUF_SUPPORTED: u32 = 146;
    pub const ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED: u32 = 147;
    pub const ATOMIC_REDUCTION_SUPPORTED: u32 = 148;
    pub const LOCALITY_DOMAIN_COUNT: u32 = 149;
    pub const MAX_OVERSIZED_SHARED_MEMORY_PER_BLOCK: u32 = 150;
    pub const D3D12_CIG_STREAMS_SUPPORTED: u32 = 151;
    pub const DMA_BUF_MMAP_SUPPORTED: u32 = 152;
    pub const LOGICAL_ENDPOINT_UNICAST_SUPPORTED: u32 = 153;
    pub const LOGICAL_ENDPOINT_MULTICAST_SUPPORTED: u32 = 154;
    pub const LOGICAL_ENDPOINT_COUNTED_OPS_SUPPORTED: u32 = 155;
    pub const LOGICAL_ENDPOINT_UNICAST_ACCESS_ON_OWNER_DEVICE_SUPPORTED: u32 = 156;
    pub const LOCALITY_DOMAIN_MULTIPROCESSOR_COUNT: u32 = 157;
    pub const LOGICAL_ENDPOINT_SUPPORTED_HANDLE_TYPES: u32 = 158;
    pub const VULKAN_CIG_STREAMS_SUPPORTED: u32 = 159;
    pub const TENSOR_MAP_LARGE_TENSOR_MIN_SIZE: u32 = 160;
    pub const GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED: u32 = 161;
    /// Highest attribute number CUDA 13.5 defines.
    pub const LAST: u32 = 161;
    /// Every attribute `(number, name without the CU_DEVICE_ATTRIBUTE_ prefix)`, in order.
    pub const ALL: [(u32, &str); 161] = [
        (MAX_THREADS_PER_BLOCK, "MAX_THREADS_PER_BLOCK"),
        (MAX_BLOCK_DIM_X, "MAX_BLOCK_DIM_X"),
        (MAX_BLOCK_DIM_Y, "MAX_BLOCK_DIM_Y"),
        (MAX_BLOCK_DIM_Z, "MAX_BLOCK_DIM_Z"),
        (MAX_GRID_DIM_X, "MAX_GRID_DIM_X"),
        (MAX_GRID_DIM_Y, "MAX_GRID_DIM_Y"),
        (MAX_GRID_DIM_Z, "MAX_GRID_DIM_Z"),
        (MAX_SHARED_MEMORY_PER_BLOCK, "MAX_SHARED_MEMORY_PER_BLOCK"),
        (TOTAL_CONSTANT_MEMORY, "TOTAL_CONSTANT_MEMORY"),
        (WARP_SIZE, "WARP_SIZE"),
        (MAX_PITCH, "MAX_PITCH"),
        (MAX_REGISTERS_PER_BLOCK, "MAX_REGISTERS_PER_BLOCK"),
        (CLOCK_RATE, "CLOCK_RATE"),
        (TEXTURE_ALIGNMENT, "TEXTURE_ALIGNMENT"),
        (GPU_OVERLAP, "GPU_OVERLAP"),
        (MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT"),
        (KERNEL_EXEC_TIMEOUT, "KERNEL_EXEC_TIMEOUT"),
        (INTEGRATED, "INTEGRATED"),
        (CAN_MAP_HOST_MEMORY, "CAN_MAP_HOST_MEMORY"),
        (COMPUTE_MODE, "COMPUTE_MODE"),
        (MAXIMUM_TEXTURE1D_WIDTH, "MAXIMUM_TEXTURE1D_WIDTH"),
        (MAXIMUM_TEXTURE2D_WIDTH, "MAXIMUM_TEXTURE2D_WIDTH"),
        (MAXIMUM_TEXTURE2D_HEIGHT, "MAXIMUM_TEXTURE2D_HEIGHT"),
        (MAXIMUM_TEXTURE3D_WIDTH, "MAXIMUM_TEXTURE3D_WIDTH"),
        (MAXIMUM_TEXTURE3D_HEIGHT, "MAXIMUM_TEXTURE3D_HEIGHT"),
        (MAXIMUM_TEXTURE3D_DEPTH, "MAXIMUM_TEXTURE3D_DEPTH"),
        (
            MAXIMUM_TEXTURE2D_LAYERED_WIDTH,
            "MAXIMUM_TEXTURE2D_LAYERED_WIDTH",
        ),
        (
            MAXIMUM_TEXTURE2D_LAYERED_HEIGHT,
            "MAXIMUM_TEXTURE2D_LAYERED_HEIGHT",
        ),
        (
            MAXIMUM_TEXTURE2D_LAYERED_LAYERS,
            "MAXIMUM_TEXTURE2D_LAYERED_LAYERS",
        ),
        (SURFACE_ALIGNMENT, "SURFACE_ALIGNMENT"),
        (CONCURRENT_KERNELS, "CONCURRENT_KERNELS"),
        (ECC_ENABLED, "ECC_ENABLED"),
        (PCI_BUS_ID, "PCI_BUS_ID"),
        (PCI_DEVICE_ID, "PCI_DEVICE_ID"),
        (TCC_DRIVER, "TCC_DRIVER"),
        (MEMORY_CLOCK_RATE, "MEMORY_CLOCK_RATE"),
        (GLOBAL_MEMORY_BUS_WIDTH, "GLOBAL_MEMORY_BUS_WIDTH"),
        (L2_CACHE_SIZE, "L2_CACHE_SIZE"),
        (
            MAX_THREADS_PER_MULTIPROCESSOR,
            "MAX_THREADS_PER_MULTIPROCESSOR",
        ),
        (ASYNC_ENGINE_COUNT, "ASYNC_ENGINE_COUNT"),
        (UNIFIED_ADDRESSING, "UNIFIED_ADDRESSING"),
        (
            MAXIMUM_TEXTURE1D_LAYERED_WIDTH,
            "MAXIMUM_TEXTURE1D_LAYERED_WIDTH",
        ),
        (
            MAXIMUM_TEXTURE1D_LAYERED_LAYERS,
            "MAXIMUM_TEXTURE1D_LAYERED_LAYERS",
        ),
        (CAN_TEX2D_GATHER, "CAN_TEX2D_GATHER"),
        (
            MAXIMUM_TEXTURE2D_GATHER_WIDTH,
            "MAXIMUM_TEXTURE2D_GATHER_WIDTH",
        ),
        (
            MAXIMUM_TEXTURE2D_GATHER_HEIGHT,
            "MAXIMUM_TEXTURE2D_GATHER_HEIGHT",
        ),
        (
            MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE,
            "MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE",
        ),
        (
            MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE,
            "MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE",
        ),
        (
            MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE,
            "MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE",
        ),
        (PCI_DOMAIN_ID, "PCI_DOMAIN_ID"),
        (TEXTURE_PITCH_ALIGNMENT, "TEXTURE_PITCH_ALIGNMENT"),
        (MAXIMUM_TEXTURECUBEMAP_WIDTH, "MAXIMUM_TEXTURECUBEMAP_WIDTH"),
        (
            MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH,
            "MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH",
        ),
        (
            MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS,
            "MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS",
        ),
        (MAXIMUM_SURFACE1D_WIDTH, "MAXIMUM_SURFACE1D_WIDTH"),
        (MAXIMUM_SURFACE2D_WIDTH, "MAXIMUM_SURFACE2D_WIDTH"),
        (MAXIMUM_SURFACE2D_HEIGHT, "MAXIMUM_SURFACE2D_HEIGHT"),
        (MAXIMUM_SURFACE3D_WIDTH, "MAXIMUM_SURFACE3D_WIDTH"),
        (MAXIMUM_SURFACE3D_HEIGHT, "MAXIMUM_SURFACE3D_HEIGHT"),
        (MAXIMUM_SURFACE3D_DEPTH, "MAXIMUM_SURFACE3D_DEPTH"),
        (
            MAXIMUM_SURFACE1D_LAYERED_WIDTH,
            "MAXIMUM_SURFACE1D_LAYERED_WIDTH",
        ),
        (
            MAXIMUM_SURFACE1D_LAYERED_LAYERS,
            "MAXIMUM_SURFACE1D_LAYERED_LAYERS",
        ),
        (
            MAXIMUM_SURFACE2D_LAYERED_WIDTH,
            "MAXIMUM_SURFACE2D_LAYERED_WIDTH",
        ),
        (
            MAXIMUM_SURFACE2D_LAYERED_HEIGHT,
            "MAXIMUM_SURFACE2D_LAYERED_HEIGHT",
        ),
        (
            MAXIMUM_SURFACE2D_LAYERED_LAYERS,
            "MAXIMUM_SURFACE2D_LAYERED_LAYERS",
        ),
        (MAXIMUM_SURFACECUBEMAP_WIDTH, "MAXIMUM_SURFACECUBEMAP_WIDTH"),
        (
            MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH,
            "MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH",
        ),
        (
            MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS,
            "MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS",
        ),
        (
            MAXIMUM_TEXTURE1D_LINEAR_WIDTH,
            "MAXIMUM_TEXTURE1D_LINEAR_WIDTH",
        ),
        (
            MAXIMUM_TEXTURE2D_LINEAR_WIDTH,
            "MAXIMUM_TEXTURE2D_LINEAR_WIDTH",
        ),
        (
            MAXIMUM_TEXTURE2D_LINEAR_HEIGHT,
            "MAXIMUM_TEXTURE2D_LINEAR_HEIGHT",
        ),
        (
            MAXIMUM_TEXTURE2D_LINEAR_PITCH,
            "MAXIMUM_TEXTURE2D_LINEAR_PITCH",
        ),
        (
            MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH,
            "MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH",
        ),
        (
            MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT,
            "MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT",
        ),
        (COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR"),
        (COMPUTE_CAPABILITY_MINOR, "COMPUTE_CAPABILITY_MINOR"),
        (
            MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH,
            "MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH",
        ),
        (STREAM_PRIORITIES_SUPPORTED, "STREAM_PRIORITIES_SUPPORTED"),
        (GLOBAL_L1_CACHE_SUPPORTED, "GLOBAL_L1_CACHE_SUPPORTED"),
        (LOCAL_L1_CACHE_SUPPORTED, "LOCAL_L1_CACHE_SUPPORTED"),
        (
            MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
            "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR",
        ),
        (
            MAX_REGISTERS_PER_MULTIPROCESSOR,
            "MAX_REGISTERS_PER_MULTIPROCESSOR",
        ),
        (MANAGED_MEMORY, "MANAGED_MEMORY"),
        (MULTI_GPU_BOARD, "MULTI_GPU_BOARD"),
        (MULTI_GPU_BOARD_GROUP_ID, "MULTI_GPU_BOARD_GROUP_ID"),
        (HOST_NATIVE_ATOMIC_SUPPORTED, "HOST_NATIVE_ATOMIC_SUPPORTED"),
        (
            SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO,
            "SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO",
        ),
        (PAGEABLE_MEMORY_ACCESS, "PAGEABLE_MEMORY_ACCESS"),
        (CONCURRENT_MANAGED_ACCESS, "CONCURRENT_MANAGED_ACCESS"),
        (COMPUTE_PREEMPTION_SUPPORTED, "COMPUTE_PREEMPTION_SUPPORTED"),
        (
            CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM,
            "CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM",
        ),
        (CAN_USE_STREAM_MEM_OPS_V1, "CAN_USE_STREAM_MEM_OPS_V1"),
        (
            CAN_USE_64_BIT_STREAM_MEM_OPS_V1,
            "CAN_USE_64_BIT_STREAM_MEM_OPS_V1",
        ),
        (
            CAN_USE_STREAM_WAIT_VALUE_NOR_V1,
            "CAN_USE_STREAM_WAIT_VALUE_NOR_V1",
        ),
        (COOPERATIVE_LAUNCH, "COOPERATIVE_LAUNCH"),
        (
            COOPERATIVE_MULTI_DEVICE_LAUNCH,
            "COOPERATIVE_MULTI_DEVICE_LAUNCH",
        ),
        (
            MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN",
        ),
        (CAN_FLUSH_REMOTE_WRITES, "CAN_FLUSH_REMOTE_WRITES"),
        (HOST_REGISTER_SUPPORTED, "HOST_REGISTER_SUPPORTED"),
        (
            PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES,
            "PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES",
        ),
        (
            DIRECT_MANAGED_MEM_ACCESS_FROM_HOST,
            "DIRECT_MANAGED_MEM_ACCESS_FROM_HOST",
        ),
        (
            VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED,
            "VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED",
        ),
        (
            HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
            "HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED",
        ),
        (
            HANDLE_TYPE_WIN32_HANDLE_SUPPORTED,
            "HANDLE_TYPE_WIN32_HANDLE_SUPPORTED",
        ),
        (
            HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED,
            "HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED",
        ),
        (
            MAX_BLOCKS_PER_MULTIPROCESSOR,
            "MAX_BLOCKS_PER_MULTIPROCESSOR",
        ),
        (
            GENERIC_COMPRESSION_SUPPORTED,
            "GENERIC_COMPRESSION_SUPPORTED",
        ),
        (MAX_PERSISTING_L2_CACHE_SIZE, "MAX_PERSISTING_L2_CACHE_SIZE"),
        (
            MAX_ACCESS_POLICY_WINDOW_SIZE,
            "MAX_ACCESS_POLICY_WINDOW_SIZE",
        ),
        (
            GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED,
            "GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED",
        ),
        (
            RESERVED_SHARED_MEMORY_PER_BLOCK,
            "RESERVED_SHARED_MEMORY_PER_BLOCK",
        ),
        (SPARSE_CUDA_ARRAY_SUPPORTED, "SPARSE_CUDA_ARRAY_SUPPORTED"),
        (
            READ_ONLY_HOST_REGISTER_SUPPORTED,
            "READ_ONLY_HOST_REGISTER_SUPPORTED",
        ),
        (
            TIMELINE_SEMAPHORE_INTEROP_SUPPORTED,
            "TIMELINE_SEMAPHORE_INTEROP_SUPPORTED",
        ),
        (MEMORY_POOLS_SUPPORTED, "MEMORY_POOLS_SUPPORTED"),
        (GPU_DIRECT_RDMA_SUPPORTED, "GPU_DIRECT_RDMA_SUPPORTED"),
        (
            GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS,
            "GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS",
        ),
        (
            GPU_DIRECT_RDMA_WRITES_ORDERING,
            "GPU_DIRECT_RDMA_WRITES_ORDERING",
        ),
        (
            MEMPOOL_SUPPORTED_HANDLE_TYPES,
            "MEMPOOL_SUPPORTED_HANDLE_TYPES",
        ),
        (CLUSTER_LAUNCH, "CLUSTER_LAUNCH"),
        (
            DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED,
            "DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED",
        ),
        (
            CAN_USE_64_BIT_STREAM_MEM_OPS,
            "CAN_USE_64_BIT_STREAM_MEM_OPS",
        ),
        (
            CAN_USE_STREAM_WAIT_VALUE_NOR,
            "CAN_USE_STREAM_WAIT_VALUE_NOR",
        ),
        (DMA_BUF_SUPPORTED, "DMA_BUF_SUPPORTED"),
        (IPC_EVENT_SUPPORTED, "IPC_EVENT_SUPPORTED"),
        (MEM_SYNC_DOMAIN_COUNT, "MEM_SYNC_DOMAIN_COUNT"),
        (TENSOR_MAP_ACCESS_SUPPORTED, "TENSOR_MAP_ACCESS_SUPPORTED"),
        (HANDLE_TYPE_FABRIC_SUPPORTED, "HANDLE_TYPE_FABRIC_SUPPORTED"),
        (UNIFIED_FUNCTION_POINTERS, "UNIFIED_FUNCTION_POINTERS"),
        (NUMA_CONFIG, "NUMA_CONFIG"),
        (NUMA_ID, "NUMA_ID"),
        (MULTICAST_SUPPORTED, "MULTICAST_SUPPORTED"),
        (MPS_ENABLED, "MPS_ENABLED"),
        (HOST_NUMA_ID, "HOST_NUMA_ID"),
        (D3D12_CIG_SUPPORTED, "D3D12_CIG_SUPPORTED"),
        (
            MEM_DECOMPRESS_ALGORITHM_MASK,
            "MEM_DECOMPRESS_ALGORITHM_MASK",
        ),
        (
            MEM_DECOMPRESS_MAXIMUM_LENGTH,
            "MEM_DECOMPRESS_MAXIMUM_LENGTH",
        ),
        (VULKAN_CIG_SUPPORTED, "VULKAN_CIG_SUPPORTED"),
        (GPU_PCI_DEVICE_ID, "GPU_PCI_DEVICE_ID"),
        (GPU_PCI_SUBSYSTEM_ID, "GPU_PCI_SUBSYSTEM_ID"),
        (
            HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
            "HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED",
        ),
        (
            HOST_NUMA_MEMORY_POOLS_SUPPORTED,
            "HOST_NUMA_MEMORY_POOLS_SUPPORTED",
        ),
        (
            HOST_NUMA_MULTINODE_IPC_SUPPORTED,
            "HOST_NUMA_MULTINODE_IPC_SUPPORTED",
        ),
        (HOST_MEMORY_POOLS_SUPPORTED, "HOST_MEMORY_POOLS_SUPPORTED"),
        (
            HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
            "HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED",
        ),
        (HOST_ALLOC_DMA_BUF_SUPPORTED, "HOST_ALLOC_DMA_BUF_SUPPORTED"),
        (
            ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED,
            "ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED",
        ),
        (ATOMIC_REDUCTION_SUPPORTED, "ATOMIC_REDUCTION_SUPPORTED"),
        (LOCALITY_DOMAIN_COUNT, "LOCALITY_DOMAIN_COUNT"),
        (
            MAX_OVERSIZED_SHARED_MEMORY_PER_BLOCK,
            "MAX_OVERSIZED_SHARED_MEMORY_PER_BLOCK",
        ),
        (D3D12_CIG_STREAMS_SUPPORTED, "D3D12_CIG_STREAMS_SUPPORTED"),
        (DMA_BUF_MMAP_SUPPORTED, "DMA_BUF_MMAP_SUPPORTED"),
        (
            LOGICAL_ENDPOINT_UNICAST_SUPPORTED,
            "LOGICAL_ENDPOINT_UNICAST_SUPPORTED",
        ),
        (
            LOGICAL_ENDPOINT_MULTICAST_SUPPORTED,
            "LOGICAL_ENDPOINT_MULTICAST_SUPPORTED",
        ),
        (
            LOGICAL_ENDPOINT_COUNTED_OPS_SUPPORTED,
            "LOGICAL_ENDPOINT_COUNTED_OPS_SUPPORTED",
        ),
        (
            LOGICAL_ENDPOINT_UNICAST_ACCESS_ON_OWNER_DEVICE_SUPPORTED,
            "LOGICAL_ENDPOINT_UNICAST_ACCESS_ON_OWNER_DEVICE_SUPPORTED",
        ),
        (
            LOCALITY_DOMAIN_MULTIPROCESSOR_COUNT,
            "LOCALITY_DOMAIN_MULTIPROCESSOR_COUNT",
        ),
        (
            LOGICAL_ENDPOINT_SUPPORTED_HANDLE_TYPES,
            "LOGICAL_ENDPOINT_SUPPORTED_HANDLE_TYPES",
        ),
        (VULKAN_CIG_STREAMS_SUPPORTED, "VULKAN_CIG_STREAMS_SUPPORTED"),
        (
            TENSOR_MAP_LARGE_TENSOR_MIN_SIZE,
            "TENSOR_MAP_LARGE_TENSOR_MIN_SIZE",
        ),
        (
            GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED,
            "GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED",
        ),
    ];
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
    pub const DEVICE_NODE_UPDATE_SUPPORTED: u32 = 16;
    pub const SHARED_MEMORY_MODE: u32 = 17;
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
        assert!(CuResult::LAUNCH_TIMEOUT.is_sticky());
        assert!(CuResult::ASSERT.is_sticky());
        assert!(!CuResult::COOPERATIVE_LAUNCH_TOO_LARGE.is_sticky());
        assert!(!CuResult::LAUNCH_OUT_OF_RESOURCES.is_sticky());
        assert!(!CuResult::INVALID_VALUE.is_sticky());
        assert!(!CuResult::OUT_OF_MEMORY.is_sticky());
    }
}
