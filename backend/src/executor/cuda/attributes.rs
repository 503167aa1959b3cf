//! The CUDA executor's device attributes: every `CUdevice_attribute` of CUDA 13.5, asked of
//! the GPU's driver, with the features netgpu cannot offer across the network turned off.
//!
//! An attribute the driver does not know (a driver older than CUDA 13.5) reads 0, as the
//! driver itself reports a feature a device lacks. The overridden ones need the GPU to reach
//! the guest's memory or the guest to reach the GPU's (mapped and registered host memory,
//! managed memory, peer and IPC handles, direct RDMA), which no remote device can do.

use netgpu_proto::cuda::attr::{self, *};

use super::driver::Raw;
use cudarc::driver::sys;

/// Attributes netgpu reports as 0 whatever the GPU supports.
pub const NOT_ACROSS_THE_NETWORK: &[u32] = &[
    CAN_MAP_HOST_MEMORY,
    MANAGED_MEMORY,
    CONCURRENT_MANAGED_ACCESS,
    PAGEABLE_MEMORY_ACCESS,
    PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES,
    DIRECT_MANAGED_MEM_ACCESS_FROM_HOST,
    CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM,
    HOST_NATIVE_ATOMIC_SUPPORTED,
    HOST_REGISTER_SUPPORTED,
    READ_ONLY_HOST_REGISTER_SUPPORTED,
    CAN_FLUSH_REMOTE_WRITES,
    COOPERATIVE_MULTI_DEVICE_LAUNCH,
    MULTI_GPU_BOARD,
    VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED,
    HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
    HANDLE_TYPE_WIN32_HANDLE_SUPPORTED,
    HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED,
    HANDLE_TYPE_FABRIC_SUPPORTED,
    GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED,
    GPU_DIRECT_RDMA_SUPPORTED,
    GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS,
    GPU_DIRECT_RDMA_WRITES_ORDERING,
    MEMPOOL_SUPPORTED_HANDLE_TYPES,
    IPC_EVENT_SUPPORTED,
    DMA_BUF_SUPPORTED,
    TIMELINE_SEMAPHORE_INTEROP_SUPPORTED,
    MULTICAST_SUPPORTED,
    HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
    HOST_NUMA_MEMORY_POOLS_SUPPORTED,
    HOST_NUMA_MULTINODE_IPC_SUPPORTED,
    HOST_MEMORY_POOLS_SUPPORTED,
    HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
    HOST_ALLOC_DMA_BUF_SUPPORTED,
    ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED,
    DMA_BUF_MMAP_SUPPORTED,
];

/// Every attribute of `dev`, as the session reports them.
pub fn query(raw: &Raw, dev: sys::CUdevice) -> Vec<(u32, i32)> {
    attr::ALL
        .iter()
        .map(|&(a, _)| {
            if NOT_ACROSS_THE_NETWORK.contains(&a) {
                return (a, 0);
            }
            let mut v = 0;
            // SAFETY: out-pointer to a local; `dev` is a valid device; an attribute number the
            // driver does not know is answered with an error, not undefined behaviour (the C
            // API takes an int).
            let r = unsafe { (raw.device_attribute)(&mut v, a as i32, dev) };
            (a, if r == 0 { v } else { 0 })
        })
        .collect()
}
