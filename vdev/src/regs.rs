//! The BAR0 register file (`docs/device-abi.md` section 2): device-wide registers, the
//! per-queue register blocks and the trapped doorbells.
//!
//! Reads of any size are composed from 32-bit words, so a guest may read bytes of the name
//! or a whole 64-bit register. Writes must be 4 or 8 bytes and naturally aligned; other
//! writes are refused with a warning (guest misbehaviour) and change nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use netgpu_proto::abi::{self, queue as qreg, reg};
use tracing::warn;

use crate::device::Shared;

/// What the caller must do after a register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Reset,
}

/// Reads the 32-bit word at `off` (4-byte aligned).
fn read32(s: &Shared, off: u64) -> u32 {
    match off {
        reg::MAGIC => abi::MAGIC,
        reg::VERSION => abi::ABI_VERSION,
        o if o == reg::DEVICE_FEATURES => abi::FEATURES_ALL as u32,
        o if o == reg::DEVICE_FEATURES + 4 => (abi::FEATURES_ALL >> 32) as u32,
        o if o == reg::DRIVER_FEATURES => s.driver_features.load(Ordering::Relaxed) as u32,
        o if o == reg::DRIVER_FEATURES + 4 => {
            (s.driver_features.load(Ordering::Relaxed) >> 32) as u32
        }
        reg::STATUS => s.status().0,
        reg::FATAL_REASON => s.status().1,
        reg::RESET => 0,
        reg::INTR_STATUS => std::mem::take(&mut s.irqs().intr_status),
        reg::MAX_QUEUES => abi::MAX_QUEUES,
        reg::MAX_QUEUE_SIZE => abi::MAX_QUEUE_SIZE,
        reg::MAX_SG_ENTRIES => abi::MAX_SG_ENTRIES,
        reg::MAX_TRANSFER => abi::MAX_TRANSFER,
        reg::EVENT_VECTOR => s.event_vector.load(Ordering::Relaxed),
        o if (reg::GPU_TOTAL_MEM..reg::END).contains(&o) => gpu_word(s, o),
        o if (reg::QUEUE_REGS_BASE
            ..reg::QUEUE_REGS_BASE + u64::from(abi::MAX_QUEUES) * reg::QUEUE_REGS_STRIDE)
            .contains(&o) =>
        {
            let rel = o - reg::QUEUE_REGS_BASE;
            let q = &s.queues[(rel / reg::QUEUE_REGS_STRIDE) as usize];
            q.read_reg(rel % reg::QUEUE_REGS_STRIDE)
        }
        _ => 0, // reserved, write-only doorbells
    }
}

fn gpu_word(s: &Shared, off: u64) -> u32 {
    let info = s.gpu_info();
    let quota = s.cfg.memory_quota;
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
pub fn read(s: &Shared, offset: u64, data: &mut [u8]) {
    if offset >= abi::REGS_BAR_SIZE || offset + data.len() as u64 > abi::REGS_BAR_SIZE {
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

/// Writes `data` at `offset` of BAR0.
pub fn write(s: &Arc<Shared>, offset: u64, data: &[u8]) -> Action {
    let ok_size = matches!(data.len(), 4 | 8) && offset % data.len() as u64 == 0;
    if !ok_size || offset.saturating_add(data.len() as u64) > abi::REGS_BAR_SIZE {
        warn!(
            device = %s.cfg.name,
            offset,
            len = data.len(),
            "refused unaligned or odd-sized register write"
        );
        return Action::None;
    }
    let mut action = Action::None;
    for (i, chunk) in data.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        if write32(s, offset + 4 * i as u64, v) == Action::Reset {
            action = Action::Reset;
        }
    }
    action
}

fn write32(s: &Arc<Shared>, off: u64, v: u32) -> Action {
    match off {
        o if o == reg::DRIVER_FEATURES || o == reg::DRIVER_FEATURES + 4 => {
            let shift = (o - reg::DRIVER_FEATURES) * 8;
            let old = s.driver_features.load(Ordering::Relaxed);
            let new = (old & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
            s.driver_features
                .store(new & abi::FEATURES_ALL, Ordering::Relaxed);
        }
        reg::RESET if v == abi::RESET_VALUE => return Action::Reset,
        reg::EVENT_VECTOR => {
            if v < abi::MSIX_VECTORS || v == abi::NO_VECTOR {
                s.event_vector.store(v, Ordering::Relaxed);
            } else {
                warn!(device = %s.cfg.name, vector = v, "refused out-of-range event vector");
            }
        }
        o if (reg::QUEUE_REGS_BASE
            ..reg::QUEUE_REGS_BASE + u64::from(abi::MAX_QUEUES) * reg::QUEUE_REGS_STRIDE)
            .contains(&o) =>
        {
            let rel = o - reg::QUEUE_REGS_BASE;
            let q = (rel / reg::QUEUE_REGS_STRIDE) as usize;
            let field = rel % reg::QUEUE_REGS_STRIDE;
            if field == qreg::ENABLE {
                if v & 1 != 0 {
                    crate::queue::enable(s, q);
                } else {
                    s.queues[q].disable();
                }
            } else {
                s.queues[q].write_reg(&s.cfg.name, field, v);
            }
        }
        o if (reg::DOORBELL_BASE
            ..reg::DOORBELL_BASE + u64::from(abi::MAX_QUEUES) * reg::DOORBELL_STRIDE)
            .contains(&o) =>
        {
            let rel = o - reg::DOORBELL_BASE;
            if rel % reg::DOORBELL_STRIDE == 0 {
                s.queues[(rel / reg::DOORBELL_STRIDE) as usize].ring(v);
            }
        }
        _ => {} // read-only or reserved
    }
    Action::None
}
