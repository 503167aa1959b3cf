//! The CPU executor's device memory: one session's allocations, as host memory at synthetic
//! device addresses.
//!
//! Each session gets its own randomly placed address range, allocations are 256-byte
//! aligned (as `cuMemAlloc` guarantees) and separated by an unmapped guard gap, so a pointer
//! from another session or just past an allocation's end resolves to nothing. Memory is
//! zeroed on allocation so no session ever sees another's old data: allocations of
//! [`MAP_THRESHOLD`] and more are anonymous mappings of their own (the kernel's zero pages,
//! committed only as work touches them, so a large `cuMemAlloc` costs what it costs on a GPU:
//! next to nothing), smaller ones come zeroed from the allocator. All sessions draw from
//! one [`MemoryPool`] (the executor's total memory) and each is capped by its quota.
//!
//! Work runs concurrently with the dispatcher, so the heap is shared: the map of allocations
//! sits behind a read-write lock, and each [`Allocation`] is reference-counted. Queued copies
//! hold their allocations; kernels resolve addresses while they run and are protected by the
//! free protocol instead:
//! - `cuMemFree` marks the allocation *dying* with the dispatch sequence number of the free:
//!   work dispatched later (sequence number at or above it) no longer resolves it, work
//!   dispatched earlier still does;
//! - it leaves the map (and its memory is released) only once every item of the context
//!   dispatched before the free has finished.
//!
//! So when the memory goes, no kernel that could resolve it is running. The bytes are given
//! back to the quota and the pool when the last reference drops.

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DevPtr, Handle};

use crate::executor::handles::random_u64;
use crate::executor::ExecResult;

pub const ALLOC_ALIGN: usize = 256;
/// Allocations this large or larger are anonymous mappings (page-aligned, zero-filled on
/// demand); smaller ones come from the allocator.
pub const MAP_THRESHOLD: u64 = 1 << 20;
const GUARD_GAP: u64 = 64 * 1024;
/// Largest single allocation, whatever the quota (keeps address arithmetic far from overflow).
pub const MAX_ALLOC: u64 = 1 << 40;
/// An allocation that is not dying.
const LIVE: u64 = u64::MAX;

pub use crate::executor::budget::MemoryPool;

/// Who pays for an allocation: the session's quota, its tenant's pool (when the tenant has a
/// memory quota) and the executor's pool.
struct Account {
    used: AtomicU64,
    quota: u64,
    tenant: Option<Arc<MemoryPool>>,
    pool: Arc<MemoryPool>,
}

impl Account {
    fn reserve(&self, size: u64) -> bool {
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(size).filter(|&n| n <= self.quota)
            })
            .is_ok();
        if !ok {
            return false;
        }
        if let Some(t) = &self.tenant {
            if !t.reserve(size) {
                self.used.fetch_sub(size, Ordering::AcqRel);
                return false;
            }
        }
        if !self.pool.reserve(size) {
            if let Some(t) = &self.tenant {
                t.release(size);
            }
            self.used.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self, size: u64) {
        self.used.fetch_sub(size, Ordering::AcqRel);
        if let Some(t) = &self.tenant {
            t.release(size);
        }
        self.pool.release(size);
    }
}

/// One allocation: host memory standing in for `[base, base+len)` of device memory.
pub struct Allocation {
    base: DevPtr,
    ptr: NonNull<u8>,
    len: u64,
    ctx: Handle,
    /// Made by `cuMemAlloc` (freed by `cuMemFree`), not a module global.
    user: bool,
    /// An anonymous mapping of its own ([`MAP_THRESHOLD`]), else from the allocator.
    mapped: bool,
    dying: AtomicU64,
    account: Arc<Account>,
}

// SAFETY: the allocation owns its memory (allocated in `Heap::alloc`, freed in Drop); access
// to the bytes is coordinated by the executor (see the module docs and `streams::Gate`).
unsafe impl Send for Allocation {}
// SAFETY: as above; the struct's own fields are immutable or atomic.
unsafe impl Sync for Allocation {}

impl Allocation {
    pub fn base(&self) -> DevPtr {
        self.base
    }

    #[allow(clippy::len_without_is_empty)] // never empty: zero-size allocations are refused
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn ctx(&self) -> Handle {
        self.ctx
    }

    fn live(&self) -> bool {
        self.dying.load(Ordering::Acquire) == LIVE
    }

    /// Whether work dispatched with sequence number `seq` may still use it.
    fn usable_by(&self, seq: u64) -> bool {
        seq < self.dying.load(Ordering::Acquire)
    }

    /// Host pointer to byte `off`; `off + len` must be within the allocation (checked).
    pub fn at(&self, off: u64, len: u64) -> Option<NonNull<u8>> {
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: off <= self.len, so the pointer stays inside (or one past) the allocation.
        NonNull::new(unsafe { self.ptr.as_ptr().add(off as usize) })
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len`/`mapped` are what `host_alloc_zeroed` returned for this
        // allocation, and this is the last reference to it.
        unsafe { host_free(self.ptr, self.len as usize, self.mapped) };
        self.account.release(self.len);
    }
}

/// `size` (> 0) zeroed bytes, 256-byte aligned: a private anonymous mapping from
/// [`MAP_THRESHOLD`] on (whether it is one is the second value), else the allocator's.
fn host_alloc_zeroed(size: usize) -> Option<(NonNull<u8>, bool)> {
    if size as u64 >= MAP_THRESHOLD {
        // SAFETY: a fresh private anonymous mapping: no address hint, no file; the result is
        // checked. Pages are page-aligned (>= ALLOC_ALIGN) and read as zero until written.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        return NonNull::new(p.cast::<u8>()).map(|p| (p, true));
    }
    let layout = Layout::from_size_align(size, ALLOC_ALIGN).ok()?;
    // SAFETY: the layout has a non-zero size (the caller refuses zero-size allocations).
    NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).map(|p| (p, false))
}

/// Frees what [`host_alloc_zeroed`] returned.
///
/// # Safety
/// `ptr`, `size` and `mapped` must be one result of `host_alloc_zeroed(size)`, not yet freed,
/// and nothing may use the memory afterwards.
unsafe fn host_free(ptr: NonNull<u8>, size: usize, mapped: bool) {
    if mapped {
        // SAFETY: the whole mapping made by host_alloc_zeroed (caller's contract).
        unsafe { libc::munmap(ptr.as_ptr().cast(), size) };
    } else if let Ok(layout) = Layout::from_size_align(size, ALLOC_ALIGN) {
        // SAFETY: allocated by the allocator with exactly this layout (caller's contract).
        unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

/// A validated range of one allocation, held by queued work.
#[derive(Clone)]
pub struct Range {
    pub alloc: Arc<Allocation>,
    pub off: u64,
    pub len: u64,
}

impl Range {
    pub fn ptr(&self) -> NonNull<u8> {
        // `off + len <= alloc.len` was checked when the range was made.
        self.alloc.at(self.off, self.len).unwrap_or(self.alloc.ptr)
    }
}

/// One session's device memory.
pub struct Heap {
    map: RwLock<BTreeMap<DevPtr, Arc<Allocation>>>,
    next_addr: Mutex<DevPtr>,
    account: Arc<Account>,
}

impl Heap {
    pub fn new(pool: Arc<MemoryPool>, tenant: Option<Arc<MemoryPool>>, quota: u64) -> Self {
        // A random 64 KiB-aligned base between 2^40 and 2^46: sessions do not share ranges in
        // practice, and addresses stay well inside the 47-bit user space CUDA also uses.
        let base = (1u64 << 40) + ((random_u64() % ((1u64 << 46) - (1u64 << 41))) & !0xffff);
        Heap {
            map: RwLock::new(BTreeMap::new()),
            next_addr: Mutex::new(base),
            account: Arc::new(Account {
                used: AtomicU64::new(0),
                quota,
                tenant,
                pool,
            }),
        }
    }

    /// Bytes held: live allocations and those whose release is pending.
    pub fn used(&self) -> u64 {
        self.account.used.load(Ordering::Acquire)
    }

    pub fn quota(&self) -> u64 {
        self.account.quota
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<DevPtr, Arc<Allocation>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<DevPtr, Arc<Allocation>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A `cuMemAlloc` allocation.
    pub fn alloc(&self, ctx: Handle, size: u64) -> ExecResult<Arc<Allocation>> {
        self.alloc_kind(ctx, size, true)
    }

    /// Memory of a module global (not freed by `cuMemFree`).
    pub fn alloc_global(&self, ctx: Handle, size: u64) -> ExecResult<Arc<Allocation>> {
        self.alloc_kind(ctx, size, false)
    }

    fn alloc_kind(&self, ctx: Handle, size: u64, user: bool) -> ExecResult<Arc<Allocation>> {
        if size == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if size > MAX_ALLOC || !self.account.reserve(size) {
            return Err(CuResult::OUT_OF_MEMORY);
        }
        let Some((ptr, mapped)) = usize::try_from(size).ok().and_then(host_alloc_zeroed) else {
            self.account.release(size);
            return Err(CuResult::OUT_OF_MEMORY);
        };
        let addr = {
            let mut next = self.next_addr.lock().unwrap_or_else(|p| p.into_inner());
            let addr = *next;
            let step = size.div_ceil(ALLOC_ALIGN as u64) * ALLOC_ALIGN as u64 + GUARD_GAP;
            match addr.checked_add(step) {
                Some(n) if n < (1u64 << 47) => {
                    *next = n;
                    Some(addr)
                }
                _ => None,
            }
        };
        let Some(addr) = addr else {
            // SAFETY: allocated just above by host_alloc_zeroed and never handed out.
            unsafe { host_free(ptr, size as usize, mapped) };
            self.account.release(size);
            return Err(CuResult::OUT_OF_MEMORY);
        };
        let a = Arc::new(Allocation {
            base: addr,
            ptr,
            len: size,
            ctx,
            user,
            mapped,
            dying: AtomicU64::new(LIVE),
            account: self.account.clone(),
        });
        self.write().insert(addr, a.clone());
        Ok(a)
    }

    fn find(
        map: &BTreeMap<DevPtr, Arc<Allocation>>,
        addr: DevPtr,
        len: u64,
    ) -> Option<(&Arc<Allocation>, u64)> {
        let (base, a) = map.range(..=addr).next_back()?;
        let off = addr - base;
        if off.checked_add(len)? > a.len || (len == 0 && off >= a.len) {
            return None;
        }
        Some((a, off))
    }

    /// For new work of `ctx`: `[addr, addr+len)` inside one live allocation of `ctx`.
    pub fn range(&self, ctx: Handle, addr: DevPtr, len: u64) -> ExecResult<Range> {
        let map = self.read();
        match Self::find(&map, addr, len) {
            Some((a, off)) if a.ctx == ctx && a.live() => Ok(Range {
                alloc: a.clone(),
                off,
                len,
            }),
            _ => Err(CuResult::INVALID_VALUE),
        }
    }

    /// For a running kernel of `ctx` dispatched as `seq`: the host pointer of
    /// `[addr, addr+len)`.
    pub fn resolve_for(&self, ctx: Handle, seq: u64, addr: u64, len: u64) -> Option<NonNull<u8>> {
        let map = self.read();
        let (a, off) = Self::find(&map, addr, len)?;
        if a.ctx != ctx || !a.usable_by(seq) {
            return None;
        }
        a.at(off, len)
    }

    /// For a running kernel: the allocation containing `addr` as (base, length, host pointer).
    pub fn region_for(
        &self,
        ctx: Handle,
        seq: u64,
        addr: u64,
    ) -> Option<(u64, usize, NonNull<u8>)> {
        let map = self.read();
        let (base, a) = map.range(..=addr).next_back()?;
        if addr - base >= a.len || a.ctx != ctx || !a.usable_by(seq) {
            return None;
        }
        Some((*base, a.len as usize, a.ptr))
    }

    /// The context of the live `cuMemAlloc` allocation starting at `ptr`.
    pub fn owner_of_user(&self, ptr: DevPtr) -> ExecResult<Handle> {
        let map = self.read();
        match map.get(&ptr) {
            Some(a) if a.user && a.live() => Ok(a.ctx),
            _ => Err(CuResult::INVALID_VALUE),
        }
    }

    /// `cuMemFree`: marks the live `cuMemAlloc` allocation starting at `ptr` dying from
    /// dispatch sequence `seq` on. CUDA refuses interior pointers, double frees and module
    /// globals, and so does this.
    pub fn mark_dying_user(&self, ptr: DevPtr, seq: u64) -> ExecResult<Arc<Allocation>> {
        self.mark(ptr, seq, true)
    }

    /// Marks any live allocation starting at `ptr` (a module global) dying.
    pub fn mark_dying_any(&self, ptr: DevPtr, seq: u64) -> ExecResult<Arc<Allocation>> {
        self.mark(ptr, seq, false)
    }

    fn mark(&self, ptr: DevPtr, seq: u64, user_only: bool) -> ExecResult<Arc<Allocation>> {
        let map = self.read();
        let a = map.get(&ptr).ok_or(CuResult::INVALID_VALUE)?;
        if user_only && !a.user {
            return Err(CuResult::INVALID_VALUE);
        }
        a.dying
            .compare_exchange(LIVE, seq, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| CuResult::INVALID_VALUE)?;
        Ok(a.clone())
    }

    /// Takes an allocation out of the map; its memory goes when the last holder lets go.
    pub fn remove(&self, ptr: DevPtr) {
        let a = self.write().remove(&ptr);
        drop(a);
    }

    /// Marks every live allocation of `ctx` dying from `seq` on; returns their bases.
    pub fn mark_ctx_dying(&self, ctx: Handle, seq: u64) -> Vec<DevPtr> {
        let map = self.read();
        map.values()
            .filter(|a| a.ctx == ctx)
            .map(|a| {
                let _ = a
                    .dying
                    .compare_exchange(LIVE, seq, Ordering::AcqRel, Ordering::Acquire);
                a.base
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// A large allocation was zeroed with memset (posix_memalign + write_bytes for a 256-byte
    /// alignment): 512 MiB took seconds on a loaded machine, long enough for a client's
    /// liveness watchdog to give the session up, and committed all of it at once.
    #[test]
    fn a_large_allocation_is_zero_pages_committed_only_when_touched() {
        let pool = MemoryPool::new(4 << 30);
        let h = Heap::new(pool.clone(), None, 4 << 30);
        let before = rss_bytes();
        let a = h.alloc(1, 1 << 30).unwrap();
        let grew = rss_bytes().saturating_sub(before);
        assert!(grew < 64 << 20, "a 1 GiB allocation committed {grew} bytes");
        let r = h.range(1, a.base(), 1 << 30).unwrap();
        assert_eq!(r.ptr().as_ptr() as usize % ALLOC_ALIGN, 0);
        // SAFETY: the range is live and nothing else touches it in this test.
        let bytes = unsafe { std::slice::from_raw_parts_mut(r.ptr().as_ptr(), 1 << 30) };
        assert!(bytes[..4096].iter().all(|&b| b == 0));
        assert!(bytes[(1 << 30) - 4096..].iter().all(|&b| b == 0));
        bytes[12345] = 7;
        assert_eq!(bytes[12345], 7);
    }

    #[test]
    fn allocations_are_aligned_zeroed_and_bounds_checked() {
        let pool = MemoryPool::new(1 << 20);
        let h = Heap::new(pool.clone(), None, 1 << 20);
        let a = h.alloc(1, 1000).unwrap().base();
        assert_eq!(a % ALLOC_ALIGN as u64, 0);
        let r = h.range(1, a, 1000).unwrap();
        // SAFETY: the range is live and nothing else touches it in this test.
        let bytes = unsafe { std::slice::from_raw_parts(r.ptr().as_ptr(), 1000) };
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(h.range(1, a, 1001).is_err());
        assert!(
            h.range(1, a + 1000, 1).is_err(),
            "one past the end is not memory"
        );
        assert!(h.range(1, a - 1, 1).is_err());
        assert!(h.range(1, a + 999, 1).is_ok());
        assert!(h.range(2, a, 1).is_err(), "another context's memory");
        assert!(h.range(1, u64::MAX, 2).is_err(), "no overflow");
        drop(r);
        assert_eq!(pool.used(), 1000);
        h.mark_dying_user(a, 5).unwrap();
        assert_eq!(
            h.mark_dying_user(a, 6).err(),
            Some(CuResult::INVALID_VALUE),
            "double free"
        );
        assert!(h.range(1, a, 1).is_err(), "dying memory takes no new work");
        assert!(
            h.resolve_for(1, 4, a, 1).is_some(),
            "earlier work still sees it"
        );
        assert!(h.resolve_for(1, 5, a, 1).is_none(), "later work does not");
        h.remove(a);
        assert_eq!(pool.used(), 0);
        assert!(h.resolve_for(1, 0, a, 1).is_none(), "freed memory is gone");
    }

    #[test]
    fn held_ranges_keep_memory_until_released() {
        let pool = MemoryPool::new(1 << 20);
        let h = Heap::new(pool.clone(), None, 1 << 20);
        let a = h.alloc(1, 64).unwrap().base();
        let r = h.range(1, a, 64).unwrap();
        h.mark_dying_user(a, 0).unwrap();
        h.remove(a);
        assert_eq!(pool.used(), 64, "a queued copy still holds it");
        drop(r);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn module_globals_are_not_freed_by_mem_free() {
        let pool = MemoryPool::new(1 << 20);
        let h = Heap::new(pool, None, 1 << 20);
        let g = h.alloc_global(1, 64).unwrap().base();
        assert_eq!(h.owner_of_user(g).err(), Some(CuResult::INVALID_VALUE));
        assert_eq!(h.mark_dying_user(g, 0).err(), Some(CuResult::INVALID_VALUE));
        assert!(h.mark_dying_any(g, 0).is_ok());
    }

    #[test]
    fn quota_and_pool_limits_refuse_allocations() {
        let pool = MemoryPool::new(3000);
        let h1 = Heap::new(pool.clone(), None, 2000);
        let h2 = Heap::new(pool.clone(), None, 2000);
        h1.alloc(1, 1500).unwrap();
        assert_eq!(
            h1.alloc(1, 600).err(),
            Some(CuResult::OUT_OF_MEMORY),
            "session quota"
        );
        h2.alloc(1, 1500).unwrap();
        assert_eq!(
            h2.alloc(1, 100).err(),
            Some(CuResult::OUT_OF_MEMORY),
            "pool total"
        );
        assert_eq!(h2.used(), 1500, "a refused allocation holds nothing");
        drop(h1);
        assert_eq!(pool.used(), 1500, "dropping a heap returns its memory");
        assert_eq!(h2.alloc(1, 0).err(), Some(CuResult::INVALID_VALUE));
        assert_eq!(h2.alloc(1, u64::MAX).err(), Some(CuResult::OUT_OF_MEMORY));
    }

    #[test]
    fn pointers_of_one_heap_do_not_resolve_in_another() {
        let pool = MemoryPool::new(1 << 20);
        let h1 = Heap::new(pool.clone(), None, 1 << 20);
        let h2 = Heap::new(pool, None, 1 << 20);
        let a = h1.alloc(1, 64).unwrap().base();
        assert!(h2.range(1, a, 1).is_err());
        assert!(h2.resolve_for(1, 0, a, 1).is_none());
    }

    #[test]
    fn a_context_dies_whole() {
        let pool = MemoryPool::new(1 << 20);
        let h = Heap::new(pool.clone(), None, 1 << 20);
        let a = h.alloc(1, 64).unwrap().base();
        let b = h.alloc(2, 64).unwrap().base();
        let dead = h.mark_ctx_dying(1, 0);
        assert_eq!(dead, vec![a]);
        for p in dead {
            h.remove(p);
        }
        assert!(h.range(1, a, 1).is_err());
        assert!(h.range(2, b, 1).is_ok());
        assert_eq!(h.used(), 64);
    }
}
