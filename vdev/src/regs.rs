//! The BAR0 register file (`docs/device-abi.md` section 2): device-wide registers, the
//! per-queue register blocks and the trapped doorbells.
//!
//! Reads of any size are composed from 32-bit words, so a guest may read bytes of the name
//! or a whole 64-bit register; they come from a [`RegisterSource`]. Writes must be 4 or 8
//! bytes and naturally aligned (others are refused with a warning and change nothing); they
//! are decoded into [`Action`]s, which the device carries out. This module changes no state.

use netgpu_proto::abi::{self, queue as qreg, reg};
use tracing::warn;

use crate::queue::QueueShared;

/// What the remote GPU reported at connect time (the `GPU_*` registers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuInfo {
    pub total_mem: u64,
    pub cc: (u32, u32),
    pub sm_count: u32,
    pub driver_version: u32,
    pub executor: u32,
    pub uuid: [u8; 16],
    pub name: String,
}

/// The state register reads show.
pub trait RegisterSource {
    /// `(STATUS, FATAL_REASON)`.
    fn status(&self) -> (u32, u32);
    fn driver_features(&self) -> u64;
    fn event_vector(&self) -> u32;
    /// `INTR_STATUS`, cleared by the read.
    fn take_intr_status(&self) -> u32;
    fn gpu_info(&self) -> GpuInfo;
    fn memory_quota(&self) -> u64;
    fn queue(&self, q: usize) -> Option<&QueueShared>;
}

/// What a register write asks the device to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Reset,
    /// New `DRIVER_FEATURES` (already restricted to the offered bits).
    DriverFeatures(u64),
    EventVector(u32),
    EnableQueue(usize),
    DisableQueue(usize),
    /// A configuration register of queue `q` (offset `field` in its block).
    QueueReg {
        q: usize,
        field: u64,
        value: u32,
    },
    Doorbell {
        q: usize,
        tail: u32,
    },
}

fn queue_block(off: u64) -> Option<(usize, u64)> {
    let end = reg::QUEUE_REGS_BASE + u64::from(abi::MAX_QUEUES) * reg::QUEUE_REGS_STRIDE;
    (reg::QUEUE_REGS_BASE..end).contains(&off).then(|| {
        let rel = off - reg::QUEUE_REGS_BASE;
        (
            (rel / reg::QUEUE_REGS_STRIDE) as usize,
            rel % reg::QUEUE_REGS_STRIDE,
        )
    })
}

fn doorbell(off: u64) -> Option<usize> {
    let end = reg::DOORBELL_BASE + u64::from(abi::MAX_QUEUES) * reg::DOORBELL_STRIDE;
    if !(reg::DOORBELL_BASE..end).contains(&off) {
        return None;
    }
    let rel = off - reg::DOORBELL_BASE;
    (rel % reg::DOORBELL_STRIDE == 0).then_some((rel / reg::DOORBELL_STRIDE) as usize)
}

/// Reads the 32-bit word at `off` (4-byte aligned).
fn read32(s: &impl RegisterSource, off: u64) -> u32 {
    match off {
        reg::MAGIC => abi::MAGIC,
        reg::VERSION => abi::ABI_VERSION,
        o if o == reg::DEVICE_FEATURES => abi::FEATURES_ALL as u32,
        o if o == reg::DEVICE_FEATURES + 4 => (abi::FEATURES_ALL >> 32) as u32,
        o if o == reg::DRIVER_FEATURES => s.driver_features() as u32,
        o if o == reg::DRIVER_FEATURES + 4 => (s.driver_features() >> 32) as u32,
        reg::STATUS => s.status().0,
        reg::FATAL_REASON => s.status().1,
        reg::RESET => 0,
        reg::INTR_STATUS => s.take_intr_status(),
        reg::MAX_QUEUES => abi::MAX_QUEUES,
        reg::MAX_QUEUE_SIZE => abi::MAX_QUEUE_SIZE,
        reg::MAX_SG_ENTRIES => abi::MAX_SG_ENTRIES,
        reg::MAX_TRANSFER => abi::MAX_TRANSFER,
        reg::EVENT_VECTOR => s.event_vector(),
        o if (reg::GPU_TOTAL_MEM..reg::END).contains(&o) => gpu_word(s, o),
        o => match queue_block(o) {
            Some((q, field)) => s.queue(q).map_or(0, |q| q.read_reg(field)),
            None => 0, // reserved, write-only doorbells
        },
    }
}

fn gpu_word(s: &impl RegisterSource, off: u64) -> u32 {
    let info = s.gpu_info();
    let quota = s.memory_quota();
    match off {
        reg::GPU_TOTAL_MEM => info.total_mem as u32,
        o if o == reg::GPU_TOTAL_MEM + 4 => (info.total_mem >> 32) as u32,
        reg::GPU_COMPUTE_CAPABILITY => (info.cc.0 << 16) | (info.cc.1 & 0xffff),
        reg::GPU_SM_COUNT => info.sm_count,
        reg::GPU_DRIVER_VERSION => info.driver_version,
        reg::GPU_EXECUTOR => info.executor,
        reg::MEMORY_QUOTA => quota as u32,
        o if o == reg::MEMORY_QUOTA + 4 => (quota >> 32) as u32,
        o if (reg::GPU_UUID..reg::GPU_UUID + 16).contains(&o) => {
            let i = (o - reg::GPU_UUID) as usize;
            u32::from_le_bytes([
                info.uuid[i],
                info.uuid[i + 1],
                info.uuid[i + 2],
                info.uuid[i + 3],
            ])
        }
        o if (reg::GPU_NAME..reg::GPU_NAME + reg::GPU_NAME_LEN).contains(&o) => {
            let i = (o - reg::GPU_NAME) as usize;
            let n = info.name.as_bytes();
            // Keep the last byte NUL so the name is always terminated.
            let byte = |k: usize| {
                if k < reg::GPU_NAME_LEN as usize - 1 {
                    n.get(k).copied().unwrap_or(0)
                } else {
                    0
                }
            };
            u32::from_le_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)])
        }
        _ => 0,
    }
}

/// Reads `data.len()` bytes at `offset` of BAR0.
pub fn read(s: &impl RegisterSource, offset: u64, data: &mut [u8]) {
    let in_bar = offset
        .checked_add(data.len() as u64)
        .is_some_and(|end| end <= abi::REGS_BAR_SIZE);
    if !in_bar {
        data.fill(0xff);
        return;
    }
    let mut word_at = u64::MAX;
    let mut word = [0u8; 4];
    for (i, b) in data.iter_mut().enumerate() {
        let o = offset + i as u64;
        let w = o & !3;
        if w != word_at {
            word = read32(s, w).to_le_bytes();
            word_at = w;
        }
        *b = word[(o & 3) as usize];
    }
}

/// Decodes a write of `data` at `offset` of BAR0 into actions. `features` is the current
/// `DRIVER_FEATURES` (a 4-byte write changes half of it).
pub fn write(device: &str, features: u64, offset: u64, data: &[u8]) -> Vec<Action> {
    let ok_size = matches!(data.len(), 4 | 8) && offset % data.len() as u64 == 0;
    if !ok_size || offset.saturating_add(data.len() as u64) > abi::REGS_BAR_SIZE {
        warn!(
            device,
            offset,
            len = data.len(),
            "refused unaligned or odd-sized register write"
        );
        return Vec::new();
    }
    let mut actions = Vec::new();
    let mut features = features;
    for (i, chunk) in data.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        if let Some(a) = write32(device, &mut features, offset + 4 * i as u64, v) {
            actions.push(a);
        }
    }
    actions
}

fn write32(device: &str, features: &mut u64, off: u64, v: u32) -> Option<Action> {
    match off {
        o if o == reg::DRIVER_FEATURES || o == reg::DRIVER_FEATURES + 4 => {
            let shift = (o - reg::DRIVER_FEATURES) * 8;
            let new = (*features & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
            *features = new & abi::FEATURES_ALL;
            Some(Action::DriverFeatures(*features))
        }
        reg::RESET if v == abi::RESET_VALUE => Some(Action::Reset),
        reg::EVENT_VECTOR => {
            if v < abi::MSIX_VECTORS || v == abi::NO_VECTOR {
                Some(Action::EventVector(v))
            } else {
                warn!(device, vector = v, "refused out-of-range event vector");
                None
            }
        }
        o => {
            if let Some((q, field)) = queue_block(o) {
                return Some(match (field, v & 1) {
                    (qreg::ENABLE, 1) => Action::EnableQueue(q),
                    (qreg::ENABLE, _) => Action::DisableQueue(q),
                    _ => Action::QueueReg { q, field, value: v },
                });
            }
            doorbell(o).map(|q| Action::Doorbell { q, tail: v })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Regs {
        queues: Vec<QueueShared>,
        intr: Cell<u32>,
    }

    impl RegisterSource for Regs {
        fn status(&self) -> (u32, u32) {
            (abi::STATUS_FATAL, abi::FATAL_BACKEND_AUTH)
        }
        fn driver_features(&self) -> u64 {
            abi::FEATURE_ASYNC
        }
        fn event_vector(&self) -> u32 {
            7
        }
        fn take_intr_status(&self) -> u32 {
            self.intr.take()
        }
        fn gpu_info(&self) -> GpuInfo {
            GpuInfo {
                total_mem: 0x1_0000_0002,
                name: "A".repeat(100),
                uuid: [9; 16],
                ..GpuInfo::default()
            }
        }
        fn memory_quota(&self) -> u64 {
            3 << 32
        }
        fn queue(&self, q: usize) -> Option<&QueueShared> {
            self.queues.get(q)
        }
    }

    fn regs() -> Regs {
        Regs {
            queues: (0..abi::MAX_QUEUES).map(QueueShared::new).collect(),
            intr: Cell::new(0),
        }
    }

    fn rd(s: &Regs, off: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        read(s, off, &mut b);
        b
    }

    #[test]
    fn reads_compose_words_and_out_of_range_reads_all_ones() {
        let s = regs();
        assert_eq!(rd(&s, reg::MAGIC, 4), b"NGPU");
        assert_eq!(rd(&s, reg::MAGIC + 1, 2), b"GP");
        assert_eq!(
            rd(&s, reg::GPU_TOTAL_MEM, 8),
            0x1_0000_0002u64.to_le_bytes()
        );
        assert_eq!(rd(&s, reg::MEMORY_QUOTA + 4, 4), 3u32.to_le_bytes());
        let name = rd(&s, reg::GPU_NAME, 64);
        assert_eq!(&name[..63], "A".repeat(63).as_bytes());
        assert_eq!(name[63], 0, "the name is always NUL-terminated");
        assert_eq!(rd(&s, abi::REGS_BAR_SIZE - 2, 4), vec![0xff; 4]);
        assert_eq!(rd(&s, u64::MAX - 1, 4), vec![0xff; 4], "no overflow");
        assert_eq!(
            rd(
                &s,
                reg::QUEUE_REGS_BASE + 63 * reg::QUEUE_REGS_STRIDE + qreg::MSIX_VECTOR,
                4
            ),
            64u32.to_le_bytes(),
            "queue 63 defaults to vector 64"
        );
        assert_eq!(
            rd(&s, reg::DOORBELL_BASE, 4),
            [0; 4],
            "doorbells are write-only"
        );
    }

    #[test]
    fn intr_status_is_read_to_clear() {
        let s = regs();
        s.intr.set(abi::intr_queue_bit(40) | abi::INTR_DEVICE_EVENT);
        let v = u32::from_le_bytes(rd(&s, reg::INTR_STATUS, 4).try_into().unwrap());
        assert_eq!(v, (1 << 30) | (1 << 31));
        assert_eq!(rd(&s, reg::INTR_STATUS, 4), [0; 4]);
    }

    #[test]
    fn writes_become_actions_and_nothing_else() {
        let w = |off: u64, data: &[u8]| write("t", 0, off, data);
        assert_eq!(w(reg::RESET, &1u32.to_le_bytes()), vec![Action::Reset]);
        assert_eq!(w(reg::RESET, &2u32.to_le_bytes()), vec![]);
        assert_eq!(w(reg::RESET, &[1]), vec![], "odd size refused");
        assert_eq!(
            w(reg::RESET + 2, &[1, 0, 0, 0]),
            vec![],
            "unaligned refused"
        );
        assert_eq!(
            w(reg::DRIVER_FEATURES, &u64::MAX.to_le_bytes()),
            vec![
                Action::DriverFeatures(abi::FEATURES_ALL & 0xffff_ffff),
                Action::DriverFeatures(abi::FEATURES_ALL),
            ],
            "bits not offered are dropped"
        );
        assert_eq!(w(reg::EVENT_VECTOR, &5000u32.to_le_bytes()), vec![]);
        let q5 = reg::QUEUE_REGS_BASE + 5 * reg::QUEUE_REGS_STRIDE;
        assert_eq!(
            w(q5 + qreg::ENABLE, &1u32.to_le_bytes()),
            vec![Action::EnableQueue(5)]
        );
        assert_eq!(
            w(q5 + qreg::ENABLE, &0u32.to_le_bytes()),
            vec![Action::DisableQueue(5)]
        );
        assert_eq!(
            w(q5 + qreg::SQ_BASE, &0x1234_5000u64.to_le_bytes()),
            vec![
                Action::QueueReg {
                    q: 5,
                    field: qreg::SQ_BASE,
                    value: 0x1234_5000
                },
                Action::QueueReg {
                    q: 5,
                    field: qreg::SQ_BASE + 4,
                    value: 0
                }
            ]
        );
        let db63 = reg::DOORBELL_BASE + 63 * reg::DOORBELL_STRIDE;
        assert_eq!(
            w(db63, &7u32.to_le_bytes()),
            vec![Action::Doorbell { q: 63, tail: 7 }]
        );
        assert_eq!(
            w(db63 + 4, &7u32.to_le_bytes()),
            vec![],
            "the doorbell's upper half"
        );
        assert_eq!(w(reg::MAGIC, &0u32.to_le_bytes()), vec![], "read-only");
    }
}
