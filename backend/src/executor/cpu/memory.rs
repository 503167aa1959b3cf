//! The CPU executor's device memory: one session's allocations, as host memory at synthetic
//! device addresses.
//!
//! Each session gets its own randomly placed address range, allocations are 256-byte
//! aligned (as `cuMemAlloc` guarantees) and separated by an unmapped guard gap, so a pointer
//! from another session or just past an allocation's end resolves to nothing. Memory is
//! zeroed on allocation so no session ever sees another's old data. All sessions draw from
//! one [`MemoryPool`] (the executor's total memory) and each is capped by its quota.

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DevPtr, Handle};

use crate::executor::handles::random_u64;
use crate::executor::ExecResult;

pub const ALLOC_ALIGN: usize = 256;
const GUARD_GAP: u64 = 64 * 1024;
/// Largest single allocation, whatever the quota (keeps address arithmetic far from overflow).
pub const MAX_ALLOC: u64 = 1 << 40;

/// Device memory shared by all sessions of one executor.
#[derive(Debug)]
pub struct MemoryPool {
    total: u64,
    used: AtomicU64,
}

impl MemoryPool {
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(MemoryPool {
            total,
            used: AtomicU64::new(0),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.total)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

struct Allocation {
    ptr: NonNull<u8>,
    len: u64,
    ctx: Handle,
}

/// One session's device memory.
pub struct DeviceHeap {
    allocs: BTreeMap<DevPtr, Allocation>,
    next_addr: DevPtr,
    used: u64,
    quota: u64,
    pool: Arc<MemoryPool>,
}

// SAFETY: the heap exclusively owns its allocations (raw pointers into memory it allocated
// and frees in Drop); nothing else aliases them outside a launch, which borrows the heap.
unsafe impl Send for DeviceHeap {}
// SAFETY: shared access only reads the map; concurrent access to the bytes themselves during
// a launch goes through the interpreter's own raw-pointer discipline (see netgpu-ptx).
unsafe impl Sync for DeviceHeap {}

impl DeviceHeap {
    pub fn new(pool: Arc<MemoryPool>, quota: u64) -> Self {
        // A random 64 KiB-aligned base between 2^40 and 2^46: sessions do not share ranges in
        // practice, and addresses stay well inside the 47-bit user space CUDA also uses.
        let base = (1u64 << 40) + ((random_u64() % ((1u64 << 46) - (1u64 << 41))) & !0xffff);
        DeviceHeap {
            allocs: BTreeMap::new(),
            next_addr: base,
            used: 0,
            quota,
            pool,
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    pub fn alloc(&mut self, ctx: Handle, size: u64) -> ExecResult<DevPtr> {
        if size == 0 || size > MAX_ALLOC {
            return Err(if size == 0 {
                CuResult::INVALID_VALUE
            } else {
                CuResult::OUT_OF_MEMORY
            });
        }
        if self.used.saturating_add(size) > self.quota {
            return Err(CuResult::OUT_OF_MEMORY);
        }
        if !self.pool.reserve(size) {
            return Err(CuResult::OUT_OF_MEMORY);
        }
        let layout = match usize::try_from(size)
            .ok()
            .and_then(|s| Layout::from_size_align(s, ALLOC_ALIGN).ok())
        {
            Some(l) => l,
            None => {
                self.pool.release(size);
                return Err(CuResult::OUT_OF_MEMORY);
            }
        };
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            self.pool.release(size);
            return Err(CuResult::OUT_OF_MEMORY);
        };
        let addr = self.next_addr;
        let step = size.div_ceil(ALLOC_ALIGN as u64) * ALLOC_ALIGN as u64 + GUARD_GAP;
        self.next_addr = match self.next_addr.checked_add(step) {
            Some(n) if n < (1u64 << 47) => n,
            _ => {
                // SAFETY: `raw` was allocated just above with `layout`.
                unsafe { alloc::dealloc(raw, layout) };
                self.pool.release(size);
                return Err(CuResult::OUT_OF_MEMORY);
            }
        };
        self.allocs.insert(
            addr,
            Allocation {
                ptr,
                len: size,
                ctx,
            },
        );
        self.used += size;
        Ok(addr)
    }

    /// Frees the allocation that starts at `ptr` (CUDA refuses interior pointers too).
    pub fn free(&mut self, ptr: DevPtr) -> ExecResult<()> {
        let a = self.allocs.remove(&ptr).ok_or(CuResult::INVALID_VALUE)?;
        self.release(a);
        Ok(())
    }

    /// Frees every allocation owned by `ctx`.
    pub fn free_ctx(&mut self, ctx: Handle) {
        let keys: Vec<DevPtr> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.ctx == ctx)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(a) = self.allocs.remove(&k) {
                self.release(a);
            }
        }
    }

    fn release(&mut self, a: Allocation) {
        self.used -= a.len;
        self.pool.release(a.len);
        // The layout was valid at allocation time, so it is valid now.
        if let Ok(layout) = Layout::from_size_align(a.len as usize, ALLOC_ALIGN) {
            // SAFETY: `a.ptr` was allocated by `alloc` with exactly this layout and is removed
            // from the map, so nothing refers to it any more.
            unsafe { alloc::dealloc(a.ptr.as_ptr(), layout) };
        }
    }

    /// The allocation containing `[addr, addr+len)`, as (host pointer to addr, owning ctx).
    pub fn resolve(&self, addr: DevPtr, len: u64) -> Option<(NonNull<u8>, Handle)> {
        let (base, a) = self.allocs.range(..=addr).next_back()?;
        let off = addr - base;
        if off.checked_add(len)? > a.len {
            return None;
        }
        // SAFETY: off < a.len (or == with len 0), so the result stays inside (or one past) the
        // allocation.
        let p = unsafe { a.ptr.as_ptr().add(off as usize) };
        NonNull::new(p).map(|p| (p, a.ctx))
    }

    /// The allocation containing `addr`: (device base, length, host pointer to the base).
    pub fn allocation(&self, addr: DevPtr) -> Option<(u64, usize, NonNull<u8>)> {
        let (base, a) = self.allocs.range(..=addr).next_back()?;
        (addr - base < a.len).then_some((*base, a.len as usize, a.ptr))
    }

    pub fn slice(&self, addr: DevPtr, len: u64) -> Option<&[u8]> {
        let (p, _) = self.resolve(addr, len)?;
        // SAFETY: resolve checked that the range lies in one live allocation; `&self` keeps
        // it alive and no launch runs while a plain borrow exists (launches take the heap
        // for their whole duration).
        Some(unsafe { std::slice::from_raw_parts(p.as_ptr(), len as usize) })
    }

    pub fn slice_mut(&mut self, addr: DevPtr, len: u64) -> Option<&mut [u8]> {
        let (p, _) = self.resolve(addr, len)?;
        // SAFETY: as in `slice`, and `&mut self` makes this the only access.
        Some(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len as usize) })
    }

    /// Copies within device memory; the ranges may overlap.
    pub fn copy_within(&mut self, dst: DevPtr, src: DevPtr, len: u64) -> Option<()> {
        let (s, _) = self.resolve(src, len)?;
        let (d, _) = self.resolve(dst, len)?;
        // SAFETY: both ranges were checked to lie in live allocations; `copy` allows overlap.
        unsafe { std::ptr::copy(s.as_ptr(), d.as_ptr(), len as usize) };
        Some(())
    }
}

impl Drop for DeviceHeap {
    fn drop(&mut self) {
        let allocs = std::mem::take(&mut self.allocs);
        for (_, a) in allocs {
            self.release(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_zeroed_and_bounds_checked() {
        let pool = MemoryPool::new(1 << 20);
        let mut h = DeviceHeap::new(pool.clone(), 1 << 20);
        let a = h.alloc(1, 1000).unwrap();
        assert_eq!(a % ALLOC_ALIGN as u64, 0);
        assert!(h.slice(a, 1000).unwrap().iter().all(|&b| b == 0));
        assert!(h.slice(a, 1001).is_none());
        assert!(
            h.slice(a + 1000, 1).is_none(),
            "one past the end is not memory"
        );
        assert!(h.slice(a - 1, 1).is_none());
        assert!(h.slice(a + 999, 1).is_some());
        assert_eq!(pool.used(), 1000);
        h.free(a).unwrap();
        assert_eq!(pool.used(), 0);
        assert!(h.slice(a, 1).is_none(), "freed memory is gone");
        assert_eq!(h.free(a), Err(CuResult::INVALID_VALUE));
    }

    #[test]
    fn quota_and_pool_limits_refuse_allocations() {
        let pool = MemoryPool::new(3000);
        let mut h1 = DeviceHeap::new(pool.clone(), 2000);
        let mut h2 = DeviceHeap::new(pool.clone(), 2000);
        h1.alloc(1, 1500).unwrap();
        assert_eq!(
            h1.alloc(1, 600),
            Err(CuResult::OUT_OF_MEMORY),
            "session quota"
        );
        h2.alloc(1, 1500).unwrap();
        assert_eq!(h2.alloc(1, 100), Err(CuResult::OUT_OF_MEMORY), "pool total");
        drop(h1);
        assert_eq!(pool.used(), 1500, "dropping a heap returns its memory");
        assert_eq!(h2.alloc(1, 0), Err(CuResult::INVALID_VALUE));
    }

    #[test]
    fn pointers_of_one_heap_do_not_resolve_in_another() {
        let pool = MemoryPool::new(1 << 20);
        let mut h1 = DeviceHeap::new(pool.clone(), 1 << 20);
        let h2 = DeviceHeap::new(pool, 1 << 20);
        let a = h1.alloc(1, 64).unwrap();
        assert!(h2.resolve(a, 1).is_none());
    }

    #[test]
    fn free_ctx_frees_only_that_contexts_memory() {
        let pool = MemoryPool::new(1 << 20);
        let mut h = DeviceHeap::new(pool.clone(), 1 << 20);
        let a = h.alloc(1, 64).unwrap();
        let b = h.alloc(2, 64).unwrap();
        h.free_ctx(1);
        assert!(h.resolve(a, 1).is_none());
        assert!(h.resolve(b, 1).is_some());
        assert_eq!(h.used(), 64);
    }
}
