//! Guest memory: the ranges the VMM mapped with `DMA_MAP`, and checked access to them.
//!
//! Each mapping with a file descriptor is mmapped (vm-memory `MmapRegion`) at its guest
//! address; mappings without one (the VMM keeps that memory to itself) are recorded so
//! overlaps are still refused, but the device cannot touch them. Every access checks that the
//! whole range lies in mappings (writable ones for writes) before touching a byte, so a
//! guest-supplied address can never reach outside what the VMM mapped.
//!
//! Revocation: every access runs under the read side of one access lock and checks that each
//! mapping it touches is still live; [`GuestMemory::unmap`] publishes the new set of
//! mappings, takes the write side (waiting for accesses in progress, each of which is a
//! bounded copy or one non-blocking syscall) and marks the removed mappings dead. When
//! `unmap` returns, nothing in vdev reads or writes that memory again, which is what the
//! vfio-user specification asks before `DMA_UNMAP` is answered. Accesses never hold the lock
//! across a wait (a socket that is not ready returns `EAGAIN` at once).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
    MmapRegion,
};

/// Largest single mapping accepted (1 TiB): bounds what a VMM can make us mmap.
pub const MAX_MAPPING: u64 = 1 << 40;
/// Largest number of mappings (QEMU's default `max_dma_maps` is 65535).
pub const MAX_MAPPINGS: usize = 65535;

#[derive(Debug, Error)]
pub enum Error {
    #[error("mapping {addr:#x}+{size:#x} is empty, misaligned or too large")]
    BadRange { addr: u64, size: u64 },
    #[error("mapping {addr:#x}+{size:#x} overlaps an existing mapping")]
    Overlap { addr: u64, size: u64 },
    #[error("too many mappings")]
    TooMany,
    #[error("mapping {addr:#x}+{size:#x} lies beyond the end of its file")]
    BeyondFile { addr: u64, size: u64 },
    #[error("cannot inspect the mapping's file")]
    Stat(#[source] std::io::Error),
    #[error("cannot mmap guest memory")]
    Mmap(#[source] vm_memory::mmap::MmapRegionError),
    #[error("no mapping matches {addr:#x}+{size:#x}")]
    NoSuchMapping { addr: u64, size: u64 },
    #[error("guest range {addr:#x}+{len:#x} is not mapped")]
    Unmapped { addr: u64, len: u64 },
    #[error("guest range {addr:#x}+{len:#x} is not writable")]
    ReadOnly { addr: u64, len: u64 },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone)]
struct Mapping {
    addr: u64,
    size: u64,
    writable: bool,
    region: Option<Arc<GuestRegionMmap>>,
    /// Cleared (under the access lock's write side) when the VMM unmaps it.
    live: Arc<AtomicBool>,
}

impl Mapping {
    fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// One guest range inside one mapping, ready for a copy or an iovec.
struct Piece<'a> {
    region: &'a GuestRegionMmap,
    offset: u64,
    len: u64,
}

/// One immutable view of guest memory. Cheap to take; do not keep one across a wait (its
/// mappings stay allocated, though dead, while it lives).
#[derive(Clone)]
pub struct Snapshot {
    /// Sorted by address, non-overlapping.
    maps: Vec<Mapping>,
    access: Arc<RwLock<()>>,
}

impl Snapshot {
    fn read_lock(&self) -> RwLockReadGuard<'_, ()> {
        self.access.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `addr..addr+len` lies wholly in backed mappings (writable ones if `write`).
    pub fn check(&self, addr: u64, len: u64, write: bool) -> Result<()> {
        self.pieces(addr, len, write, |_| Ok(()))
    }

    /// Calls `f` for each mapping-sized piece of `addr..addr+len`, after checking the whole
    /// range. Liveness is checked only when called under the access lock.
    fn pieces(
        &self,
        addr: u64,
        len: u64,
        write: bool,
        mut f: impl FnMut(Piece<'_>) -> Result<()>,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or(Error::Unmapped { addr, len })?;
        // Validate first, then act: no partial access to a range that is not wholly mapped.
        let start = self.maps.partition_point(|m| m.end() <= addr);
        let mut at = addr;
        let mut last = start;
        for (i, m) in self.maps[start..].iter().enumerate() {
            if m.addr > at || m.region.is_none() || !m.live.load(Ordering::Acquire) {
                return Err(Error::Unmapped { addr, len });
            }
            if write && !m.writable {
                return Err(Error::ReadOnly { addr, len });
            }
            at = m.end().min(end);
            last = start + i;
            if at == end {
                break;
            }
        }
        if at != end {
            return Err(Error::Unmapped { addr, len });
        }
        let mut at = addr;
        for m in &self.maps[start..=last] {
            let Some(region) = m.region.as_deref() else {
                return Err(Error::Unmapped { addr, len });
            };
            let piece_end = m.end().min(end);
            f(Piece {
                region,
                offset: at - m.addr,
                len: piece_end - at,
            })?;
            at = piece_end;
        }
        Ok(())
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let _g = self.read_lock();
        let mut done = 0usize;
        self.pieces(addr, len, false, |p| {
            let n = p.len as usize;
            p.region
                .read_slice(&mut buf[done..done + n], MemoryRegionAddress(p.offset))
                .map_err(|_| Error::Unmapped { addr, len })?;
            done += n;
            Ok(())
        })
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        let len = buf.len() as u64;
        let _g = self.read_lock();
        let mut done = 0usize;
        self.pieces(addr, len, true, |p| {
            let n = p.len as usize;
            p.region
                .write_slice(&buf[done..done + n], MemoryRegionAddress(p.offset))
                .map_err(|_| Error::Unmapped { addr, len })?;
            done += n;
            Ok(())
        })
    }

    /// Runs `f` with iovecs over the guest ranges `ranges` (checked, writable ones if
    /// `write`), under the access lock: `f` must not block (a non-blocking `readv`/`writev`
    /// or a copy). The iovecs are valid only during `f`.
    pub fn with_iovecs<R>(
        &self,
        ranges: &[(u64, u64)],
        write: bool,
        f: impl FnOnce(&[libc::iovec]) -> R,
    ) -> Result<R> {
        let _g = self.read_lock();
        let mut iov = Vec::with_capacity(ranges.len() + 1);
        for &(addr, len) in ranges {
            self.pieces(addr, len, write, |p| {
                let base = p
                    .region
                    .get_host_address(MemoryRegionAddress(p.offset))
                    .map_err(|_| Error::Unmapped { addr, len })?;
                iov.push(libc::iovec {
                    iov_base: base.cast(),
                    iov_len: p.len as usize,
                });
                Ok(())
            })?;
        }
        Ok(f(&iov))
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// The device's guest memory: the current snapshot, replaced on every map change.
pub struct GuestMemory {
    current: RwLock<Arc<Snapshot>>,
    access: Arc<RwLock<()>>,
}

impl Default for GuestMemory {
    fn default() -> Self {
        let access = Arc::new(RwLock::new(()));
        GuestMemory {
            current: RwLock::new(Arc::new(Snapshot {
                maps: Vec::new(),
                access: Arc::clone(&access),
            })),
            access,
        }
    }
}

impl GuestMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current view; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn publish(&self, maps: Vec<Mapping>) {
        let snap = Arc::new(Snapshot {
            maps,
            access: Arc::clone(&self.access),
        });
        match self.current.write() {
            Ok(mut g) => *g = snap,
            Err(p) => *p.into_inner() = snap,
        }
    }

    /// Marks `removed` dead once every access in progress has finished.
    fn revoke(&self, removed: &[Mapping]) {
        let _w = self.access.write().unwrap_or_else(|p| p.into_inner());
        for m in removed {
            m.live.store(false, Ordering::Release);
        }
    }

    /// Adds a mapping (`DMA_MAP`). `file` is the VMM's fd for the memory, if it sent one;
    /// `offset` is the mapping's offset in that file.
    pub fn map(
        &self,
        addr: u64,
        size: u64,
        offset: u64,
        writable: bool,
        file: Option<File>,
    ) -> Result<()> {
        let page = 4096;
        let end = addr.checked_add(size);
        if size == 0
            || size > MAX_MAPPING
            || end.is_none()
            || addr % page != 0
            || size % page != 0
            || offset % page != 0
        {
            return Err(Error::BadRange { addr, size });
        }
        let snap = self.snapshot();
        let mut maps = snap.maps.clone();
        if maps.len() >= MAX_MAPPINGS {
            return Err(Error::TooMany);
        }
        let end = addr + size;
        if maps.iter().any(|m| m.addr < end && addr < m.end()) {
            return Err(Error::Overlap { addr, size });
        }
        let region = match file {
            None => None,
            Some(file) => {
                // mmap beyond the end of the file would fault (SIGBUS) on access: refuse it.
                let file_len = file.metadata().map_err(Error::Stat)?.len();
                if offset.checked_add(size).is_none_or(|e| e > file_len) {
                    return Err(Error::BeyondFile { addr, size });
                }
                let prot = if writable {
                    libc::PROT_READ | libc::PROT_WRITE
                } else {
                    libc::PROT_READ
                };
                let region: MmapRegion = MmapRegionBuilder::new(size as usize)
                    .with_file_offset(FileOffset::new(file, offset))
                    .with_mmap_prot(prot)
                    .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
                    .build()
                    .map_err(Error::Mmap)?;
                let region = GuestRegionMmap::new(region, GuestAddress(addr))
                    .ok_or(Error::BadRange { addr, size })?;
                Some(Arc::new(region))
            }
        };
        let at = maps.partition_point(|m| m.addr < addr);
        maps.insert(
            at,
            Mapping {
                addr,
                size,
                writable,
                region,
                live: Arc::new(AtomicBool::new(true)),
            },
        );
        self.publish(maps);
        Ok(())
    }

    /// Removes the mappings inside `addr..addr+size` (`DMA_UNMAP`); when it returns, no
    /// access touches them again. Returns the number of mappings removed.
    pub fn unmap(&self, addr: u64, size: u64) -> Result<usize> {
        let snap = self.snapshot();
        // QEMU unmaps exactly what it mapped; a range covering several whole mappings is
        // accepted too (the kernel's type1 IOMMU does the same).
        let end = addr
            .checked_add(size)
            .ok_or(Error::NoSuchMapping { addr, size })?;
        let (removed, kept): (Vec<Mapping>, Vec<Mapping>) = snap
            .maps
            .iter()
            .cloned()
            .partition(|m| m.addr >= addr && m.end() <= end);
        if removed.is_empty() {
            return Err(Error::NoSuchMapping { addr, size });
        }
        self.publish(kept);
        self.revoke(&removed);
        Ok(removed.len())
    }

    /// Removes every mapping (`DMA_UNMAP` with the unmap-all flag, or a VMM disconnect).
    pub fn unmap_all(&self) -> usize {
        let removed = self.snapshot().maps.clone();
        self.publish(Vec::new());
        self.revoke(&removed);
        removed.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A memfd of `size` bytes, as QEMU's memory-backend-memfd provides.
    pub fn memfd(size: u64) -> File {
        // SAFETY: the name is a valid NUL-terminated string; memfd_create returns a new fd
        // or -1, checked below.
        let fd = unsafe { libc::memfd_create(c"netgpu-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is a freshly created descriptor we own exclusively.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn reads_and_writes_go_to_the_mapped_file_at_the_right_offset() {
        let mem = GuestMemory::new();
        let f = memfd(0x4000);
        mem.map(
            0x10_0000,
            0x2000,
            0x1000,
            true,
            Some(f.try_clone().unwrap()),
        )
        .unwrap();
        let s = mem.snapshot();
        s.write(0x10_0010, b"hello").unwrap();
        let mut buf = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 0x1010).unwrap();
        assert_eq!(&buf, b"hello");
        let mut back = [0u8; 5];
        s.read(0x10_0010, &mut back).unwrap();
        assert_eq!(&back, b"hello");
    }

    #[test]
    fn access_outside_or_across_a_hole_is_refused() {
        let mem = GuestMemory::new();
        mem.map(0x0, 0x1000, 0, true, Some(memfd(0x1000))).unwrap();
        mem.map(0x2000, 0x1000, 0, true, Some(memfd(0x1000)))
            .unwrap();
        let s = mem.snapshot();
        let mut b = [0u8; 16];
        assert!(s.read(0xff8, &mut b).is_err(), "crosses into the hole");
        assert!(s.read(0x1800, &mut b).is_err(), "in the hole");
        assert!(s.read(u64::MAX - 4, &mut b).is_err(), "wraps");
        assert!(s.read(0x2ff0, &mut b).is_ok());
        assert!(s.read(0x2ff8, &mut b).is_err(), "past the end");
    }

    #[test]
    fn adjacent_mappings_are_one_range() {
        let mem = GuestMemory::new();
        mem.map(0x0, 0x1000, 0, true, Some(memfd(0x1000))).unwrap();
        mem.map(0x1000, 0x1000, 0, true, Some(memfd(0x1000)))
            .unwrap();
        let s = mem.snapshot();
        s.write(0xffc, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut b = [0u8; 8];
        s.read(0xffc, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
        let n = s
            .with_iovecs(&[(0xffc, 8)], true, |iov| {
                iov.iter().map(|v| v.iov_len).collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(n, vec![4, 4], "one iovec per mapping");
    }

    #[test]
    fn overlapping_misaligned_and_oversized_maps_are_refused() {
        let mem = GuestMemory::new();
        mem.map(0x1000, 0x2000, 0, true, Some(memfd(0x2000)))
            .unwrap();
        assert!(matches!(
            mem.map(0x2000, 0x1000, 0, true, Some(memfd(0x1000))),
            Err(Error::Overlap { .. })
        ));
        assert!(mem.map(0x8001, 0x1000, 0, true, None).is_err());
        assert!(mem.map(0x9000, 0, 0, true, None).is_err());
        assert!(mem.map(u64::MAX - 0xfff, 0x2000, 0, true, None).is_err());
        assert!(mem.map(0x10_0000, MAX_MAPPING * 2, 0, true, None).is_err());
        assert!(matches!(
            mem.map(0x20_0000, 0x2000, 0, true, Some(memfd(0x1000))),
            Err(Error::BeyondFile { .. })
        ));
    }

    #[test]
    fn read_only_and_fdless_mappings_are_not_written() {
        let mem = GuestMemory::new();
        mem.map(0x0, 0x1000, 0, false, Some(memfd(0x1000))).unwrap();
        mem.map(0x1000, 0x1000, 0, true, None).unwrap();
        let s = mem.snapshot();
        assert!(matches!(s.write(0x10, &[1]), Err(Error::ReadOnly { .. })));
        assert!(s.read(0x10, &mut [0u8; 1]).is_ok());
        assert!(s.read(0x1010, &mut [0u8; 1]).is_err());
        assert!(s.with_iovecs(&[(0x10, 4)], true, |_| ()).is_err());
    }

    #[test]
    fn after_unmap_not_even_an_old_snapshot_touches_the_memory() {
        let mem = GuestMemory::new();
        let f = memfd(0x1000);
        mem.map(0x0, 0x1000, 0, true, Some(f.try_clone().unwrap()))
            .unwrap();
        let old = mem.snapshot();
        assert!(old.write(0, b"before").is_ok());
        assert_eq!(mem.unmap(0x0, 0x1000).unwrap(), 1);
        assert!(mem.unmap(0x0, 0x1000).is_err());
        assert!(mem.snapshot().read(0, &mut [0u8; 1]).is_err());
        assert!(old.read(0, &mut [0u8; 1]).is_err(), "revoked");
        assert!(old.write(0, b"after!").is_err(), "revoked");
        assert!(old.with_iovecs(&[(0, 8)], false, |_| ()).is_err());
        let mut b = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 0).unwrap();
        assert_eq!(&b, b"before");
        mem.map(0x0, 0x1000, 0, true, None).unwrap();
        mem.map(0x4000, 0x1000, 0, true, None).unwrap();
        assert_eq!(mem.unmap_all(), 2);
        assert!(mem.snapshot().is_empty());
    }

    #[test]
    fn unmap_waits_for_an_access_in_progress() {
        let mem = Arc::new(GuestMemory::new());
        mem.map(0x0, 0x1000, 0, true, Some(memfd(0x1000))).unwrap();
        let snap = mem.snapshot();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            snap.with_iovecs(&[(0, 16)], true, |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
        });
        started_rx.recv().unwrap();
        let m2 = Arc::clone(&mem);
        let unmapper = std::thread::spawn(move || m2.unmap(0, 0x1000).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!unmapper.is_finished(), "unmap must wait for the access");
        release_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(unmapper.join().unwrap(), 1);
    }
}
