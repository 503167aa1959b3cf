//! The CPU executor's answer to every `CUdevice_attribute` of CUDA 13.5 (one value for each of
//! `attr::ALL`; the table is documented in `docs/backend.md`).
//!
//! The values describe what the executor really is and enforces: compute capability 8.0,
//! 1024 threads and 48 KiB of shared memory per block (64 KiB opt-in through
//! `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), warps of 32, one worker thread per
//! "multiprocessor" with the interpreter's residency limits (2048 threads, 32 blocks, 227 KiB
//! of shared memory per multiprocessor: the occupancy calculators and cooperative launches
//! agree), unified addressing, no
//! mapped host memory, no managed memory, no textures or surfaces (limits 0), concurrent
//! kernels and copies on separate streams, stream priorities, cooperative launches.

use netgpu_proto::cuda::attr::{self, *};

// Renamed so that the attribute numbers of the glob import keep their names in the match.
use super::{
    COMPUTE_CAPABILITY, MAX_SHARED_OPTIN as SHARED_OPTIN, MAX_SHARED_PER_BLOCK as SHARED_PER_BLOCK,
    MAX_THREADS_PER_BLOCK as BLOCK_THREADS,
};
use crate::executor::limits::{MAX_BLOCK, MAX_GRID, MAX_PITCH as PITCH_LIMIT};

/// PCI location the CPU executor reports, derived from its device name so it is stable across
/// restarts and differs between backends configured with different names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciLocation {
    pub domain: i32,
    pub bus: i32,
    pub device: i32,
}

impl PciLocation {
    pub fn for_name(name: &str) -> PciLocation {
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let mut h: u32 = 0x811c_9dc5;
        for b in name.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        PciLocation {
            domain: 0,
            bus: (1 + h % 255) as i32,
            device: ((h >> 8) % 32) as i32,
        }
    }
}

/// The value of attribute `a` for an executor with `workers` block threads.
pub fn value(a: u32, workers: u32, pci: PciLocation) -> i32 {
    let workers = workers.max(1) as i32;
    match a {
        MAX_THREADS_PER_BLOCK => MAX_THREADS_PER_BLOCK_VALUE,
        MAX_BLOCK_DIM_X => MAX_BLOCK[0] as i32,
        MAX_BLOCK_DIM_Y => MAX_BLOCK[1] as i32,
        MAX_BLOCK_DIM_Z => MAX_BLOCK[2] as i32,
        MAX_GRID_DIM_X => MAX_GRID[0] as i32,
        MAX_GRID_DIM_Y => MAX_GRID[1] as i32,
        MAX_GRID_DIM_Z => MAX_GRID[2] as i32,
        MAX_SHARED_MEMORY_PER_BLOCK => SHARED_PER_BLOCK as i32,
        TOTAL_CONSTANT_MEMORY => 65_536,
        WARP_SIZE => 32,
        MAX_PITCH => MAX_PITCH_VALUE,
        MAX_REGISTERS_PER_BLOCK => 65_536,
        // %clock and %clock64 count nanoseconds: a 1 GHz clock.
        CLOCK_RATE => 1_000_000,
        TEXTURE_ALIGNMENT | SURFACE_ALIGNMENT => 512,
        TEXTURE_PITCH_ALIGNMENT => 32,
        // Copies on one stream run while kernels run on another.
        GPU_OVERLAP => 1,
        MULTIPROCESSOR_COUNT => workers,
        INTEGRATED => 0,
        CAN_MAP_HOST_MEMORY => 0,
        COMPUTE_MODE => 0,
        CONCURRENT_KERNELS => 1,
        ECC_ENABLED => 0,
        PCI_BUS_ID => pci.bus,
        PCI_DEVICE_ID => pci.device,
        PCI_DOMAIN_ID => pci.domain,
        TCC_DRIVER => 0,
        MEMORY_CLOCK_RATE => 1_000_000,
        GLOBAL_MEMORY_BUS_WIDTH => 64,
        L2_CACHE_SIZE => 4 << 20,
        // The interpreter's residency model (time-sliced threads), which cooperative launches
        // obey: the occupancy calculators see what the executor enforces.
        MAX_THREADS_PER_MULTIPROCESSOR => netgpu_ptx::exec::MAX_THREADS_PER_SM as i32,
        MAX_BLOCKS_PER_MULTIPROCESSOR => netgpu_ptx::exec::MAX_BLOCKS_PER_SM as i32,
        ASYNC_ENGINE_COUNT => 2,
        UNIFIED_ADDRESSING => 1,
        COMPUTE_CAPABILITY_MAJOR => COMPUTE_CAPABILITY.0 as i32,
        COMPUTE_CAPABILITY_MINOR => COMPUTE_CAPABILITY.1 as i32,
        STREAM_PRIORITIES_SUPPORTED => 1,
        GLOBAL_L1_CACHE_SUPPORTED | LOCAL_L1_CACHE_SUPPORTED => 1,
        MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => netgpu_ptx::exec::MAX_SHARED_MEMORY as i32,
        // Never the limit: 64 registers (the most NUM_REGS reports) for every resident thread.
        MAX_REGISTERS_PER_MULTIPROCESSOR => 64 * netgpu_ptx::exec::MAX_THREADS_PER_SM as i32,
        MANAGED_MEMORY | CONCURRENT_MANAGED_ACCESS | PAGEABLE_MEMORY_ACCESS => 0,
        // The interpreter computes doubles as fast as floats.
        SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO => 1,
        COOPERATIVE_LAUNCH => 1,
        MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => SHARED_OPTIN as i32,
        // cuMemFreeAsync is stream-ordered (the guest library builds pools on it).
        MEMORY_POOLS_SUPPORTED => 1,
        MEM_SYNC_DOMAIN_COUNT => 1,
        NUMA_ID | HOST_NUMA_ID => -1,
        // Everything else is a feature the executor does not have (textures, surfaces,
        // clusters, IPC, external memory, multicast, ...): 0.
        _ => 0,
    }
}

const MAX_THREADS_PER_BLOCK_VALUE: i32 = BLOCK_THREADS as i32;
const MAX_PITCH_VALUE: i32 = PITCH_LIMIT as i32;

/// Every attribute with its value.
pub fn table(workers: u32, pci: PciLocation) -> Vec<(u32, i32)> {
    attr::ALL
        .iter()
        .map(|&(a, _)| (a, value(a, workers, pci)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_has_a_value_and_the_limits_agree() {
        let pci = PciLocation::for_name("x");
        let t = table(2, pci);
        assert_eq!(t.len(), attr::ALL.len());
        assert_eq!(t.last().map(|x| x.0), Some(attr::LAST));
        let get = |a| t.iter().find(|x| x.0 == a).map(|x| x.1).unwrap();
        assert_eq!(get(WARP_SIZE), 32);
        assert_eq!(get(MAX_SHARED_MEMORY_PER_BLOCK), 48 * 1024);
        assert_eq!(get(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), 64 * 1024);
        assert_eq!(get(UNIFIED_ADDRESSING), 1);
        assert_eq!(get(CAN_MAP_HOST_MEMORY), 0);
        assert_eq!(get(MANAGED_MEMORY), 0);
        assert_eq!(get(CONCURRENT_KERNELS), 1);
        assert_eq!(get(MULTIPROCESSOR_COUNT), 2);
        assert_eq!(get(MAX_THREADS_PER_BLOCK), 1024);
        assert_eq!(get(MAX_PITCH), i32::MAX);
        assert!(get(MAX_THREADS_PER_MULTIPROCESSOR) >= get(MAX_THREADS_PER_BLOCK));
        assert!(
            get(MAX_SHARED_MEMORY_PER_MULTIPROCESSOR) >= get(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        );
        assert!(get(MAX_REGISTERS_PER_BLOCK) >= 64 * get(MAX_THREADS_PER_BLOCK));
        assert!(
            get(MAX_REGISTERS_PER_MULTIPROCESSOR) >= 64 * get(MAX_THREADS_PER_MULTIPROCESSOR),
            "registers never limit occupancy: the executor has none"
        );
    }

    #[test]
    fn pci_locations_are_stable_and_name_dependent() {
        let a = PciLocation::for_name("netgpu CPU executor");
        assert_eq!(a, PciLocation::for_name("netgpu CPU executor"));
        assert_ne!(a, PciLocation::for_name("another backend"));
        assert!((1..=255).contains(&a.bus) && (0..32).contains(&a.device));
    }
}
