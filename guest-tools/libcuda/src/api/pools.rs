//! Stream-ordered allocation and memory pools (`cuMemAllocAsync`, `cuMemPool*`).
//!
//! An allocation is made when the call is made (memory that exists earlier than the stream
//! needs it is always correct) and freed in stream order: the backend frees it once earlier
//! work on the stream is done (`MemFreeAsync`), or, on a backend without that operation,
//! after the work so far has drained. A pool here does not cache freed memory, so trimming
//! has nothing to release; its attributes read back as set, and its usage counters are the
//! live allocations made from it.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::Request;

use super::{ctx, guard, handle_of, opaque, put, stream_of, CUdeviceptr, CUresult, Opaque, R};
use crate::memmap;
use crate::state::{self, lock};

/// The device's default pool (a `CUmemoryPool` value).
const DEFAULT_POOL: u64 = 0x7e00_0000;

#[derive(Clone, Copy, Default)]
struct Pool {
    /// REUSE_FOLLOW_EVENT_DEPENDENCIES, REUSE_ALLOW_OPPORTUNISTIC, REUSE_ALLOW_INTERNAL_DEPENDENCIES.
    reuse: [c_int; 3],
    release_threshold: u64,
    used_high: u64,
}

static POOLS: Mutex<Option<HashMap<u64, Pool>>> = Mutex::new(None);
static CURRENT_POOL: AtomicU64 = AtomicU64::new(DEFAULT_POOL);
static NEXT_POOL: AtomicU64 = AtomicU64::new(DEFAULT_POOL + 16);
static NO_FREE_ASYNC: AtomicBool = AtomicBool::new(false);

fn with_pool<T>(id: u64, f: impl FnOnce(&mut Pool) -> T) -> Result<T, CuResult> {
    let mut g = lock(&POOLS);
    let m = g.get_or_insert_with(|| {
        let mut m = HashMap::new();
        m.insert(
            DEFAULT_POOL,
            Pool {
                reuse: [1, 1, 1],
                ..Pool::default()
            },
        );
        m
    });
    m.get_mut(&id).map(f).ok_or(CuResult::INVALID_VALUE)
}

fn alloc_from(dptr: *mut CUdeviceptr, size: usize, pool: u64) -> R {
    let ctx = ctx()?;
    if dptr.is_null() || size == 0 {
        return Err(CuResult::INVALID_VALUE);
    }
    with_pool(pool, |_| ())?;
    let p = super::memory::alloc(ctx, size as u64, pool)?;
    let used = memmap::pool_usage(pool);
    with_pool(pool, |pl| pl.used_high = pl.used_high.max(used))?;
    // SAFETY: the caller's out-pointer, checked above.
    unsafe { put(dptr, p) }
}

/// # Safety
/// `dptr` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    size: usize,
    stream: Opaque,
) -> CUresult {
    guard(|| {
        // Allocation in a capture would be a memory node, which graphs here do not have.
        super::graph::refuse_if_capturing(stream_of(stream))?;
        alloc_from(dptr, size, CURRENT_POOL.load(Ordering::Relaxed))
    })
}

/// # Safety
/// `dptr` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    size: usize,
    pool: Opaque,
    stream: Opaque,
) -> CUresult {
    guard(|| {
        super::graph::refuse_if_capturing(stream_of(stream))?;
        alloc_from(dptr, size, handle_of(pool))
    })
}

#[no_mangle]
pub extern "C" fn cuMemFreeAsync(ptr: CUdeviceptr, stream: Opaque) -> CUresult {
    guard(|| {
        ctx()?;
        let drv = state::driver()?;
        let stream = stream_of(stream);
        super::graph::refuse_if_capturing(stream)?;
        let mut done = false;
        if !NO_FREE_ASYNC.load(Ordering::Relaxed) {
            match drv.call(&Request::MemFreeAsync { ptr, stream }) {
                Ok(_) => done = true,
                Err(CuResult::NOT_SUPPORTED) => NO_FREE_ASYNC.store(true, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        if !done {
            drv.transport.flush()?;
            drv.call(&Request::StreamSynchronize { stream })?;
            drv.call(&Request::MemFree { ptr })?;
        }
        memmap::remove_device(ptr);
        Ok(())
    })
}

/// # Safety
/// `pool` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut Opaque, dev: c_int) -> CUresult {
    guard(|| {
        state::driver()?;
        if dev != 0 {
            return Err(CuResult::INVALID_DEVICE);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(pool, opaque(DEFAULT_POOL)) }
    })
}

/// # Safety
/// `pool` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetMemPool(pool: *mut Opaque, dev: c_int) -> CUresult {
    guard(|| {
        state::driver()?;
        if dev != 0 {
            return Err(CuResult::INVALID_DEVICE);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(pool, opaque(CURRENT_POOL.load(Ordering::Relaxed))) }
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceSetMemPool(dev: c_int, pool: Opaque) -> CUresult {
    guard(|| {
        state::driver()?;
        if dev != 0 {
            return Err(CuResult::INVALID_DEVICE);
        }
        with_pool(handle_of(pool), |_| ())?;
        CURRENT_POOL.store(handle_of(pool), Ordering::Relaxed);
        Ok(())
    })
}

/// `CUmemPoolProps`: allocation type (pinned = 1), handle types, location (type, id).
#[repr(C)]
pub struct PoolProps {
    alloc_type: c_int,
    handle_types: c_int,
    location_type: c_int,
    location_id: c_int,
}

/// # Safety
/// `pool` must be NULL or writable; `props` a valid `CUmemPoolProps`.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolCreate(pool: *mut Opaque, props: *const PoolProps) -> CUresult {
    guard(|| {
        state::driver()?;
        if pool.is_null() || props.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: the caller's properties.
        let p = unsafe { &*props };
        // Pinned device memory of device 0, no shareable handles.
        if p.alloc_type != 1 || p.location_type != 1 || p.location_id != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if p.handle_types != 0 {
            return Err(state::unsupported(
                "cuMemPoolCreate with shareable handle types",
            ));
        }
        let id = NEXT_POOL.fetch_add(16, Ordering::Relaxed);
        with_pool(DEFAULT_POOL, |_| ())?;
        lock(&POOLS).get_or_insert_with(HashMap::new).insert(
            id,
            Pool {
                reuse: [1, 1, 1],
                ..Pool::default()
            },
        );
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(pool, opaque(id)) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemPoolDestroy(pool: Opaque) -> CUresult {
    guard(|| {
        let id = handle_of(pool);
        if id == DEFAULT_POOL {
            return Err(CuResult::INVALID_VALUE);
        }
        with_pool(id, |_| ())?;
        lock(&POOLS).as_mut().map(|m| m.remove(&id));
        if CURRENT_POOL.load(Ordering::Relaxed) == id {
            CURRENT_POOL.store(DEFAULT_POOL, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Nothing is cached, so there is nothing to give back.
#[no_mangle]
pub extern "C" fn cuMemPoolTrimTo(pool: Opaque, _keep: usize) -> CUresult {
    guard(|| with_pool(handle_of(pool), |_| ()))
}

/// # Safety
/// `value` must be valid for the attribute's type.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAttribute(
    pool: Opaque,
    attr: c_int,
    value: *mut c_void,
) -> CUresult {
    guard(|| {
        let id = handle_of(pool);
        let p = with_pool(id, |p| *p)?;
        let used = memmap::pool_usage(id);
        // SAFETY: the caller's buffer of the attribute's type.
        unsafe {
            match attr {
                1..=3 => put(value.cast::<c_int>(), p.reuse[attr as usize - 1]),
                4 => put(value.cast::<u64>(), p.release_threshold),
                5 | 7 => put(value.cast::<u64>(), used),
                6 | 8 => put(value.cast::<u64>(), p.used_high.max(used)),
                _ => Err(CuResult::INVALID_VALUE),
            }
        }
    })
}

/// # Safety
/// `value` must be valid for the attribute's type.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAttribute(
    pool: Opaque,
    attr: c_int,
    value: *mut c_void,
) -> CUresult {
    guard(|| {
        if value.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let id = handle_of(pool);
        // SAFETY: the caller's value of the attribute's type.
        unsafe {
            match attr {
                1..=3 => with_pool(id, |p| {
                    p.reuse[attr as usize - 1] = value.cast::<c_int>().read_unaligned()
                }),
                4 => with_pool(id, |p| {
                    p.release_threshold = value.cast::<u64>().read_unaligned()
                }),
                // Only resetting the high watermarks is allowed.
                6 | 8 if value.cast::<u64>().read_unaligned() == 0 => {
                    with_pool(id, |p| p.used_high = 0)
                }
                _ => Err(CuResult::INVALID_VALUE),
            }
        }
    })
}

/// `CUmemAccessDesc`: location (type, id) and flags.
#[repr(C)]
pub struct AccessDesc {
    location_type: c_int,
    location_id: c_int,
    flags: c_int,
}

/// One device, which always has read-write access to its pools.
///
/// # Safety
/// `map` must hold `count` entries.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAccess(
    pool: Opaque,
    map: *const AccessDesc,
    count: usize,
) -> CUresult {
    guard(|| {
        with_pool(handle_of(pool), |_| ())?;
        if count > 0 && map.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        for i in 0..count {
            // SAFETY: `count` entries (API contract).
            let d = unsafe { &*map.add(i) };
            if d.location_type != 1 || d.location_id != 0 || d.flags != 3 {
                return Err(CuResult::INVALID_DEVICE);
            }
        }
        Ok(())
    })
}

/// # Safety
/// `flags` must be NULL or writable; `location` a valid `CUmemLocation`.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAccess(
    flags: *mut c_int,
    pool: Opaque,
    location: *const [c_int; 2],
) -> CUresult {
    guard(|| {
        with_pool(handle_of(pool), |_| ())?;
        if location.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: the caller's location.
        let l = unsafe { *location };
        let v = if l == [1, 0] { 3 } else { 0 };
        // SAFETY: the caller's out-pointer.
        unsafe { put(flags, v) }
    })
}
