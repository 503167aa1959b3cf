//! Counters of what the transports did, for benchmarks and diagnostics: how many times a call
//! waited for the GPU (round trips) and how many requests went without waiting (posted).
//! `netgpu_stats` (a netgpu extension, not part of the CUDA driver API) reads them.

use std::sync::atomic::{AtomicU64, Ordering};

static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);
static POSTED: AtomicU64 = AtomicU64::new(0);

/// A caller waited for the GPU's answer (a TCP request and its reply; a blocking ioctl).
pub fn round_trip() {
    ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
}

/// A request went out without anyone waiting for it.
pub fn posted() {
    POSTED.fetch_add(1, Ordering::Relaxed);
}

/// `[round trips, posted requests]` so far.
pub fn snapshot() -> [u64; 2] {
    [
        ROUND_TRIPS.load(Ordering::Relaxed),
        POSTED.load(Ordering::Relaxed),
    ]
}

/// Writes up to `n` counters (`[0]` round trips, `[1]` posted requests) to `out`; returns
/// how many counters exist. Find it with `dlsym(RTLD_DEFAULT, "netgpu_stats")`: a program
/// that does not is unaffected.
///
/// # Safety
/// `out` must be NULL or valid for writing `n` `u64`s.
#[no_mangle]
pub unsafe extern "C" fn netgpu_stats(out: *mut u64, n: usize) -> usize {
    let s = snapshot();
    if !out.is_null() {
        for (i, v) in s.iter().take(n).enumerate() {
            // SAFETY: `i < n`, within the caller's buffer.
            unsafe { out.add(i).write(*v) };
        }
    }
    s.len()
}
