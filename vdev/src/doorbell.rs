//! The fast doorbell page (BAR2): a page of shared memory the client mmaps into the guest
//! (offered as a sparse mmap area with the page's memfd), so the guest rings doorbells with a
//! plain store instead of a trapped MMIO write and a socket round trip.
//!
//! Protocol (see `docs/device-abi.md`, "Fast doorbells"): the guest stores the tail, then
//! reads `POLLING`; the device keeps `POLLING` at 1 while it polls a busy queue, and before it
//! sleeps it clears `POLLING`, issues a full fence and reads the tail once more. Each side
//! stores before it loads the other's word, so one of them always sees the other's store.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};

use netgpu_proto::abi;
use thiserror::Error;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestRegionMmap, MemoryRegionAddress, MmapRegion,
};

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot create the doorbell memfd")]
    Memfd(#[source] std::io::Error),
    #[error("cannot size the doorbell memfd")]
    Size(#[source] std::io::Error),
    #[error("cannot map the doorbell page")]
    Mmap(#[source] vm_memory::mmap::MmapRegionError),
    #[error("cannot duplicate the doorbell memfd")]
    Dup(#[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub struct DoorbellPage {
    file: File,
    page: GuestRegionMmap,
}

impl DoorbellPage {
    pub fn new() -> Result<Self> {
        // SAFETY: the name is a valid NUL-terminated string; the result is checked.
        let fd = unsafe { libc::memfd_create(c"netgpu-doorbells".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Memfd(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(abi::DOORBELL_BAR_SIZE).map_err(Error::Size)?;
        let region = MmapRegion::from_file(
            FileOffset::new(file.try_clone().map_err(Error::Dup)?, 0),
            abi::DOORBELL_BAR_SIZE as usize,
        )
        .map_err(Error::Mmap)?;
        // A one-page region at address 0 cannot overflow.
        let page = GuestRegionMmap::new(region, GuestAddress(0)).ok_or(Error::Mmap(
            vm_memory::mmap::MmapRegionError::InvalidPointer,
        ))?;
        Ok(DoorbellPage { file, page })
    }

    /// The memfd the client maps.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn off(q: u32, field: u64) -> MemoryRegionAddress {
        MemoryRegionAddress(u64::from(q) * abi::fastdb::STRIDE + field)
    }

    /// The submission tail the guest stored for queue `q`.
    pub fn sq_tail(&self, q: u32) -> u32 {
        self.page
            .load(Self::off(q, abi::fastdb::SQ_TAIL), Ordering::Acquire)
            .unwrap_or(0)
    }

    pub fn set_polling(&self, q: u32, polling: bool) {
        let _ = self.page.store(
            u32::from(polling),
            Self::off(q, abi::fastdb::POLLING),
            Ordering::Release,
        );
        fence(Ordering::SeqCst);
    }

    /// Resets queue `q`'s words (queue enable or device reset).
    pub fn clear(&self, q: u32) {
        let _ = self
            .page
            .store(0u32, Self::off(q, abi::fastdb::SQ_TAIL), Ordering::Release);
        self.set_polling(q, false);
    }

    /// Trapped access to the page (a client that does not mmap it).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if self
            .page
            .read_slice(data, MemoryRegionAddress(offset))
            .is_err()
        {
            data.fill(0);
        }
    }

    pub fn write(&self, offset: u64, data: &[u8]) {
        let _ = self.page.write_slice(data, MemoryRegionAddress(offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn stores_through_the_fd_are_seen_as_tails() {
        let p = DoorbellPage::new().unwrap();
        // What the guest does through its mapping of the same memfd.
        p.file.write_all_at(&7u32.to_le_bytes(), 16 * 3).unwrap();
        assert_eq!(p.sq_tail(3), 7);
        p.set_polling(3, true);
        let mut b = [0u8; 4];
        p.file.read_exact_at(&mut b, 16 * 3 + 8).unwrap();
        assert_eq!(u32::from_le_bytes(b), 1);
        p.clear(3);
        assert_eq!(p.sq_tail(3), 0);
        let mut out = [0xffu8; 8];
        p.read(abi::DOORBELL_BAR_SIZE - 4, &mut out);
        assert_eq!(out, [0; 8], "out of range reads as zero");
    }
}
