//! Guest memory: the ranges the client mapped with `DMA_MAP`, and checked access to them.
//!
//! Each mapping with a file descriptor is mmapped (vm-memory `MmapRegion`) at its guest
//! address; mappings without one (the client keeps that memory to itself) are recorded so
//! overlaps are still refused, but the device cannot touch them. Every access goes through
//! [`GuestMemory::read`] / [`GuestMemory::write`], which check the whole range is mapped (and
//! writable for writes) before touching a byte, so a guest-supplied address can never reach
//! outside what the client mapped. The current set of mappings is an immutable snapshot
//! behind an `Arc`: queue workers take a snapshot per command, `DMA_MAP`/`DMA_UNMAP` publish a
//! new one, and an old mapping stays valid until its last user drops it.

use std::fs::File;
use std::sync::{Arc, RwLock};

use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Largest single mapping accepted (1 TiB): bounds what a client can make us mmap.
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
}

impl Mapping {
    fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// One immutable view of guest memory.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Sorted by address, non-overlapping.
    maps: Vec<Mapping>,
    mem: Option<Arc<GuestMemoryMmap>>,
}

impl Snapshot {
    /// Whether `addr..addr+len` lies wholly in backed mappings (writable ones if `write`).
    pub fn check(&self, addr: u64, len: u64, write: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or(Error::Unmapped { addr, len })?;
        let mut at = addr;
        // Ranges may span adjacent mappings.
        let start = self.maps.partition_point(|m| m.end() <= at);
        for m in &self.maps[start..] {
            if m.addr > at || m.region.is_none() {
                return Err(Error::Unmapped { addr, len });
            }
            if write && !m.writable {
                return Err(Error::ReadOnly { addr, len });
            }
            at = m.end().min(end);
            if at == end {
                return Ok(());
            }
        }
        Err(Error::Unmapped { addr, len })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.check(addr, len, false)?;
        if len == 0 {
            return Ok(());
        }
        let mem = self.mem.as_ref().ok_or(Error::Unmapped { addr, len })?;
        mem.read_slice(buf, GuestAddress(addr))
            .map_err(|_| Error::Unmapped { addr, len })
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.check(addr, len, true)?;
        if len == 0 {
            return Ok(());
        }
        let mem = self.mem.as_ref().ok_or(Error::Unmapped { addr, len })?;
        mem.write_slice(buf, GuestAddress(addr))
            .map_err(|_| Error::Unmapped { addr, len })
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
#[derive(Default)]
pub struct GuestMemory {
    current: RwLock<Arc<Snapshot>>,
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
        let regions: Vec<Arc<GuestRegionMmap>> =
            maps.iter().filter_map(|m| m.region.clone()).collect();
        let mem = if regions.is_empty() {
            None
        } else {
            // Regions are sorted and disjoint by construction; a failure here would be our
            // bug, and leaves the device with no accessible memory rather than wrong memory.
            GuestMemoryMmap::from_arc_regions(regions)
                .ok()
                .map(Arc::new)
        };
        let snap = Arc::new(Snapshot { maps, mem });
        match self.current.write() {
            Ok(mut g) => *g = snap,
            Err(p) => *p.into_inner() = snap,
        }
    }

    /// Adds a mapping (`DMA_MAP`). `file` is the client's fd for the memory, if it sent one;
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
            },
        );
        self.publish(maps);
        Ok(())
    }

    /// Removes the mapping that starts at `addr` with `size` (`DMA_UNMAP`). Returns the
    /// number of mappings removed.
    pub fn unmap(&self, addr: u64, size: u64) -> Result<usize> {
        let snap = self.snapshot();
        let mut maps = snap.maps.clone();
        let before = maps.len();
        // QEMU unmaps exactly what it mapped; a range covering several whole mappings is
        // accepted too (the kernel's type1 IOMMU does the same).
        let end = addr
            .checked_add(size)
            .ok_or(Error::NoSuchMapping { addr, size })?;
        maps.retain(|m| !(m.addr >= addr && m.end() <= end));
        let removed = before - maps.len();
        if removed == 0 {
            return Err(Error::NoSuchMapping { addr, size });
        }
        self.publish(maps);
        Ok(removed)
    }

    /// Removes every mapping (`DMA_UNMAP` with the unmap-all flag, or a client disconnect).
    pub fn unmap_all(&self) -> usize {
        let n = self.snapshot().maps.len();
        self.publish(Vec::new());
        n
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
    }

    #[test]
    fn unmap_removes_and_old_snapshots_stay_valid() {
        let mem = GuestMemory::new();
        mem.map(0x0, 0x1000, 0, true, Some(memfd(0x1000))).unwrap();
        let old = mem.snapshot();
        assert_eq!(mem.unmap(0x0, 0x1000).unwrap(), 1);
        assert!(mem.unmap(0x0, 0x1000).is_err());
        assert!(mem.snapshot().read(0, &mut [0u8; 1]).is_err());
        assert!(old.read(0, &mut [0u8; 1]).is_ok());
        mem.map(0x0, 0x1000, 0, true, None).unwrap();
        mem.map(0x4000, 0x1000, 0, true, None).unwrap();
        assert_eq!(mem.unmap_all(), 2);
        assert!(mem.snapshot().is_empty());
    }
}
