//! PCI configuration space: 4096 bytes of registers plus a writable-bits mask.
//!
//! A write stores `(old & !mask) | (new & mask)` (write-1-to-clear bits are handled with a
//! second mask), so read-only bits, reserved fields and BAR sizing (write all ones, read back
//! the size mask: cloud-hypervisor does exactly this) fall out of one mechanism. The space is
//! 4096 bytes because QEMU drops the PCI Express capability of a device whose config region
//! is smaller. Writes with a device-level effect (FLR, command register, MSI-X control) are
//! reported back to the caller as [`Effect`]s.

use netgpu_proto::abi;

/// Size of the configuration space (PCIe extended).
pub const CONFIG_SPACE_SIZE: usize = 4096;

pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const CLASS_PROG: usize = 0x09;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const SUBSYSTEM_ID: usize = 0x2e;
pub const CAP_PTR: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

/// Offset of the PCI Express capability.
pub const PCIE_CAP: usize = 0x40;
/// Offset of the MSI-X capability.
pub const MSIX_CAP: usize = 0x80;
/// Offset of the power management capability.
pub const PM_CAP: usize = 0xa0;

pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_PARITY: u16 = 1 << 6;
pub const COMMAND_SERR: u16 = 1 << 8;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u16 = 1 << 4;

const MSIX_CTRL_ENABLE: u16 = 1 << 15;
const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;

/// PCIe device control register: initiate function-level reset.
const PCIE_DEVCTL_FLR: u16 = 1 << 15;
/// PCIe device capabilities: function-level reset capable.
const PCIE_DEVCAP_FLR: u32 = 1 << 28;

/// Identity of the device, configurable per instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            vendor: abi::DEFAULT_VENDOR_ID,
            device: abi::DEFAULT_DEVICE_ID,
            subsystem_vendor: abi::DEFAULT_SUBSYSTEM_VENDOR_ID,
            subsystem: abi::DEFAULT_SUBSYSTEM_ID,
        }
    }
}

/// A device-level effect of a config write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The driver requested a function-level reset.
    Flr,
    /// The MSI-X enable or function mask bit changed.
    MsixControl { enabled: bool, masked: bool },
}

/// The BARs the device implements: (index, size, prefetchable). All are 64-bit memory BARs.
pub const BARS: [(u32, u64, bool); 3] = [
    (abi::REGS_BAR, abi::REGS_BAR_SIZE, false),
    (abi::DOORBELL_BAR, abi::DOORBELL_BAR_SIZE, true),
    (abi::MSIX_BAR, abi::MSIX_BAR_SIZE, false),
];

pub struct ConfigSpace {
    regs: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    /// Write-1-to-clear bits.
    w1c: [u8; CONFIG_SPACE_SIZE],
    ids: Ids,
}

impl ConfigSpace {
    pub fn new(ids: Ids) -> Self {
        let mut c = ConfigSpace {
            regs: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            w1c: [0; CONFIG_SPACE_SIZE],
            ids,
        };
        c.init();
        c
    }

    /// Restores power-on values (reset); the ids are kept.
    pub fn reset(&mut self) {
        self.regs = [0; CONFIG_SPACE_SIZE];
        self.writable = [0; CONFIG_SPACE_SIZE];
        self.w1c = [0; CONFIG_SPACE_SIZE];
        self.init();
    }

    fn init(&mut self) {
        let ids = self.ids;
        self.set16(VENDOR_ID, ids.vendor);
        self.set16(DEVICE_ID, ids.device);
        self.set16(STATUS, STATUS_CAP_LIST);
        self.regs[REVISION] = abi::PCI_REVISION_ID;
        let class = abi::PCI_CLASS_CODE;
        self.regs[CLASS_PROG] = class as u8;
        self.regs[CLASS_PROG + 1] = (class >> 8) as u8;
        self.regs[CLASS_PROG + 2] = (class >> 16) as u8;
        self.regs[HEADER_TYPE] = 0;
        self.set16(SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor);
        self.set16(SUBSYSTEM_ID, ids.subsystem);
        self.regs[CAP_PTR] = PCIE_CAP as u8;
        self.regs[INTERRUPT_PIN] = 1; // INTA#
        self.mask16(
            COMMAND,
            COMMAND_MEMORY
                | COMMAND_BUS_MASTER
                | COMMAND_PARITY
                | COMMAND_SERR
                | COMMAND_INTX_DISABLE,
        );
        // Status: detected parity error, signalled/received aborts, SERR are RW1C.
        self.set_w1c16(STATUS, 0xf900);
        self.writable[INTERRUPT_LINE] = 0xff;

        for (index, size, prefetch) in BARS {
            let off = BAR0 + 4 * index as usize;
            // Memory BAR, 64-bit (type 0b10), prefetchable bit 3.
            let flags: u32 = 0b100 | if prefetch { 1 << 3 } else { 0 };
            self.set32(off, flags);
            self.mask32(off, !(size as u32 - 1) & !0xf);
            // Upper half: all address bits writable (sizes are below 4 GiB).
            self.mask32(off + 4, 0xffff_ffff);
        }

        // PCI Express capability (version 2, endpoint), 0x3c bytes.
        let p = PCIE_CAP;
        self.regs[p] = 0x10;
        self.regs[p + 1] = MSIX_CAP as u8;
        self.set16(p + 2, 0x0002); // version 2, device/port type 0: PCIe endpoint
        self.set32(p + 4, PCIE_DEVCAP_FLR); // devcap: max payload 128, FLR
                                            // devctl: error reporting enables, relaxed ordering, max payload/read sizes, no snoop,
                                            // and the FLR trigger (reads back 0).
        self.set16(p + 8, 0x2810);
        self.mask16(p + 8, 0x7fff | PCIE_DEVCTL_FLR);
        self.set_w1c16(p + 0x0a, 0x000f); // devsta error bits
        self.set32(p + 0x0c, 0x0000_0011); // linkcap: 2.5 GT/s, x1
        self.mask16(p + 0x10, 0x01c3); // linkctl: ASPM, RCB, common clock, ext sync
        self.set16(p + 0x12, 0x0011); // linksta: 2.5 GT/s, x1
        self.set32(p + 0x24, 0x0000_0010); // devcap2: completion timeout disable supported
        self.mask16(p + 0x28, 0x041f); // devctl2

        // MSI-X capability.
        let m = MSIX_CAP;
        self.regs[m] = 0x11;
        self.regs[m + 1] = PM_CAP as u8;
        self.set16(m + 2, (abi::MSIX_VECTORS - 1) as u16);
        self.mask16(m + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
        self.set32(m + 4, abi::MSIX_TABLE_OFFSET | abi::MSIX_BAR);
        self.set32(m + 8, abi::MSIX_PBA_OFFSET | abi::MSIX_BAR);

        // Power management capability (version 3, D0 and D3hot), last in the list.
        let pm = PM_CAP;
        self.regs[pm] = 0x01;
        self.regs[pm + 1] = 0;
        self.set16(pm + 2, 0x0003);
        self.set16(pm + 4, 0x0008); // PMCSR: no soft reset on D3hot->D0
        self.mask16(pm + 4, 0x0003);
    }

    fn set16(&mut self, off: usize, v: u16) {
        self.regs[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(&mut self, off: usize, v: u32) {
        self.regs[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn mask16(&mut self, off: usize, m: u16) {
        self.writable[off..off + 2].copy_from_slice(&m.to_le_bytes());
    }
    fn mask32(&mut self, off: usize, m: u32) {
        self.writable[off..off + 4].copy_from_slice(&m.to_le_bytes());
    }
    fn set_w1c16(&mut self, off: usize, m: u16) {
        self.w1c[off..off + 2].copy_from_slice(&m.to_le_bytes());
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.regs[off], self.regs[off + 1]])
    }

    #[cfg(test)]
    fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[off],
            self.regs[off + 1],
            self.regs[off + 2],
            self.regs[off + 3],
        ])
    }

    /// Reads `data.len()` bytes at `offset`; bytes beyond the space read as all ones.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.regs.get(o).copied())
                .unwrap_or(0xff);
        }
    }

    /// Writes `data` at `offset` through the writable mask; returns the device effects.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Vec<Effect> {
        let msix_before = self.get16(MSIX_CAP + 2);
        let mut effects = Vec::new();
        for (i, &v) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o < CONFIG_SPACE_SIZE)
            else {
                continue;
            };
            let mask = self.writable[o];
            let old = self.regs[o];
            let cleared = old & !(v & self.w1c[o]);
            self.regs[o] = (cleared & !mask) | (v & mask);
        }
        let devctl = PCIE_CAP + 8;
        if self.get16(devctl) & PCIE_DEVCTL_FLR != 0 {
            let v = self.get16(devctl) & !PCIE_DEVCTL_FLR;
            self.set16(devctl, v);
            effects.push(Effect::Flr);
        }
        let msix_after = self.get16(MSIX_CAP + 2);
        if msix_after != msix_before {
            effects.push(Effect::MsixControl {
                enabled: msix_after & MSIX_CTRL_ENABLE != 0,
                masked: msix_after & MSIX_CTRL_FUNCTION_MASK != 0,
            });
        }
        effects
    }

    pub fn command(&self) -> u16 {
        self.get16(COMMAND)
    }

    #[cfg(test)]
    pub fn msix_enabled(&self) -> bool {
        self.get16(MSIX_CAP + 2) & MSIX_CTRL_ENABLE != 0
    }

    #[cfg(test)]
    /// The address the guest programmed into a 64-bit BAR.
    pub fn bar_address(&self, index: u32) -> u64 {
        let off = BAR0 + 4 * index as usize;
        (u64::from(self.get32(off + 4)) << 32) | u64::from(self.get32(off) & !0xf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(c: &mut ConfigSpace, off: u64, v: u32) -> Vec<Effect> {
        c.write(off, &v.to_le_bytes())
    }

    #[test]
    fn identity_and_class_are_as_configured() {
        let ids = Ids {
            vendor: 0x1234,
            device: 0x5678,
            subsystem_vendor: 0x1111,
            subsystem: 0x2222,
        };
        let c = ConfigSpace::new(ids);
        assert_eq!(r32(&c, 0), 0x5678_1234);
        assert_eq!(r32(&c, 0x08) >> 8, 0x030200);
        assert_eq!(r32(&c, 0x2c), 0x2222_1111);
        assert_eq!(r32(&c, 0x3c) >> 8 & 0xff, 1, "INTA");
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = ConfigSpace::new(Ids::default());
        for (index, size, prefetch) in BARS {
            let off = (BAR0 + 4 * index as usize) as u64;
            w32(&mut c, off, 0xffff_ffff);
            w32(&mut c, off + 4, 0xffff_ffff);
            let lo = r32(&c, off);
            let hi = r32(&c, off + 4);
            let flags = 0b100 | if prefetch { 8 } else { 0 };
            assert_eq!(lo, !(size as u32 - 1) | flags, "BAR{index}");
            assert_eq!(hi, 0xffff_ffff);
            let mask = (u64::from(hi) << 32) | u64::from(lo & !0xf);
            assert_eq!(!mask + 1, size);
            w32(&mut c, off, 0xfe00_0000);
            w32(&mut c, off + 4, 0x1);
            assert_eq!(c.bar_address(index), 0x1_fe00_0000);
        }
        w32(&mut c, 0x30, 0xffff_ffff);
        assert_eq!(r32(&c, 0x30), 0, "no expansion ROM");
    }

    #[test]
    fn config_write_to_read_only_bits_is_ignored() {
        let mut c = ConfigSpace::new(Ids::default());
        w32(&mut c, 0, 0);
        assert_eq!(r32(&c, 0) & 0xffff, u32::from(abi::DEFAULT_VENDOR_ID));
        w32(&mut c, 0x08, 0);
        assert_eq!(r32(&c, 0x08) >> 8, 0x030200);
        c.write(0x04, &0xffffu16.to_le_bytes());
        assert_eq!(
            c.command(),
            COMMAND_MEMORY
                | COMMAND_BUS_MASTER
                | COMMAND_PARITY
                | COMMAND_SERR
                | COMMAND_INTX_DISABLE
        );
        // Capability list bit stays set, MSI-X table location is fixed.
        assert_ne!(r32(&c, 0x04) >> 16 & u32::from(STATUS_CAP_LIST), 0);
        w32(&mut c, (MSIX_CAP + 4) as u64, 0);
        assert_eq!(r32(&c, (MSIX_CAP + 4) as u64), abi::MSIX_BAR);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut c = ConfigSpace::new(Ids::default());
        c.regs[STATUS + 1] |= 0x80; // detected parity error
        c.write(STATUS as u64, &0x0000u16.to_le_bytes());
        assert_eq!(c.regs[STATUS + 1] & 0x80, 0x80);
        c.write(STATUS as u64, &0x8000u16.to_le_bytes());
        assert_eq!(c.regs[STATUS + 1] & 0x80, 0);
        assert_ne!(c.get16(STATUS) & STATUS_CAP_LIST, 0);
    }

    #[test]
    fn capability_list_is_pcie_msix_pm() {
        let c = ConfigSpace::new(Ids::default());
        let mut at = c.regs[CAP_PTR] as usize;
        let mut ids = Vec::new();
        while at != 0 {
            ids.push(c.regs[at]);
            at = c.regs[at + 1] as usize;
        }
        assert_eq!(ids, vec![0x10, 0x11, 0x01]);
        assert_eq!(c.get16(MSIX_CAP + 2) & 0x7ff, 64, "65 vectors");
    }

    #[test]
    fn out_of_range_reads_are_all_ones_and_writes_ignored() {
        let mut c = ConfigSpace::new(Ids::default());
        let mut b = [0u8; 4];
        c.read(4094, &mut b);
        assert_eq!(b[2..], [0xff, 0xff]);
        c.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert!(c.write(u64::MAX - 1, &[1, 2, 3, 4]).is_empty());
        assert_eq!(r32(&c, 0x100), 0, "no extended capabilities");
    }

    #[test]
    fn flr_bit_triggers_reset_and_reads_back_zero() {
        let mut c = ConfigSpace::new(Ids::default());
        let eff = c.write(
            (PCIE_CAP + 8) as u64,
            &(PCIE_DEVCTL_FLR | 0x10).to_le_bytes(),
        );
        assert_eq!(eff, vec![Effect::Flr]);
        assert_eq!(c.get16(PCIE_CAP + 8) & PCIE_DEVCTL_FLR, 0);
    }

    #[test]
    fn msix_enable_is_reported() {
        let mut c = ConfigSpace::new(Ids::default());
        let eff = c.write((MSIX_CAP + 3) as u64, &[0x80]);
        assert_eq!(
            eff,
            vec![Effect::MsixControl {
                enabled: true,
                masked: false
            }]
        );
        assert!(c.msix_enabled());
        c.reset();
        assert!(!c.msix_enabled());
    }
}
