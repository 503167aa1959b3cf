//! The process's view of unified addressing: which addresses are device memory, and which
//! host ranges are page-locked (allocated by `cuMemHostAlloc` or registered).
//!
//! Each device allocation's address range is reserved in this process with a `PROT_NONE`
//! mapping (no memory behind it), so no host allocation can ever occupy a device pointer's
//! address: a pointer is device memory exactly when it falls in a recorded allocation, and
//! `cuMemcpy`, `cudaMemcpyDefault` and `cuPointerGetAttribute` classify it without asking the
//! backend. An allocation whose range is already taken by a host mapping is returned to the
//! backend and allocated again elsewhere.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::state::lock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAlloc {
    pub base: u64,
    pub size: u64,
    /// The memory pool it came from (0: `cuMemAlloc`).
    pub pool: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRegion {
    pub base: usize,
    pub size: usize,
    /// `CU_MEMHOSTALLOC_*` / `CU_MEMHOSTREGISTER_*` flags.
    pub flags: u32,
    /// Allocated by this library (`cuMemHostAlloc`), as opposed to registered.
    pub owned: bool,
}

#[derive(Default)]
struct Maps {
    device: BTreeMap<u64, DeviceAlloc>,
    host: BTreeMap<usize, HostRegion>,
}

static MAPS: Mutex<Maps> = Mutex::new(Maps {
    device: BTreeMap::new(),
    host: BTreeMap::new(),
});

/// Pages this library has reserved, with the number of allocations on each (the backend
/// packs small allocations, so several may share a page).
static PAGES: Mutex<BTreeMap<usize, u32>> = Mutex::new(BTreeMap::new());

fn pages(base: u64, size: u64) -> Option<std::ops::Range<usize>> {
    let ps = page();
    let start = usize::try_from(base).ok()? / ps;
    let end = usize::try_from(base.checked_add(size)?).ok()?.div_ceil(ps);
    (base != 0 && size != 0).then_some(start..end)
}

/// Maps `n` pages at page `first` PROT_NONE; false when any of them is in use.
fn map_run(first: usize, n: usize) -> bool {
    let (addr, len) = (first * page(), n * page());
    // SAFETY: an anonymous PROT_NONE mapping at a fixed address that must not replace
    // anything (MAP_FIXED_NOREPLACE); nothing is read or written through it.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if p as usize != addr {
        // A kernel older than 4.17 takes the address as a hint: not ours, give it back.
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(p, len) };
        return false;
    }
    true
}

fn unmap_run(first: usize, n: usize) {
    // SAFETY: pages this library mapped PROT_NONE, holding nothing else.
    unsafe { libc::munmap((first * page()) as *mut libc::c_void, n * page()) };
}

/// Reserves `[base, base + size)` in this process; false when any of it is in use by
/// something else.
pub fn reserve(base: u64, size: u64) -> bool {
    let Some(range) = pages(base, size) else {
        return false;
    };
    let mut held = lock(&PAGES);
    let mut mapped: Vec<(usize, usize)> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let mut ok = true;
    for pg in range.clone().chain(std::iter::once(usize::MAX)) {
        let missing = pg != usize::MAX && !held.contains_key(&pg);
        match (&mut run, missing) {
            (Some((_, n)), true) => *n += 1,
            (None, true) => run = Some((pg, 1)),
            (r, false) => {
                if let Some((f, n)) = r.take() {
                    if !map_run(f, n) {
                        ok = false;
                        break;
                    }
                    mapped.push((f, n));
                }
            }
        }
    }
    if !ok {
        for (f, n) in mapped {
            unmap_run(f, n);
        }
        return false;
    }
    for pg in range {
        *held.entry(pg).or_insert(0) += 1;
    }
    true
}

fn release(base: u64, size: u64) {
    let Some(range) = pages(base, size) else {
        return;
    };
    let mut held = lock(&PAGES);
    for pg in range {
        if let Some(c) = held.get_mut(&pg) {
            *c -= 1;
            if *c == 0 {
                held.remove(&pg);
                unmap_run(pg, 1);
            }
        }
    }
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Records a device allocation whose range `reserve` took.
pub fn add_device(a: DeviceAlloc) {
    lock(&MAPS).device.insert(a.base, a);
}

/// Forgets the allocation at exactly `base` and releases its reservation.
pub fn remove_device(base: u64) -> Option<DeviceAlloc> {
    let a = lock(&MAPS).device.remove(&base)?;
    release(a.base, a.size);
    Some(a)
}

/// Forgets every allocation (the context that held them was destroyed).
pub fn remove_all_device() {
    let all = std::mem::take(&mut lock(&MAPS).device);
    for a in all.values() {
        release(a.base, a.size);
    }
}

/// The device allocation containing `p`.
pub fn device(p: u64) -> Option<DeviceAlloc> {
    let m = lock(&MAPS);
    let (_, a) = m.device.range(..=p).next_back()?;
    (p - a.base < a.size).then_some(*a)
}

/// Bytes of live allocations made from pool `pool`.
pub fn pool_usage(pool: u64) -> u64 {
    lock(&MAPS)
        .device
        .values()
        .filter(|a| a.pool == pool)
        .map(|a| a.size)
        .sum()
}

pub fn add_host(r: HostRegion) {
    lock(&MAPS).host.insert(r.base, r);
}

pub fn remove_host(base: usize) -> Option<HostRegion> {
    lock(&MAPS).host.remove(&base)
}

/// The page-locked region containing `p`.
pub fn host(p: usize) -> Option<HostRegion> {
    let m = lock(&MAPS);
    let (_, r) = m.host.range(..=p).next_back()?;
    (p - r.base < r.size).then_some(*r)
}

/// Whether `[p, p + n)` lies inside one page-locked region.
pub fn is_pinned(p: usize, n: usize) -> bool {
    host(p).is_some_and(|r| p + n <= r.base + r.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_range_cannot_be_reserved_again_and_classifies_pointers() {
        // Somewhere in the range the CPU executor hands out (2^40 .. 2^46).
        let base = (1u64 << 44) + 0x1234_0000;
        assert!(reserve(base, 1 << 20));
        // A range some host mapping holds is refused.
        let v = vec![0u8; 1 << 16];
        let host_page = (v.as_ptr() as u64 + 8192) & !4095;
        assert!(
            !reserve(host_page, 4096),
            "MAP_FIXED_NOREPLACE refuses what is in use"
        );
        add_device(DeviceAlloc {
            base,
            size: 1 << 20,
            pool: 0,
        });
        assert_eq!(device(base + 100).map(|a| a.base), Some(base));
        assert_eq!(device(base + (1 << 20)), None);
        // A host allocation can never land there.
        assert!(device(v.as_ptr() as u64).is_none());
        // A second allocation sharing the last page is fine: pages are counted.
        assert!(reserve(base + (1 << 20) - 256, 512));
        release(base + (1 << 20) - 256, 512);
        assert!(remove_device(base).is_some());
        assert!(
            map_run(pages(base, 4096).unwrap().start, 1),
            "released on free"
        );
        unmap_run(pages(base, 4096).unwrap().start, 1);
    }

    #[test]
    fn pinned_regions_cover_exactly_their_bytes() {
        let v = vec![0u8; 8192];
        let b = v.as_ptr() as usize;
        add_host(HostRegion {
            base: b,
            size: 8192,
            flags: 0,
            owned: false,
        });
        assert!(is_pinned(b + 10, 100));
        assert!(!is_pinned(b + 8000, 400));
        assert!(remove_host(b).is_some());
        assert!(!is_pinned(b, 1));
    }
}
