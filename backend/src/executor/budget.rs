//! Device memory shared by several sessions: an executor's total, or one tenant's quota
//! (`crate::tenant`). A session's allocation is charged to its own quota and to every pool
//! above it, and refused if any is full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Memory shared by several sessions, with a cap.
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

    /// Takes `bytes` if they fit.
    pub fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.total)
            })
            .is_ok()
    }

    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}
