//! The completion ring of one queue: where the next completion goes, its phase tag, the
//! order completions are posted in, and when to interrupt (coalescing).
//!
//! With `FEATURE_OUT_OF_ORDER` a completion is written as soon as its command is done;
//! without it a completion that is ready early waits until every command submitted before
//! it has completed, so an old driver sees submission order.

use std::collections::BTreeMap;
use std::time::Duration;

use netgpu_proto::abi::{self, Completion};

use crate::memory::{self, Snapshot};

/// What to do about the interrupt after posting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Interrupt now.
    Now,
    /// Start a timer; interrupt when it fires ([`CompletionRing::timer_fired`]).
    Later(Duration),
    /// A timer is already running.
    Armed,
}

pub struct CompletionRing {
    base: u64,
    size: u32,
    tail: u32,
    phase: bool,
    out_of_order: bool,
    /// Submission sequence number of the next completion to post (in order).
    next_seq: u64,
    /// Completions ready before their turn (in order).
    held: BTreeMap<u64, Completion>,
    /// Posted completions not interrupted for yet.
    pending: u32,
    timer: bool,
}

impl CompletionRing {
    pub fn new(base: u64, size: u32, out_of_order: bool) -> Self {
        CompletionRing {
            base,
            size: size.max(1),
            tail: 0,
            phase: true,
            out_of_order,
            next_seq: 0,
            held: BTreeMap::new(),
            pending: 0,
            timer: false,
        }
    }

    pub fn tail(&self) -> u32 {
        self.tail
    }

    fn write(&mut self, mem: &Snapshot, mut c: Completion, sq_head: u16) -> memory::Result<()> {
        c.sq_head = sq_head;
        c.flags = (c.flags & !abi::CQE_FLAG_PHASE) | u16::from(self.phase);
        let at = self.base + u64::from(self.tail) * Completion::SIZE as u64;
        mem.write(at, &c.to_bytes())?;
        self.tail = (self.tail + 1) % self.size;
        if self.tail == 0 {
            self.phase = !self.phase;
        }
        Ok(())
    }

    /// Posts the completion of the command with submission sequence number `seq`; returns
    /// how many completions were written (0 if it waits for earlier ones).
    pub fn post(
        &mut self,
        mem: &Snapshot,
        seq: u64,
        c: Completion,
        sq_head: u16,
    ) -> memory::Result<u32> {
        if self.out_of_order {
            self.write(mem, c, sq_head)?;
            return Ok(1);
        }
        if seq == self.next_seq && self.held.is_empty() {
            // Its turn already: no bookkeeping.
            self.write(mem, c, sq_head)?;
            self.next_seq += 1;
            return Ok(1);
        }
        self.held.insert(seq, c);
        let mut n = 0;
        while let Some(c) = self.held.remove(&self.next_seq) {
            self.write(mem, c, sq_head)?;
            self.next_seq += 1;
            n += 1;
        }
        Ok(n)
    }

    /// Counts `n` newly posted completions against the coalescing registers.
    pub fn add_pending(&mut self, n: u32, usecs: u32, count: u32) -> Interrupt {
        self.pending = self.pending.saturating_add(n);
        if usecs == 0 || self.pending >= count.max(1) {
            self.pending = 0;
            return Interrupt::Now;
        }
        if self.timer {
            return Interrupt::Armed;
        }
        self.timer = true;
        Interrupt::Later(Duration::from_micros(u64::from(usecs)))
    }

    /// The coalescing timer fired: whether to interrupt.
    pub fn timer_fired(&mut self) -> bool {
        self.timer = false;
        self.take_pending()
    }

    /// Whether completions are waiting for an interrupt (and forgets them).
    pub fn take_pending(&mut self) -> bool {
        std::mem::take(&mut self.pending) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::memfd;
    use crate::memory::GuestMemory;

    fn mem() -> GuestMemory {
        let m = GuestMemory::new();
        m.map(0, 0x1000, 0, true, Some(memfd(0x1000))).unwrap();
        m
    }

    fn read(s: &Snapshot, slot: u64) -> Completion {
        let mut b = [0u8; Completion::SIZE];
        s.read(slot * Completion::SIZE as u64, &mut b).unwrap();
        Completion::from_bytes(&b)
    }

    fn cqe(cid: u32) -> Completion {
        Completion {
            cid,
            ..Completion::default()
        }
    }

    #[test]
    fn without_out_of_order_a_finished_command_waits_for_earlier_ones() {
        let m = mem();
        let s = m.snapshot();
        let mut cq = CompletionRing::new(0, 4, false);
        assert_eq!(cq.post(&s, 1, cqe(11), 2).unwrap(), 0, "waits for seq 0");
        assert_eq!(cq.post(&s, 2, cqe(12), 3).unwrap(), 0);
        assert_eq!(cq.post(&s, 0, cqe(10), 3).unwrap(), 3);
        let cids: Vec<u32> = (0..3).map(|i| read(&s, i).cid).collect();
        assert_eq!(cids, vec![10, 11, 12]);
        assert!(read(&s, 2).phase());
        assert_eq!(read(&s, 2).sq_head, 3);
    }

    #[test]
    fn out_of_order_posts_at_once_and_the_phase_flips_on_wrap() {
        let m = mem();
        let s = m.snapshot();
        let mut cq = CompletionRing::new(0, 2, true);
        assert_eq!(cq.post(&s, 5, cqe(5), 0).unwrap(), 1);
        assert_eq!(cq.post(&s, 3, cqe(3), 0).unwrap(), 1);
        assert_eq!(cq.tail(), 0);
        assert_eq!(cq.post(&s, 4, cqe(4), 0).unwrap(), 1);
        assert_eq!((read(&s, 0).cid, read(&s, 0).phase()), (4, false));
        assert_eq!((read(&s, 1).cid, read(&s, 1).phase()), (3, true));
    }

    #[test]
    fn coalescing_interrupts_by_count_or_after_the_window() {
        let mut cq = CompletionRing::new(0, 8, true);
        assert_eq!(cq.add_pending(1, 0, 0), Interrupt::Now);
        assert_eq!(
            cq.add_pending(1, 100, 3),
            Interrupt::Later(Duration::from_micros(100))
        );
        assert_eq!(cq.add_pending(1, 100, 3), Interrupt::Armed);
        assert_eq!(cq.add_pending(1, 100, 3), Interrupt::Now, "third one");
        assert!(!cq.timer_fired(), "nothing left when the window ends");
        assert_eq!(
            cq.add_pending(1, 100, 3),
            Interrupt::Later(Duration::from_micros(100))
        );
        assert!(cq.timer_fired());
    }

    #[test]
    fn an_unmapped_ring_is_an_error() {
        let m = mem();
        let s = m.snapshot();
        let mut cq = CompletionRing::new(0x2000, 4, true);
        assert!(cq.post(&s, 0, cqe(1), 0).is_err());
    }
}
