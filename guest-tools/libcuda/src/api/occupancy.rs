//! Occupancy (`cuOccupancy*`): how many blocks of a function fit on one multiprocessor, from
//! the device's per-multiprocessor limits and the function's attributes, as NVIDIA's
//! occupancy calculator (`cuda_occupancy.h`) computes it.

use std::ffi::{c_int, c_uint};

use netgpu_proto::cuda::{attr, func_attr, CuResult};

use super::module::function_attribute;
use super::{guard, handle_of, put, CUresult, Opaque};
use crate::state::{self, Driver, Function};

/// `CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR`.
const MAX_BLOCKS_PER_SM: u32 = 106;
/// `size_t (*)(int blockSize)`: dynamic shared memory a block of that size needs.
pub type SmemFn = Option<extern "C" fn(c_int) -> usize>;

fn dev(drv: &Driver, a: u32) -> u64 {
    super::device::attribute(&drv.info, a as c_int)
        .unwrap_or(0)
        .max(0) as u64
}

/// Blocks of `threads` threads with `smem` bytes of dynamic shared memory that fit on one
/// multiprocessor.
pub fn max_active_blocks(
    drv: &Driver,
    f: &Function,
    threads: u32,
    smem: usize,
) -> Result<u32, CuResult> {
    if threads == 0 {
        return Err(CuResult::INVALID_VALUE);
    }
    let max_threads_fn =
        function_attribute(drv, f, func_attr::MAX_THREADS_PER_BLOCK)?.max(0) as u64;
    if max_threads_fn > 0 && u64::from(threads) > max_threads_fn {
        return Ok(0);
    }
    let warp = dev(drv, attr::WARP_SIZE).max(1);
    let warps = u64::from(threads).div_ceil(warp);
    let mut limit = match dev(drv, MAX_BLOCKS_PER_SM) {
        0 => 32,
        n => n,
    };
    let sm_threads = dev(drv, attr::MAX_THREADS_PER_MULTIPROCESSOR);
    if sm_threads > 0 {
        limit = limit.min(sm_threads / (warps * warp));
    }
    let smem_block =
        function_attribute(drv, f, func_attr::SHARED_SIZE_BYTES)?.max(0) as u64 + smem as u64;
    let sm_smem = dev(drv, attr::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
    if smem_block > 0 && sm_smem > 0 {
        limit = limit.min(sm_smem / smem_block);
    }
    let regs = function_attribute(drv, f, func_attr::NUM_REGS)?.max(0) as u64;
    let sm_regs = dev(drv, attr::MAX_REGISTERS_PER_MULTIPROCESSOR);
    if regs > 0 && sm_regs > 0 {
        limit = limit.min(sm_regs / (regs * warps * warp));
    }
    Ok(limit.min(u64::from(u32::MAX)) as u32)
}

/// # Safety
/// `blocks` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    blocks: *mut c_int,
    func: Opaque,
    block_size: c_int,
    smem: usize,
    _flags: c_uint,
) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let f = drv.function(handle_of(func))?;
        if block_size <= 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let n = max_active_blocks(drv, &f, block_size as u32, smem)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(blocks, n.min(i32::MAX as u32) as c_int) }
    })
}

/// # Safety
/// As [`cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags`].
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    blocks: *mut c_int,
    func: Opaque,
    block_size: c_int,
    smem: usize,
) -> CUresult {
    // SAFETY: same contract.
    unsafe {
        cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, func, block_size, smem, 0)
    }
}

/// The block size with the highest occupancy (ties: the larger block), and the grid size that
/// fills the device with it.
///
/// # Safety
/// `min_grid` and `block` NULL or writable; `smem_fn` NULL or a valid callback.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid: *mut c_int,
    block: *mut c_int,
    func: Opaque,
    smem_fn: SmemFn,
    smem: usize,
    block_limit: c_int,
    _flags: c_uint,
) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let f = drv.function(handle_of(func))?;
        let warp = dev(drv, attr::WARP_SIZE).max(1) as u32;
        let mut max = function_attribute(drv, &f, func_attr::MAX_THREADS_PER_BLOCK)?.max(0) as u32;
        if max == 0 {
            max = dev(drv, attr::MAX_THREADS_PER_BLOCK) as u32;
        }
        if block_limit > 0 {
            max = max.min(block_limit as u32);
        }
        let mut best = (0u64, 0u32, 0u32);
        let mut size = max.div_ceil(warp) * warp;
        while size >= warp {
            let b = size.min(max);
            let s = smem_fn.map_or(smem, |cb| cb(b as c_int));
            let n = max_active_blocks(drv, &f, b, s)?;
            let occ = u64::from(n) * u64::from(b);
            if occ > best.0 {
                best = (occ, b, n);
            }
            size -= warp;
        }
        if best.1 == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let sms = dev(drv, attr::MULTIPROCESSOR_COUNT).max(1) as u32;
        // SAFETY: the caller's out-pointers.
        unsafe {
            put(
                min_grid,
                best.2.saturating_mul(sms).min(i32::MAX as u32) as c_int,
            )?;
            put(block, best.1 as c_int)
        }
    })
}

/// # Safety
/// As [`cuOccupancyMaxPotentialBlockSizeWithFlags`].
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSize(
    min_grid: *mut c_int,
    block: *mut c_int,
    func: Opaque,
    smem_fn: SmemFn,
    smem: usize,
    block_limit: c_int,
) -> CUresult {
    // SAFETY: same contract.
    unsafe {
        cuOccupancyMaxPotentialBlockSizeWithFlags(
            min_grid,
            block,
            func,
            smem_fn,
            smem,
            block_limit,
            0,
        )
    }
}

/// Dynamic shared memory a block may use with `blocks` blocks of `block_size` resident.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    out: *mut usize,
    func: Opaque,
    blocks: c_int,
    block_size: c_int,
) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let f = drv.function(handle_of(func))?;
        if blocks <= 0 || block_size <= 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if max_active_blocks(drv, &f, block_size as u32, 0)? < blocks as u32 {
            // SAFETY: the caller's out-pointer.
            return unsafe { put(out, 0) };
        }
        let sm_smem = dev(drv, attr::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
        let static_smem = function_attribute(drv, &f, func_attr::SHARED_SIZE_BYTES)?.max(0) as u64;
        let per_block = (sm_smem / blocks as u64).saturating_sub(static_smem);
        let cap =
            function_attribute(drv, &f, func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES)?.max(0) as u64;
        // SAFETY: the caller's out-pointer.
        unsafe { put(out, per_block.min(cap) as usize) }
    })
}
