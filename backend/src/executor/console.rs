//! A session's kernel console: device-side `printf` output waiting for the client.
//!
//! Kernels append their output when they finish; every reply the session writes while output
//! is waiting carries `FLAG_CONSOLE_PENDING`, and the client takes it with `ConsoleRead`. The
//! buffer holds at most [`CONSOLE_LIMIT`] bytes, like the driver's fixed-size printf FIFO:
//! output beyond it is dropped and a note saying how much was lost takes its place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most bytes of output a session keeps unread (CUDA's default printf FIFO is 1 MiB too).
pub const CONSOLE_LIMIT: usize = 1 << 20;

#[derive(Default)]
struct Inner {
    buf: VecDeque<u8>,
    dropped: u64,
}

#[derive(Default)]
pub struct Console {
    inner: Mutex<Inner>,
    len: AtomicUsize,
}

impl Console {
    pub fn new() -> Console {
        Console::default()
    }

    /// Appends one launch's output.
    pub fn push(&self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = CONSOLE_LIMIT.saturating_sub(i.buf.len());
        let take = out.len().min(room);
        i.buf.extend(&out[..take]);
        i.dropped += (out.len() - take) as u64;
        self.len.store(i.buf.len(), Ordering::Release);
    }

    /// Counts output a launch dropped itself (past its own limit).
    pub fn dropped(&self, bytes: u64) {
        if bytes > 0 {
            self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped += bytes;
            // A note is waiting now too.
            self.len.fetch_max(1, Ordering::AcqRel);
        }
    }

    /// Whether output is waiting (cheap; checked for every reply).
    pub fn pending(&self) -> bool {
        self.len.load(Ordering::Acquire) != 0
    }

    /// Takes up to `max` bytes of waiting output.
    pub fn take(&self, max: usize) -> Vec<u8> {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if i.dropped > 0 && i.buf.len() < CONSOLE_LIMIT {
            let note = format!(
                "\n[netgpu: {} bytes of kernel printf output dropped: more than {} KiB waited unread]\n",
                i.dropped,
                CONSOLE_LIMIT >> 10
            );
            i.buf.extend(note.as_bytes());
            i.dropped = 0;
        }
        let n = max.min(i.buf.len());
        let out: Vec<u8> = i.buf.drain(..n).collect();
        self.len.store(i.buf.len(), Ordering::Release);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_taken_in_order_and_in_pieces() {
        let c = Console::new();
        assert!(!c.pending());
        c.push(b"hello ");
        c.push(b"world");
        assert!(c.pending());
        assert_eq!(c.take(6), b"hello ");
        assert_eq!(c.take(100), b"world");
        assert!(!c.pending());
    }

    #[test]
    fn overflow_is_dropped_with_a_note() {
        let c = Console::new();
        c.push(&vec![b'x'; CONSOLE_LIMIT]);
        c.push(b"lost");
        let all = c.take(usize::MAX);
        assert_eq!(all.len(), CONSOLE_LIMIT);
        let note = String::from_utf8(c.take(usize::MAX)).unwrap();
        assert!(note.contains("4 bytes"), "{note}");
        assert!(!c.pending());
    }
}
