//! Bounds on what parsing one image may cost: the backend parses what a guest sends, so every
//! count and every decompressed byte is capped before it is allocated.

use crate::error::{ImageError, Result};
use std::cell::Cell;

/// Caps applied while parsing. The defaults fit any image nvcc makes for a real program
/// (PyTorch's largest fatbin entries are tens of MiB) while keeping a hostile image's cost
/// bounded; a backend may lower them per session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes one compressed entry may decompress to.
    pub max_entry_bytes: u64,
    /// The most bytes all entries decompressed for one request may add up to.
    pub max_total_bytes: u64,
    /// The most entries one fatbin may have.
    pub max_entries: usize,
    /// The most parts (images) one request may have, counting those inside link
    /// containers, host objects and libraries.
    pub max_parts: usize,
    /// How deeply link containers (and libraries of objects) may nest.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_bytes: 256 << 20,
            max_total_bytes: 1 << 30,
            max_entries: 4096,
            max_parts: 4096,
            max_depth: 4,
        }
    }
}

/// What is left of [`Limits::max_total_bytes`] during one request.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) limits: Limits,
    left: Cell<u64>,
}

impl Budget {
    pub(crate) fn new(limits: &Limits) -> Self {
        Budget {
            limits: *limits,
            left: Cell::new(limits.max_total_bytes),
        }
    }

    /// Reserves `size` decompressed bytes for `what`, or says which limit it breaks.
    pub(crate) fn take(&self, what: &'static str, size: u64) -> Result<()> {
        if size > self.limits.max_entry_bytes {
            return Err(ImageError::TooLarge {
                what,
                size,
                limit: self.limits.max_entry_bytes,
            });
        }
        let left = self.left.get();
        if size > left {
            return Err(ImageError::TooLarge {
                what,
                size,
                limit: left,
            });
        }
        self.left.set(left - size);
        Ok(())
    }
}
