//! Protocol-2 operations a backend may not implement yet (it answers `NOT_SUPPORTED`):
//! the first use of each is a synchronous call that finds out; after that the operation is
//! posted like any stream-ordered work, or the caller's fallback is used for good.

use std::sync::atomic::{AtomicU8, Ordering};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::Request;

use crate::state;

#[derive(Clone, Copy, Debug)]
pub enum Op {
    Memcpy3D,
    StreamWaitEvent,
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

static SUPPORT: [AtomicU8; 2] = [AtomicU8::new(UNKNOWN), AtomicU8::new(UNKNOWN)];

fn slot(op: Op) -> &'static AtomicU8 {
    &SUPPORT[op as usize]
}

/// Whether the backend is known to lack `op`.
pub fn lacking(op: Op) -> bool {
    slot(op).load(Ordering::Relaxed) == NO
}

/// Sends `req` (with `data`; reply data into `out`): posted when `post` and the backend is
/// known to have the operation, else as a call. `Ok(false)`: the backend lacks it, nothing was
/// done, and the caller falls back.
pub fn send(
    op: Op,
    req: &Request,
    data: &[u8],
    out: &mut [u8],
    post: bool,
) -> Result<bool, CuResult> {
    let drv = state::driver()?;
    match slot(op).load(Ordering::Relaxed) {
        NO => Ok(false),
        YES if post && out.is_empty() => drv.transport.post(req, data).map(|_| true),
        known => match drv.transport.call(req, data, out) {
            Ok(_) => {
                slot(op).store(YES, Ordering::Relaxed);
                Ok(true)
            }
            Err(CuResult::NOT_SUPPORTED) if known == UNKNOWN => {
                slot(op).store(NO, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        },
    }
}
