//! Interrupt delivery: MSI-X vectors and the INTx fallback, through the eventfds the client
//! passes with `SET_IRQS`, plus the emulated MSI-X table and pending bit array of BAR4.
//!
//! As with the kernel's vfio-pci, the client chooses the interrupt type by giving eventfds
//! for an irq index: while any MSI-X eventfd is set the device signals MSI-X, otherwise INTx
//! (unless the guest disabled INTx in the command register). QEMU and cloud-hypervisor
//! emulate the MSI-X table themselves; the table in BAR4 is still honoured (per-vector mask,
//! pending bits) for clients that forward table accesses.

use std::fs::File;
use std::io::Write;

use netgpu_proto::abi;
use tracing::debug;

const ENTRY_SIZE: usize = 16;
const VECTOR_CTRL_MASKED: u32 = 1;

#[derive(Default)]
pub struct Interrupts {
    msix: Vec<Option<File>>,
    intx: Option<File>,
    /// Emulated MSI-X table (BAR4 offset 0).
    table: Vec<u8>,
    pba: u128,
    /// Whether the client ever wrote the table (QEMU never does).
    table_written: bool,
    msix_function_mask: bool,
    intx_disabled: bool,
    intx_masked: bool,
    /// INTx causes latched for the `INTR_STATUS` register.
    pub intr_status: u32,
    name: String,
}

impl Interrupts {
    pub fn new(name: &str) -> Self {
        let mut i = Interrupts {
            msix: (0..abi::MSIX_VECTORS).map(|_| None).collect(),
            name: name.to_string(),
            ..Default::default()
        };
        i.reset_table();
        i
    }

    fn reset_table(&mut self) {
        self.table = vec![0; abi::MSIX_VECTORS as usize * ENTRY_SIZE];
        for v in 0..abi::MSIX_VECTORS as usize {
            // Vectors start masked, as on real hardware.
            self.table[v * ENTRY_SIZE + 12] = VECTOR_CTRL_MASKED as u8;
        }
        self.pba = 0;
        self.table_written = false;
    }

    /// Device reset: table and pending bits to power-on values. The eventfds are the
    /// client's and stay until it changes them.
    pub fn reset(&mut self) {
        self.reset_table();
        self.msix_function_mask = false;
        self.intr_status = 0;
        self.intx_masked = false;
    }

    /// Drops every eventfd (client disconnect).
    pub fn clear_fds(&mut self) {
        for f in &mut self.msix {
            *f = None;
        }
        self.intx = None;
    }

    /// `SET_IRQS` with eventfds for MSI-X vectors `start..start+fds.len()`; an empty `fds`
    /// with `count` clears that range.
    pub fn set_msix(&mut self, start: u32, count: u32, fds: Vec<File>) -> bool {
        let Some(end) = start.checked_add(count) else {
            return false;
        };
        if end > abi::MSIX_VECTORS || (!fds.is_empty() && fds.len() != count as usize) {
            return false;
        }
        if fds.is_empty() {
            for v in start..end {
                self.msix[v as usize] = None;
            }
        } else {
            for (v, f) in (start..end).zip(fds) {
                self.msix[v as usize] = Some(f);
            }
        }
        true
    }

    pub fn clear_msix(&mut self) {
        for f in &mut self.msix {
            *f = None;
        }
    }

    pub fn set_intx(&mut self, fd: Option<File>) {
        self.intx = fd;
    }

    pub fn set_intx_masked(&mut self, masked: bool) {
        self.intx_masked = masked;
    }

    pub fn set_intx_disabled(&mut self, disabled: bool) {
        self.intx_disabled = disabled;
    }

    pub fn set_function_mask(&mut self, masked: bool) {
        self.msix_function_mask = masked;
        if !masked {
            self.deliver_pending();
        }
    }

    fn msix_active(&self) -> bool {
        self.msix.iter().any(Option::is_some)
    }

    fn vector_masked(&self, v: u32) -> bool {
        let at = v as usize * ENTRY_SIZE + 12;
        self.table
            .get(at)
            .is_some_and(|b| u32::from(*b) & VECTOR_CTRL_MASKED != 0)
    }

    /// Raises `vector` (MSI-X) or, in INTx mode, asserts INTx with `cause` latched in
    /// `INTR_STATUS`. Returns whether an eventfd was signalled.
    pub fn signal(&mut self, vector: u32, cause: u32) -> bool {
        if self.msix_active() {
            if vector >= abi::MSIX_VECTORS {
                return false;
            }
            // A table write the client forwarded masked the vector: latch it in the PBA.
            // The table only counts once the client wrote it (QEMU never does; its vectors
            // are then "unmasked" from our point of view and gated by the eventfds).
            if self.msix_function_mask || (self.table_touched() && self.vector_masked(vector)) {
                self.pba |= 1u128 << vector;
                return false;
            }
            return match &self.msix[vector as usize] {
                Some(f) => kick(f, &self.name),
                None => false,
            };
        }
        self.intr_status |= cause;
        if self.intx_disabled || self.intx_masked {
            return false;
        }
        match &self.intx {
            Some(f) => kick(f, &self.name),
            None => false,
        }
    }

    fn table_touched(&self) -> bool {
        self.table_written
    }

    fn deliver_pending(&mut self) {
        for v in 0..abi::MSIX_VECTORS {
            if self.pba & (1u128 << v) != 0 && !self.vector_masked(v) && !self.msix_function_mask {
                self.pba &= !(1u128 << v);
                if let Some(f) = &self.msix[v as usize] {
                    kick(f, &self.name);
                }
            }
        }
    }

    /// BAR4 read.
    pub fn bar_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64);
            *b = if o < u64::from(abi::MSIX_PBA_OFFSET) {
                self.table.get(o as usize).copied().unwrap_or(0)
            } else {
                let p = o - u64::from(abi::MSIX_PBA_OFFSET);
                if p < 16 {
                    (self.pba >> (8 * p)) as u8
                } else {
                    0
                }
            };
        }
    }

    /// BAR4 write (the PBA is read-only).
    pub fn bar_write(&mut self, offset: u64, data: &[u8]) {
        let mut touched = false;
        for (i, &b) in data.iter().enumerate() {
            let o = offset.saturating_add(i as u64);
            if o < u64::from(abi::MSIX_PBA_OFFSET) {
                if let Some(slot) = self.table.get_mut(o as usize) {
                    *slot = b;
                    touched = true;
                }
            }
        }
        if touched {
            self.table_written = true;
            self.deliver_pending();
        }
    }
}

fn kick(f: &File, name: &str) -> bool {
    let mut f = f;
    match f.write_all(&1u64.to_ne_bytes()) {
        Ok(()) => true,
        Err(e) => {
            debug!(device = name, "interrupt eventfd write failed: {e}");
            false
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    pub fn eventfd() -> File {
        // SAFETY: eventfd returns a new descriptor or -1, checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: fd is a freshly created descriptor we own exclusively.
        unsafe { File::from_raw_fd(fd) }
    }

    pub fn count(f: &File) -> u64 {
        let mut b = [0u8; 8];
        let mut f = f;
        match f.read(&mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }

    #[test]
    fn msix_vector_signals_its_eventfd() {
        let mut i = Interrupts::new("t");
        let a = eventfd();
        let b = eventfd();
        assert!(i.set_msix(1, 2, vec![a.try_clone().unwrap(), b.try_clone().unwrap()]));
        assert!(i.signal(2, 0));
        assert_eq!(count(&a), 0);
        assert_eq!(count(&b), 1);
        assert!(!i.signal(7, 0), "vector without eventfd");
        assert!(!i.signal(1000, 0), "vector out of range");
    }

    #[test]
    fn set_msix_rejects_out_of_range_and_count_mismatch() {
        let mut i = Interrupts::new("t");
        assert!(!i.set_msix(abi::MSIX_VECTORS, 1, vec![eventfd()]));
        assert!(!i.set_msix(u32::MAX, 2, vec![]));
        assert!(!i.set_msix(0, 2, vec![eventfd()]));
    }

    #[test]
    fn intx_is_used_without_msix_and_latches_the_cause() {
        let mut i = Interrupts::new("t");
        let x = eventfd();
        i.set_intx(Some(x.try_clone().unwrap()));
        assert!(i.signal(3, 1 << 3));
        assert_eq!(count(&x), 1);
        assert_eq!(i.intr_status, 1 << 3);
        i.set_intx_disabled(true);
        assert!(!i.signal(3, 1 << 4));
        assert_eq!(i.intr_status, (1 << 3) | (1 << 4));
    }

    #[test]
    fn masked_vector_sets_pending_bit_and_fires_on_unmask() {
        let mut i = Interrupts::new("t");
        let a = eventfd();
        i.set_msix(0, 1, vec![a.try_clone().unwrap()]);
        i.bar_write(12, &1u32.to_le_bytes()); // mask vector 0
        assert!(!i.signal(0, 0));
        let mut pba = [0u8; 8];
        i.bar_read(u64::from(abi::MSIX_PBA_OFFSET), &mut pba);
        assert_eq!(pba[0] & 1, 1);
        i.bar_write(12, &0u32.to_le_bytes());
        assert_eq!(count(&a), 1);
        i.bar_read(u64::from(abi::MSIX_PBA_OFFSET), &mut pba);
        assert_eq!(pba[0] & 1, 0);
    }
}
