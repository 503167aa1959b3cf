//! One block's state and its scheduler: threads run until they wait at a collective, exit
//! or yield; then every collective whose threads have all arrived is completed.
//!
//! Block barriers (`bar.sync`, `bar.red`, `bar.arrive`, 16 of them, with optional thread
//! counts) complete when the threads they wait for have arrived at any barrier instruction
//! of that number. A warp collective with member mask `M` completes when every live lane
//! of `M` waits at the same instruction with the same mask (`bar.warp.sync`: at any
//! `bar.warp.sync` with that mask); `activemask` completes once no lane of its warp can
//! run, over the lanes waiting at it.

use crate::error::LaunchError;
use crate::ir::*;
use crate::num;

use std::cell::RefCell;

use super::{Ctx, Record};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum St {
    Run,
    Wait,
    Exited,
}

/// One block's state, reused for every block a worker runs.
pub(super) struct Block {
    pub done: bool,
    pub(super) nthreads: usize,
    pub(super) nregs: usize,
    pub(super) regs: Vec<u64>,
    pub(super) pc: Vec<u32>,
    pub(super) state: Vec<St>,
    pub(super) shared: Vec<u8>,
    pub(super) local: Vec<u8>,
    pub(super) ctaid: [u32; 3],
    pub(super) id: u64,
    pub(super) worker: usize,
    /// The last allocations touched (kernels alternate between a few buffers).
    pub(super) cache: [(u64, u64, *mut u8); 4],
    pub(super) cache_next: usize,
    /// Thread-instructions executed by this block object, and the part already counted in
    /// the launch's total.
    pub(super) executed: u64,
    flushed: u64,
    /// `bar.arrive` arrivals not yet matched, per barrier.
    pub(super) arrived: [u32; 16],
    /// Block-wide barriers passed (orders console output).
    pub(super) epoch: u32,
    /// Per thread: printf calls since the last block-wide barrier.
    pub(super) pseq: Vec<u32>,
    pub(super) records: Vec<Record>,
    /// A thread yielded in `nanosleep` this round.
    pub(super) slept: bool,
}

pub(super) fn val(r: &[u64], s: Src, globals: &[u64]) -> u64 {
    match s {
        Src::R(i) => r[i as usize],
        Src::I(v) => v,
        Src::Global(i, o) => globals[i as usize].wrapping_add(o as u64),
    }
}

/// Most bytes of block buffers a thread keeps for its next launch.
const SPARE_LIMIT: usize = 1 << 20;

thread_local! {
    /// The block each thread keeps between launches, buffers and all: a launch of a small
    /// kernel then allocates, moves and frees nothing for its blocks (its worker runs its
    /// blocks in this one, see [`with_block`]).
    static RESIDENT: RefCell<Option<Block>> = const { RefCell::new(None) };
}

/// Runs `f` with a block shaped for `nthreads` threads, `shared` bytes of shared memory and
/// reset to block `id`: this thread's resident block, or a new one when that is in use (or
/// the thread is exiting). A resident block that grew beyond [`SPARE_LIMIT`] is freed after.
pub(super) fn with_block<R>(
    ctx: &Ctx,
    nthreads: usize,
    shared: usize,
    worker: usize,
    id: u64,
    mut f: impl FnMut(&mut Block) -> R,
) -> R {
    let resident = RESIDENT.try_with(|slot| {
        let mut slot = slot.try_borrow_mut().ok()?;
        let b = slot.get_or_insert_with(Block::empty);
        b.shape(ctx, nthreads, shared, worker, id);
        let r = f(b);
        if b.bytes() > SPARE_LIMIT {
            // Its drop finds the slot borrowed and frees the buffers.
            *slot = None;
        }
        Some(r)
    });
    match resident {
        Ok(Some(r)) => r,
        _ => f(&mut Block::new(ctx, nthreads, shared, worker, id)),
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.bytes() > SPARE_LIMIT {
            return;
        }
        // Keep the buffers as the thread's resident block if it has none (a cooperative
        // launch's blocks, or a block made while the resident one was in use); `try_with`:
        // nothing is kept while the thread is exiting.
        let _ = RESIDENT.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                if slot.is_none() {
                    let mut b = Block::empty();
                    std::mem::swap(&mut b.regs, &mut self.regs);
                    std::mem::swap(&mut b.pc, &mut self.pc);
                    std::mem::swap(&mut b.state, &mut self.state);
                    std::mem::swap(&mut b.shared, &mut self.shared);
                    std::mem::swap(&mut b.local, &mut self.local);
                    std::mem::swap(&mut b.pseq, &mut self.pseq);
                    std::mem::swap(&mut b.records, &mut self.records);
                    b.records.clear();
                    *slot = Some(b);
                }
            }
        });
    }
}

impl Block {
    /// A block with no buffers (shaped for a launch by [`Block::shape`]).
    const fn empty() -> Block {
        Block {
            done: false,
            nthreads: 0,
            nregs: 0,
            regs: Vec::new(),
            pc: Vec::new(),
            state: Vec::new(),
            shared: Vec::new(),
            local: Vec::new(),
            ctaid: [0; 3],
            id: 0,
            worker: 0,
            cache: [(0, 0, std::ptr::null_mut()); 4],
            cache_next: 0,
            executed: 0,
            flushed: 0,
            arrived: [0; 16],
            epoch: 0,
            pseq: Vec::new(),
            records: Vec::new(),
            slept: false,
        }
    }

    /// Bytes of buffers the block holds.
    fn bytes(&self) -> usize {
        self.regs.capacity() * 8
            + self.pc.capacity() * 4
            + self.state.capacity() * std::mem::size_of::<St>()
            + self.shared.capacity()
            + self.local.capacity()
            + self.pseq.capacity() * 4
            + self.records.capacity() * std::mem::size_of::<Record>()
    }

    /// A block for a launch of `ctx`, reset to block `id` (with this thread's resident
    /// block's buffers when it is free).
    pub(super) fn new(ctx: &Ctx, nthreads: usize, shared: usize, worker: usize, id: u64) -> Block {
        let mut b = RESIDENT
            .try_with(|slot| slot.try_borrow_mut().ok().and_then(|mut s| s.take()))
            .ok()
            .flatten()
            .unwrap_or_else(Block::empty);
        b.shape(ctx, nthreads, shared, worker, id);
        b
    }

    /// Sizes the buffers for a launch of `ctx` (zeroed by `reset`), forgets everything of
    /// the previous launch and resets the block to block `id`.
    fn shape(&mut self, ctx: &Ctx, nthreads: usize, shared: usize, worker: usize, id: u64) {
        let nregs = ctx.k.nregs as usize;
        self.nthreads = nthreads;
        self.nregs = nregs;
        self.regs.resize(nregs * nthreads, 0);
        self.pc.resize(nthreads, 0);
        self.state.resize(nthreads, St::Run);
        self.shared.resize(shared, 0);
        self.local.resize(ctx.k.local_size as usize * nthreads, 0);
        self.pseq.resize(nthreads, 0);
        self.worker = worker;
        self.cache = [(0, 0, std::ptr::null_mut()); 4];
        self.cache_next = 0;
        self.executed = 0;
        self.flushed = 0;
        self.slept = false;
        self.reset(ctx, id);
    }

    pub(super) fn reset(&mut self, ctx: &Ctx, id: u64) {
        let [gx, gy, _] = ctx.cfg.grid.map(u64::from);
        self.id = id;
        self.ctaid = if id < gx {
            // The first row (all of a one-dimensional grid): no divisions.
            [id as u32, 0, 0]
        } else {
            [
                (id % gx) as u32,
                ((id / gx) % gy) as u32,
                (id / (gx * gy)) as u32,
            ]
        };
        self.done = false;
        self.regs.fill(0);
        self.pc.fill(0);
        self.state.fill(St::Run);
        self.shared.fill(0);
        self.local.fill(0);
        self.arrived = [0; 16];
        self.epoch = 0;
        self.pseq.fill(0);
        self.records.clear();
    }

    /// Counts this block's instructions into the launch's total and checks whether the
    /// launch must stop.
    pub(super) fn check(&mut self, ctx: &Ctx) -> Result<(), LaunchError> {
        let delta = self.executed - self.flushed;
        self.flushed = self.executed;
        ctx.check(delta)
    }

    /// Hands this block's console records to the launch.
    pub(super) fn finish(&mut self, ctx: &Ctx) {
        let delta = self.executed - self.flushed;
        self.flushed = self.executed;
        ctx.executed
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        if !self.records.is_empty() {
            let mut r = ctx.records.lock().unwrap_or_else(|p| p.into_inner());
            r.append(&mut self.records);
        }
    }

    pub(super) fn run(&mut self, ctx: &Ctx) -> Result<(), LaunchError> {
        while !self.done {
            self.round(ctx)?;
        }
        Ok(())
    }

    /// Runs every runnable thread once (to a collective, its exit or the end of its slice),
    /// then completes the collectives that can be.
    pub(super) fn round(&mut self, ctx: &Ctx) -> Result<(), LaunchError> {
        self.check(ctx)?;
        let mut ran = false;
        self.slept = false;
        for t in 0..self.nthreads {
            if self.state[t] == St::Run {
                self.thread(ctx, t)?;
                ran = true;
                if self.state[t] == St::Run {
                    // Preempted: a long-running thread; see whether the launch must stop.
                    self.check(ctx)?;
                }
            }
        }
        if self.state.iter().all(|s| *s == St::Exited) {
            self.done = true;
            return Ok(());
        }
        let resolved = self.collectives(ctx)?;
        if !resolved && !ran {
            return Err(LaunchError::BarrierDeadlock { block: self.ctaid });
        }
        if self.slept && !resolved {
            // Every runnable thread is polling: let other blocks' workers run.
            std::thread::yield_now();
        }
        Ok(())
    }

    fn src(&self, ctx: &Ctx, t: usize, s: Src) -> u64 {
        val(
            &self.regs[t * self.nregs..(t + 1) * self.nregs],
            s,
            ctx.globals,
        )
    }

    fn set(&mut self, t: usize, d: u32, v: u64) {
        self.regs[t * self.nregs + d as usize] = v;
    }

    fn release(&mut self, t: usize) {
        self.state[t] = St::Run;
        self.pc[t] += 1;
    }

    /// Completes every collective whose threads have all arrived.
    fn collectives(&mut self, ctx: &Ctx) -> Result<bool, LaunchError> {
        let mut any = self.warps(ctx);
        any |= self.barriers(ctx);
        Ok(any)
    }

    fn barriers(&mut self, ctx: &Ctx) -> bool {
        let code = &ctx.k.code;
        let mut waiting = [0u32; 16];
        let mut count: [Option<u32>; 16] = [None; 16];
        let mut live = 0u32;
        for t in 0..self.nthreads {
            match self.state[t] {
                St::Exited => continue,
                St::Wait => {
                    if let Op::Bar { id, count: c, .. } = code[self.pc[t] as usize].op {
                        let b = (self.src(ctx, t, id) & 15) as usize;
                        waiting[b] += 1;
                        if let Some(c) = c {
                            count[b] = Some(self.src(ctx, t, c) as u32);
                        }
                    }
                }
                St::Run => {}
            }
            live += 1;
        }
        let mut any = false;
        for b in 0..16 {
            if waiting[b] == 0 {
                continue;
            }
            let expected = count[b].unwrap_or(live);
            if waiting[b] + self.arrived[b] < expected {
                continue;
            }
            self.arrived[b] = self.arrived[b].saturating_sub(expected.saturating_sub(waiting[b]));
            // Reductions (bar.red) over the waiting threads.
            let (mut pop, mut all, mut some) = (0u64, true, false);
            let members: Vec<usize> = (0..self.nthreads)
                .filter(|&t| {
                    self.state[t] == St::Wait
                        && matches!(code[self.pc[t] as usize].op, Op::Bar { id, .. } if (self.src(ctx, t, id) & 15) as usize == b)
                })
                .collect();
            for &t in &members {
                if let Op::Bar { a, neg, .. } = code[self.pc[t] as usize].op {
                    let p = (self.src(ctx, t, a) != 0) != neg;
                    pop += u64::from(p);
                    all &= p;
                    some |= p;
                }
            }
            for &t in &members {
                if let Op::Bar {
                    kind, d: Some(d), ..
                } = code[self.pc[t] as usize].op
                {
                    let v = match kind {
                        BarKind::RedPopc => pop,
                        BarKind::RedAnd => u64::from(all),
                        _ => u64::from(some),
                    };
                    self.set(t, d, v);
                }
                self.release(t);
            }
            if count[b].is_none() {
                self.epoch += 1;
                self.pseq.fill(0);
            }
            any = true;
        }
        any
    }

    fn warps(&mut self, ctx: &Ctx) -> bool {
        let code = &ctx.k.code;
        let mut any = false;
        for w in 0..self.nthreads.div_ceil(32) {
            let base = w * 32;
            let end = (base + 32).min(self.nthreads);
            let mut live = 0u32;
            let mut running = false;
            // (pc, mask) of each waiting lane at a warp collective.
            let mut wait: [Option<(u32, u32)>; 32] = [None; 32];
            for t in base..end {
                let l = t - base;
                match self.state[t] {
                    St::Exited => continue,
                    St::Run => running = true,
                    St::Wait => {
                        let pc = self.pc[t];
                        if let Op::Warp { mask, kind, .. } = code[pc as usize].op {
                            let m = if kind == WarpKind::Activemask {
                                0
                            } else {
                                (self.src(ctx, t, mask) as u32) | (1 << l)
                            };
                            wait[l] = Some((pc, m));
                        }
                    }
                }
                live |= 1 << l;
            }
            let mut done = 0u32;
            for l in 0..32 {
                let Some((pc, m)) = wait[l] else { continue };
                if done & (1 << l) != 0 {
                    continue;
                }
                let kind = match code[pc as usize].op {
                    Op::Warp { kind, .. } => kind,
                    _ => continue,
                };
                // The lanes that take part with this one.
                let mut group = 0u32;
                for (k, wk) in wait.iter().enumerate() {
                    match (kind, wk) {
                        (WarpKind::Sync, Some((p2, m2)))
                            if *m2 == m
                                && matches!(
                                    code[*p2 as usize].op,
                                    Op::Warp {
                                        kind: WarpKind::Sync,
                                        ..
                                    }
                                ) =>
                        {
                            group |= 1 << k
                        }
                        (_, Some((p2, m2))) if *p2 == pc && *m2 == m => group |= 1 << k,
                        _ => {}
                    }
                }
                let ready = if kind == WarpKind::Activemask {
                    !running
                } else {
                    (m & live) & !group == 0
                };
                if !ready {
                    continue;
                }
                done |= group;
                self.warp_op(ctx, base, group);
                any = true;
            }
        }
        any
    }

    /// Executes the warp collective the lanes of `group` (bits relative to `base`) wait at.
    fn warp_op(&mut self, ctx: &Ctx, base: usize, group: u32) {
        let lanes = || (0..32usize).filter(move |l| group & (1 << l) != 0);
        let Some(first) = lanes().next() else { return };
        let pc = self.pc[base + first] as usize;
        let Op::Warp {
            kind,
            d,
            d2,
            a,
            b,
            c,
            ..
        } = ctx.k.code[pc].op
        else {
            return;
        };
        let mut av = [0u64; 32];
        for l in lanes() {
            av[l] = self.src(ctx, base + l, a);
        }
        match kind {
            WarpKind::Shfl(mode) => {
                let mut out = [(0u64, false); 32];
                for l in lanes() {
                    let t = base + l;
                    let lane = l as u32;
                    let bval = (self.src(ctx, t, b) & 31) as u32;
                    let cval = self.src(ctx, t, c) as u32;
                    let segmask = (cval >> 8) & 31;
                    let maxlane = (lane & segmask) | (cval & 31 & !segmask);
                    let minlane = lane & segmask;
                    let (j, ok) = match mode {
                        ShflMode::Up => {
                            let j = lane as i32 - bval as i32;
                            (j.max(0) as u32, j >= maxlane as i32)
                        }
                        ShflMode::Down => (lane + bval, lane + bval <= maxlane),
                        ShflMode::Bfly => (lane ^ bval, (lane ^ bval) <= maxlane),
                        ShflMode::Idx => {
                            let j = minlane | (bval & !segmask);
                            (j, j <= maxlane)
                        }
                    };
                    let ok = ok && j < 32;
                    let v = if ok && group & (1 << j) != 0 {
                        av[j as usize]
                    } else {
                        av[l]
                    };
                    out[l] = (v & 0xffff_ffff, ok);
                }
                for l in lanes() {
                    if let Some(d) = d {
                        self.set(base + l, d, out[l].0);
                    }
                    if let Some(p) = d2 {
                        self.set(base + l, p, u64::from(out[l].1));
                    }
                }
            }
            WarpKind::Vote(mode, neg) => {
                let mut ballot = 0u32;
                for l in lanes() {
                    if (av[l] != 0) != neg {
                        ballot |= 1 << l;
                    }
                }
                let r = match mode {
                    VoteMode::Ballot => u64::from(ballot),
                    VoteMode::All => u64::from(ballot == group),
                    VoteMode::Any => u64::from(ballot != 0),
                    VoteMode::Uni => u64::from(ballot == 0 || ballot == group),
                };
                for l in lanes() {
                    if let Some(d) = d {
                        self.set(base + l, d, r);
                    }
                }
            }
            WarpKind::Match { all, bits } => {
                let m = num::mask(bits);
                let same = |v: u64| {
                    lanes()
                        .filter(|&k| av[k] & m == v & m)
                        .fold(0u32, |acc, k| acc | 1 << k)
                };
                let equal = lanes().all(|k| av[k] & m == av[first] & m);
                for l in lanes() {
                    let r = if all {
                        if equal {
                            group
                        } else {
                            0
                        }
                    } else {
                        same(av[l])
                    };
                    if let Some(d) = d {
                        self.set(base + l, d, u64::from(r));
                    }
                    if let Some(p) = d2 {
                        self.set(base + l, p, u64::from(equal));
                    }
                }
            }
            WarpKind::Redux(op, ty) => {
                let r = num::redux(op, ty, lanes().map(|l| av[l]));
                for l in lanes() {
                    if let Some(d) = d {
                        self.set(base + l, d, r);
                    }
                }
            }
            WarpKind::Activemask => {
                for l in lanes() {
                    if let Some(d) = d {
                        self.set(base + l, d, u64::from(group));
                    }
                }
            }
            WarpKind::Sync => {}
        }
        for l in lanes() {
            self.release(base + l);
        }
    }
}
