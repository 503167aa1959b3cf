//! Runs a decoded kernel.
//!
//! Blocks are independent and run in parallel on worker threads (one block at a time per
//! worker). Within a block, each thread runs on its own until it reaches a collective
//! instruction (`bar.sync`, `shfl.sync`, `vote.sync`) or exits; the block scheduler then
//! completes the collective once every thread it involves has arrived (all live threads of the
//! block for a barrier, of the warp for a shuffle or vote), and resumes them. Threads that
//! can never meet (a barrier some threads skip while others wait at a shuffle) are reported
//! as a deadlock instead of hanging.
//!
//! Memory: every global access is resolved through [`DeviceMemory`] (whole access inside one
//! allocation, naturally aligned), shared and local accesses are bounds-checked against the
//! block's and the thread's memory. Global memory is read and written with relaxed atomic
//! operations of the access width, so kernels that race (as GPU code may) stay well-defined
//! in Rust's memory model; on x86-64 these are plain loads and stores.

use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed,
};
use std::sync::Mutex;
use std::time::Instant;

use crate::decode::Kernel;
use crate::error::LaunchError;
use crate::ir::*;
use crate::num;
use crate::Module;

/// Generic addresses in these windows name shared or local memory (`cvta`); all others are
/// global. Both lie far above any device address an executor hands out.
pub const SHARED_WINDOW: u64 = 1 << 62;
pub const LOCAL_WINDOW: u64 = (1 << 62) + (1 << 48);
const WINDOW_SIZE: u64 = 1 << 40;

/// Most shared memory (static + dynamic) one block may use.
pub const MAX_SHARED_MEMORY: u32 = 227 * 1024;
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

/// Device memory as the executor owns it.
pub trait DeviceMemory: Sync {
    /// Host pointer for `[addr, addr+len)` if the whole range lies inside one allocation.
    fn resolve(&self, addr: u64, len: usize) -> Option<NonNull<u8>>;
    /// The allocation containing `addr`: (device base, length, host pointer to the base).
    /// Optional; lets the interpreter keep the last allocation and skip lookups.
    fn region(&self, _addr: u64) -> Option<(u64, usize, NonNull<u8>)> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
    /// Worker threads for blocks; 0 = one per core.
    pub threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Run,
    Wait,
    Exited,
}

/// Runs `kernel` over the whole grid. `globals[i]` is the device address of
/// `module.globals()[i]`.
pub fn launch(
    module: &Module,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    globals: &[u64],
    mem: &dyn DeviceMemory,
) -> Result<(), LaunchError> {
    launch_counted(module, kernel, cfg, params, globals, mem).map(|_| ())
}

/// As [`launch`], returning the number of thread-instructions executed (for benchmarks).
pub fn launch_counted(
    module: &Module,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    globals: &[u64],
    mem: &dyn DeviceMemory,
) -> Result<u64, LaunchError> {
    let bad = |m: String| Err(LaunchError::InvalidConfig(m));
    let nthreads = cfg.block.iter().map(|&d| u64::from(d)).product::<u64>();
    if cfg.block.contains(&0) || cfg.grid.contains(&0) {
        return bad("a grid or block dimension is 0".into());
    }
    if nthreads > u64::from(MAX_THREADS_PER_BLOCK) || cfg.block[2] > 64 {
        return bad(format!(
            "{nthreads} threads per block (at most {MAX_THREADS_PER_BLOCK})"
        ));
    }
    if cfg.grid[1] > 65_535 || cfg.grid[2] > 65_535 {
        return bad("grid y/z larger than 65535".into());
    }
    let shared = u64::from(kernel.shared_static) + u64::from(cfg.shared_mem_bytes);
    if shared > u64::from(MAX_SHARED_MEMORY) {
        return bad(format!(
            "{shared} bytes of shared memory (at most {MAX_SHARED_MEMORY})"
        ));
    }
    if params.len() < kernel.param_size as usize {
        return bad(format!(
            "parameter buffer of {} bytes, kernel {} needs {}",
            params.len(),
            kernel.name,
            kernel.param_size
        ));
    }
    if globals.len() != module.globals().len() {
        return bad("global variable addresses do not match the module".into());
    }
    let nblocks = cfg.grid.iter().map(|&d| u64::from(d)).product::<u64>();
    let workers = match cfg.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
    .min(usize::try_from(nblocks).unwrap_or(usize::MAX))
    .max(1);
    let shared_len = shared as usize;
    let ctx = Ctx {
        k: kernel,
        params,
        globals,
        mem,
        cfg,
        start: Instant::now(),
    };
    if workers == 1 {
        let mut b = Block::new(&ctx, nthreads as usize, shared_len);
        for id in 0..nblocks {
            b.run(&ctx, id)?;
        }
        return Ok(b.executed);
    }
    let executed = AtomicU64::new(0);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<LaunchError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut b = Block::new(&ctx, nthreads as usize, shared_len);
                loop {
                    let id = next.fetch_add(1, Relaxed) as u64;
                    if id >= nblocks || failed.load(Relaxed) {
                        break;
                    }
                    if let Err(e) = b.run(&ctx, id) {
                        failed.store(true, Relaxed);
                        let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(e);
                        break;
                    }
                }
                executed.fetch_add(b.executed, Relaxed);
            });
        }
    });
    match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(executed.into_inner()),
    }
}

struct Ctx<'a> {
    k: &'a Kernel,
    params: &'a [u8],
    globals: &'a [u64],
    mem: &'a dyn DeviceMemory,
    cfg: &'a LaunchConfig,
    start: Instant,
}

/// One block's state, reused for every block a worker runs.
struct Block {
    nthreads: usize,
    nregs: usize,
    regs: Vec<u64>,
    pc: Vec<u32>,
    state: Vec<St>,
    shared: Vec<u8>,
    local: Vec<u8>,
    ctaid: [u32; 3],
    /// The last allocations touched (kernels alternate between a few buffers).
    cache: [(u64, u64, *mut u8); 4],
    cache_next: usize,
    /// Thread-instructions executed so far.
    executed: u64,
}

fn val(r: &[u64], s: Src, globals: &[u64]) -> u64 {
    match s {
        Src::R(i) => r[i as usize],
        Src::I(v) => v,
        Src::Global(i, o) => globals[i as usize].wrapping_add(o as u64),
    }
}

impl Block {
    fn new(ctx: &Ctx, nthreads: usize, shared: usize) -> Block {
        let nregs = ctx.k.nregs as usize;
        Block {
            nthreads,
            nregs,
            regs: vec![0; nregs * nthreads],
            pc: vec![0; nthreads],
            state: vec![St::Run; nthreads],
            shared: vec![0; shared],
            local: vec![0; ctx.k.local_size as usize * nthreads],
            ctaid: [0; 3],
            cache: [(0, 0, std::ptr::null_mut()); 4],
            cache_next: 0,
            executed: 0,
        }
    }

    fn run(&mut self, ctx: &Ctx, id: u64) -> Result<(), LaunchError> {
        let [gx, gy, _] = ctx.cfg.grid.map(u64::from);
        self.ctaid = [
            (id % gx) as u32,
            ((id / gx) % gy) as u32,
            (id / (gx * gy)) as u32,
        ];
        self.regs.fill(0);
        self.pc.fill(0);
        self.state.fill(St::Run);
        self.shared.fill(0);
        self.local.fill(0);
        loop {
            let mut ran = false;
            for t in 0..self.nthreads {
                if self.state[t] == St::Run {
                    self.thread(ctx, t)?;
                    ran = true;
                }
            }
            if self.state.iter().all(|s| *s == St::Exited) {
                return Ok(());
            }
            let resolved = self.collectives(ctx)?;
            if !resolved && !ran {
                return Err(LaunchError::BarrierDeadlock { block: self.ctaid });
            }
        }
    }

    /// Completes every collective whose threads have all arrived.
    fn collectives(&mut self, ctx: &Ctx) -> Result<bool, LaunchError> {
        let code = &ctx.k.code;
        let waiting = |b: &Block, t: usize| b.state[t] == St::Wait;
        // Barrier: every live thread of the block waits at a bar.sync (no allocation: this
        // runs twice per tile of a tiled kernel).
        let mut any_live = false;
        let mut all_at_bar = true;
        for t in 0..self.nthreads {
            match self.state[t] {
                St::Exited => {}
                St::Wait if code[self.pc[t] as usize].op == Op::Bar => any_live = true,
                _ => {
                    all_at_bar = false;
                    break;
                }
            }
        }
        if any_live && all_at_bar {
            for t in 0..self.nthreads {
                if self.state[t] != St::Exited {
                    self.state[t] = St::Run;
                    self.pc[t] += 1;
                }
            }
            return Ok(true);
        }
        // Warp collectives: every live lane of a warp waits at the same shuffle or vote.
        let mut any = false;
        for w in 0..self.nthreads.div_ceil(32) {
            let lanes: Vec<usize> = (w * 32..((w + 1) * 32).min(self.nthreads))
                .filter(|&t| self.state[t] != St::Exited)
                .collect();
            if lanes.is_empty() || !lanes.iter().all(|&t| waiting(self, t)) {
                continue;
            }
            let pc = self.pc[lanes[0]] as usize;
            if lanes.iter().any(|&t| self.pc[t] as usize != pc) || code[pc].op == Op::Bar {
                continue;
            }
            self.warp_op(ctx, &code[pc].op, w, &lanes);
            for &t in &lanes {
                self.state[t] = St::Run;
                self.pc[t] += 1;
            }
            any = true;
        }
        Ok(any)
    }

    fn warp_op(&mut self, ctx: &Ctx, op: &Op, w: usize, lanes: &[usize]) {
        let nregs = self.nregs;
        let reg =
            |b: &Block, t: usize, s: Src| val(&b.regs[t * nregs..(t + 1) * nregs], s, ctx.globals);
        match *op {
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
            } => {
                let mut vals = [0u64; 32];
                let mut present = 0u32;
                for &t in lanes {
                    vals[t % 32] = reg(self, t, a);
                    present |= 1 << (t % 32);
                }
                let mut out = Vec::with_capacity(lanes.len());
                for &t in lanes {
                    let lane = (t % 32) as u32;
                    let bval = (reg(self, t, b) & 31) as u32;
                    let cval = reg(self, t, c) as u32;
                    let segmask = (cval >> 8) & 31;
                    let maxlane = (lane & segmask) | (cval & 31 & !segmask);
                    let minlane = lane & segmask;
                    let (j, ok) = match mode {
                        ShflMode::Up => (
                            lane.wrapping_sub(bval),
                            lane >= bval && lane.wrapping_sub(bval) >= maxlane,
                        ),
                        ShflMode::Down => (lane + bval, lane + bval <= maxlane),
                        ShflMode::Bfly => (lane ^ bval, (lane ^ bval) <= maxlane),
                        ShflMode::Idx => (
                            minlane | (bval & !segmask),
                            (minlane | (bval & !segmask)) <= maxlane,
                        ),
                    };
                    let ok = ok && j < 32 && present & (1 << j) != 0;
                    let v = if ok {
                        vals[j as usize]
                    } else {
                        vals[lane as usize]
                    };
                    out.push((t, v, ok));
                }
                for (t, v, ok) in out {
                    self.regs[t * nregs + d as usize] = v & 0xffff_ffff;
                    if let Some(p) = p {
                        self.regs[t * nregs + p as usize] = u64::from(ok);
                    }
                }
            }
            Op::Vote { mode, d, a, neg } => {
                let mut ballot = 0u32;
                for &t in lanes {
                    if (reg(self, t, a) != 0) != neg {
                        ballot |= 1 << (t % 32);
                    }
                }
                let members: u32 = lanes.iter().fold(0, |m, &t| m | 1 << (t % 32));
                let r = match mode {
                    VoteMode::Ballot => u64::from(ballot),
                    VoteMode::All => u64::from(ballot == members),
                    VoteMode::Any => u64::from(ballot != 0),
                    VoteMode::Uni => u64::from(ballot == 0 || ballot == members),
                };
                for &t in lanes {
                    self.regs[t * nregs + d as usize] = r;
                }
            }
            _ => {}
        }
        let _ = w;
    }

    /// Runs thread `t` until it exits or reaches a collective.
    fn thread(&mut self, ctx: &Ctx, t: usize) -> Result<(), LaunchError> {
        let code = &ctx.k.code[..];
        let g = ctx.globals;
        let nregs = self.nregs;
        let local_size = ctx.k.local_size as usize;
        let mut pc = self.pc[t] as usize;
        let [bx, by, _] = ctx.cfg.block;
        let tid = [
            (t as u32) % bx,
            ((t as u32) / bx) % by,
            (t as u32) / (bx * by),
        ];
        let start = self.executed;
        let mut count = 0u64;
        let result = loop {
            count += 1;
            let Some(inst) = code.get(pc) else {
                self.state[t] = St::Exited;
                break Ok(());
            };
            let r = &mut self.regs[t * nregs..(t + 1) * nregs];
            if let Some((p, neg)) = inst.guard {
                if (r[p as usize] != 0) == neg {
                    pc += 1;
                    continue;
                }
            }
            match inst.op {
                Op::Mov { d, a } => r[d as usize] = val(r, a, g),
                Op::Bin { op, ty, d, a, b } => {
                    r[d as usize] = num::bin(op, ty, val(r, a, g), val(r, b, g))
                }
                Op::Un { op, ty, d, a } => r[d as usize] = num::un(op, ty, val(r, a, g)),
                Op::Fma { ty, d, a, b, c } => {
                    r[d as usize] = num::fma(ty, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::MulWide { ty, d, a, b } => {
                    r[d as usize] = num::mul_wide(ty, val(r, a, g), val(r, b, g))
                }
                Op::Mad { ty, hi, d, a, b, c } => {
                    let m = num::bin(
                        if hi { BinOp::MulHi } else { BinOp::MulLo },
                        ty,
                        val(r, a, g),
                        val(r, b, g),
                    );
                    r[d as usize] = num::bin(BinOp::Add, ty, m, val(r, c, g));
                }
                Op::MadWide { ty, d, a, b, c } => {
                    let m = num::mul_wide(ty, val(r, a, g), val(r, b, g));
                    r[d as usize] = m.wrapping_add(val(r, c, g));
                }
                Op::Setp {
                    cmp,
                    ty,
                    d,
                    d2,
                    a,
                    b,
                    comb,
                } => {
                    let c = num::compare(cmp, ty, val(r, a, g), val(r, b, g));
                    let (p, q) = match comb {
                        None => (c, !c),
                        Some((bop, s, neg)) => {
                            let x = (val(r, s, g) != 0) != neg;
                            let f = |v: bool| match bop {
                                BoolOp::And => v && x,
                                BoolOp::Or => v || x,
                                BoolOp::Xor => v ^ x,
                            };
                            (f(c), f(!c))
                        }
                    };
                    r[d as usize] = u64::from(p);
                    if let Some(d2) = d2 {
                        r[d2 as usize] = u64::from(q);
                    }
                }
                Op::Selp { ty, d, a, b, c } => {
                    let v = if val(r, c, g) != 0 {
                        val(r, a, g)
                    } else {
                        val(r, b, g)
                    };
                    r[d as usize] = num::norm(v, ty);
                }
                Op::Cvt {
                    dty,
                    sty,
                    rnd,
                    sat,
                    d,
                    a,
                } => r[d as usize] = num::cvt(dty, sty, rnd, sat, val(r, a, g)),
                Op::Cvta {
                    space,
                    to_generic,
                    d,
                    a,
                } => {
                    let base = if space == Space::Shared {
                        SHARED_WINDOW
                    } else {
                        LOCAL_WINDOW
                    };
                    let v = val(r, a, g);
                    r[d as usize] = if to_generic {
                        v.wrapping_add(base)
                    } else {
                        v.wrapping_sub(base)
                    };
                }
                Op::Special { d, s } => {
                    let v = self.special(ctx, s, t, tid);
                    self.regs[t * nregs + d as usize] = v;
                }
                Op::Ld { ty, d, n, addr } => {
                    let a = self.address(&addr, t, nregs, g);
                    let size = ty.bytes();
                    for (k, dk) in d.iter().enumerate().take(usize::from(n)) {
                        let v = self.load(
                            ctx,
                            addr.space,
                            a.wrapping_add((k * size) as u64),
                            size,
                            n,
                            t,
                            local_size,
                            pc,
                        )?;
                        self.regs[t * nregs + *dk as usize] = num::load_ext(v, ty);
                    }
                }
                Op::St { ty, s, n, addr } => {
                    let a = self.address(&addr, t, nregs, g);
                    let size = ty.bytes();
                    for (k, src) in s.iter().enumerate().take(usize::from(n)) {
                        let v = val(&self.regs[t * nregs..(t + 1) * nregs], *src, g);
                        self.store(
                            ctx,
                            addr.space,
                            a.wrapping_add((k * size) as u64),
                            size,
                            n,
                            v,
                            t,
                            local_size,
                            pc,
                        )?;
                    }
                }
                Op::Atom {
                    op,
                    ty,
                    d,
                    addr,
                    b,
                    c,
                } => {
                    let a = self.address(&addr, t, nregs, g);
                    let (bv, cv) = {
                        let r = &self.regs[t * nregs..(t + 1) * nregs];
                        (val(r, b, g), val(r, c, g))
                    };
                    let old = self.atomic(ctx, addr.space, a, op, ty, bv, cv, t, local_size, pc)?;
                    if let Some(d) = d {
                        self.regs[t * nregs + d as usize] = old;
                    }
                }
                Op::Bfe { ty, d, a, b, c } => {
                    r[d as usize] = num::bfe(ty, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Bfi { ty, d, a, b, c, e } => {
                    r[d as usize] =
                        num::bfi(ty, val(r, a, g), val(r, b, g), val(r, c, g), val(r, e, g))
                }
                Op::Prmt { d, a, b, c } => {
                    r[d as usize] = num::prmt(val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Bra { target } => {
                    pc = target as usize;
                    continue;
                }
                Op::Bar | Op::Shfl { .. } | Op::Vote { .. } => {
                    self.pc[t] = pc as u32;
                    self.state[t] = St::Wait;
                    break Ok(());
                }
                Op::Exit => {
                    self.state[t] = St::Exited;
                    break Ok(());
                }
                Op::Trap => break Err(LaunchError::Trap { pc }),
                Op::Nop => {}
                Op::LdShared32 { d, base, off } => {
                    let a = r[base as usize].wrapping_add(off as u64);
                    let o = a as usize;
                    match self
                        .shared
                        .get(o..o.wrapping_add(4))
                        .filter(|_| a < 1 << 32)
                    {
                        Some(b) => {
                            r[d as usize] = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        }
                        None => {
                            return Err(LaunchError::IllegalAddress {
                                addr: SHARED_WINDOW.wrapping_add(a),
                                len: 4,
                                pc,
                            })
                        }
                    }
                }
                Op::StShared32 { s, base, off } => {
                    let a = r[base as usize].wrapping_add(off as u64);
                    let v = val(r, s, g) as u32;
                    let o = a as usize;
                    match self
                        .shared
                        .get_mut(o..o.wrapping_add(4))
                        .filter(|_| a < 1 << 32)
                    {
                        Some(b) => b.copy_from_slice(&v.to_le_bytes()),
                        None => {
                            return Err(LaunchError::IllegalAddress {
                                addr: SHARED_WINDOW.wrapping_add(a),
                                len: 4,
                                pc,
                            })
                        }
                    }
                }
                Op::FmaF32 { d, a, b, c } => {
                    let f = |v: u64| f32::from_bits(v as u32);
                    r[d as usize] = u64::from(
                        f(val(r, a, g))
                            .mul_add(f(val(r, b, g)), f(val(r, c, g)))
                            .to_bits(),
                    );
                }
                Op::AddI32 { d, a, b } => {
                    r[d as usize] = (val(r, a, g).wrapping_add(val(r, b, g))) & 0xffff_ffff
                }
                Op::AddI64 { d, a, b } => r[d as usize] = val(r, a, g).wrapping_add(val(r, b, g)),
            }
            pc += 1;
        };
        self.executed = start + count;
        result
    }

    fn special(&self, ctx: &Ctx, s: Special, t: usize, tid: [u32; 3]) -> u64 {
        let lane = (t % 32) as u32;
        let nwarps = self.nthreads.div_ceil(32) as u64;
        match s {
            Special::Tid(d) => tid[usize::from(d)].into(),
            Special::Ntid(d) => ctx.cfg.block[usize::from(d)].into(),
            Special::Ctaid(d) => self.ctaid[usize::from(d)].into(),
            Special::Nctaid(d) => ctx.cfg.grid[usize::from(d)].into(),
            Special::LaneId => lane.into(),
            Special::WarpId => (t / 32) as u64,
            Special::NWarpId => nwarps,
            Special::Clock => u64::from(ctx.start.elapsed().as_nanos() as u32),
            Special::Clock64 | Special::GlobalTimer => ctx.start.elapsed().as_nanos() as u64,
            Special::SmId => 0,
            Special::NSmId => 1,
            Special::LaneMaskEq => 1u64 << lane,
            Special::LaneMaskLt => (1u64 << lane) - 1,
            Special::LaneMaskLe => (1u64 << (lane + 1)) - 1,
            Special::LaneMaskGt => 0xffff_ffff & !((1u64 << (lane + 1)) - 1),
            Special::LaneMaskGe => 0xffff_ffff & !((1u64 << lane) - 1),
            Special::DynamicSmem => ctx.cfg.shared_mem_bytes.into(),
            Special::TotalSmem => self.shared.len() as u64,
        }
    }

    fn address(&self, a: &Addr, t: usize, nregs: usize, g: &[u64]) -> u64 {
        let mut v = a.offset as u64;
        if let Some(r) = a.base {
            v = v.wrapping_add(self.regs[t * nregs + r as usize]);
        }
        if let Some(i) = a.global {
            v = v.wrapping_add(g[i as usize]);
        }
        v
    }

    /// Resolves a generic address to its state space.
    fn classify(space: Space, a: u64) -> (Space, u64) {
        if space != Space::Generic {
            return (space, a);
        }
        if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) {
            (Space::Shared, a - SHARED_WINDOW)
        } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&a) {
            (Space::Local, a - LOCAL_WINDOW)
        } else {
            (Space::Global, a)
        }
    }

    /// Host pointer for a global access, bounds- and alignment-checked.
    fn global_ptr(
        &mut self,
        ctx: &Ctx,
        a: u64,
        len: usize,
        align: usize,
        pc: usize,
    ) -> Result<*mut u8, LaunchError> {
        if a % align as u64 != 0 {
            return Err(LaunchError::MisalignedAddress { addr: a, len, pc });
        }
        let end = a
            .checked_add(len as u64)
            .ok_or(LaunchError::IllegalAddress { addr: a, len, pc })?;
        for &(base, rlen, p) in &self.cache {
            if !p.is_null() && a >= base && end <= base + rlen {
                // SAFETY: inside a cached allocation (checked just above).
                return Ok(unsafe { p.add((a - base) as usize) });
            }
        }
        if let Some((b, l, p)) = ctx.mem.region(a) {
            self.cache[self.cache_next] = (b, l as u64, p.as_ptr());
            self.cache_next = (self.cache_next + 1) % self.cache.len();
            if a >= b && end <= b + l as u64 {
                // SAFETY: inside the allocation the executor reported.
                return Ok(unsafe { p.as_ptr().add((a - b) as usize) });
            }
            return Err(LaunchError::IllegalAddress { addr: a, len, pc });
        }
        ctx.mem
            .resolve(a, len)
            .map(|p| p.as_ptr())
            .ok_or(LaunchError::IllegalAddress { addr: a, len, pc })
    }

    fn local_range(
        &self,
        t: usize,
        local_size: usize,
        off: u64,
        len: usize,
        pc: usize,
    ) -> Result<usize, LaunchError> {
        if off
            .checked_add(len as u64)
            .is_some_and(|e| e <= local_size as u64)
        {
            Ok(t * local_size + off as usize)
        } else {
            Err(LaunchError::IllegalAddress {
                addr: LOCAL_WINDOW.wrapping_add(off),
                len,
                pc,
            })
        }
    }

    fn shared_range(&self, off: u64, len: usize, pc: usize) -> Result<usize, LaunchError> {
        if off
            .checked_add(len as u64)
            .is_some_and(|e| e <= self.shared.len() as u64)
        {
            Ok(off as usize)
        } else {
            Err(LaunchError::IllegalAddress {
                addr: SHARED_WINDOW.wrapping_add(off),
                len,
                pc,
            })
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        size: usize,
        n: u8,
        t: usize,
        local_size: usize,
        pc: usize,
    ) -> Result<u64, LaunchError> {
        let (space, a) = Self::classify(space, a);
        let bytes = |s: &[u8]| {
            let mut b = [0u8; 8];
            b[..s.len()].copy_from_slice(s);
            u64::from_le_bytes(b)
        };
        match space {
            Space::Global | Space::Generic => {
                let align = if n > 1 { size * usize::from(n) } else { size };
                let p = self.global_ptr(ctx, a, size, align.min(16), pc)?;
                // SAFETY: `p` points to `size` bytes of one live allocation, aligned to `size`
                // (checked); atomics of that width may access it concurrently with other
                // blocks' atomics.
                Ok(unsafe {
                    match size {
                        1 => u64::from(AtomicU8::from_ptr(p).load(Relaxed)),
                        2 => u64::from(AtomicU16::from_ptr(p.cast()).load(Relaxed)),
                        4 => u64::from(AtomicU32::from_ptr(p.cast()).load(Relaxed)),
                        _ => AtomicU64::from_ptr(p.cast()).load(Relaxed),
                    }
                })
            }
            Space::Shared => {
                let o = self.shared_range(a, size, pc)?;
                Ok(bytes(&self.shared[o..o + size]))
            }
            Space::Local => {
                let o = self.local_range(t, local_size, a, size, pc)?;
                Ok(bytes(&self.local[o..o + size]))
            }
            Space::Param => {
                let e = a
                    .checked_add(size as u64)
                    .filter(|&e| e <= ctx.params.len() as u64);
                match e {
                    Some(_) => Ok(bytes(&ctx.params[a as usize..a as usize + size])),
                    None => Err(LaunchError::IllegalAddress {
                        addr: a,
                        len: size,
                        pc,
                    }),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        size: usize,
        n: u8,
        v: u64,
        t: usize,
        local_size: usize,
        pc: usize,
    ) -> Result<(), LaunchError> {
        let (space, a) = Self::classify(space, a);
        let le = v.to_le_bytes();
        match space {
            Space::Global | Space::Generic => {
                let align = if n > 1 { size * usize::from(n) } else { size };
                let p = self.global_ptr(ctx, a, size, align.min(16), pc)?;
                // SAFETY: as in `load`.
                unsafe {
                    match size {
                        1 => AtomicU8::from_ptr(p).store(v as u8, Relaxed),
                        2 => AtomicU16::from_ptr(p.cast()).store(v as u16, Relaxed),
                        4 => AtomicU32::from_ptr(p.cast()).store(v as u32, Relaxed),
                        _ => AtomicU64::from_ptr(p.cast()).store(v, Relaxed),
                    }
                }
                Ok(())
            }
            Space::Shared => {
                let o = self.shared_range(a, size, pc)?;
                self.shared[o..o + size].copy_from_slice(&le[..size]);
                Ok(())
            }
            Space::Local => {
                let o = self.local_range(t, local_size, a, size, pc)?;
                self.local[o..o + size].copy_from_slice(&le[..size]);
                Ok(())
            }
            Space::Param => Err(LaunchError::IllegalAddress {
                addr: a,
                len: size,
                pc,
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        op: AtomOp,
        ty: Ty,
        b: u64,
        c: u64,
        t: usize,
        local_size: usize,
        pc: usize,
    ) -> Result<u64, LaunchError> {
        let (space, a) = Self::classify(space, a);
        let size = ty.bytes();
        let f = |old: u64| num::atom(op, ty, old, b, c);
        match space {
            Space::Global | Space::Generic => {
                let p = self.global_ptr(ctx, a, size, size, pc)?;
                // SAFETY: `p` is aligned and inside one allocation (checked); the
                // read-modify-write is a compare-exchange loop, atomic against other blocks.
                let old = unsafe {
                    if size == 4 {
                        let at = AtomicU32::from_ptr(p.cast());
                        let mut cur = at.load(Relaxed);
                        loop {
                            let new = f(u64::from(cur)) as u32;
                            match at.compare_exchange_weak(
                                cur,
                                new,
                                std::sync::atomic::Ordering::AcqRel,
                                Relaxed,
                            ) {
                                Ok(_) => break u64::from(cur),
                                Err(x) => cur = x,
                            }
                        }
                    } else {
                        let at = AtomicU64::from_ptr(p.cast());
                        let mut cur = at.load(Relaxed);
                        loop {
                            let new = f(cur);
                            match at.compare_exchange_weak(
                                cur,
                                new,
                                std::sync::atomic::Ordering::AcqRel,
                                Relaxed,
                            ) {
                                Ok(_) => break cur,
                                Err(x) => cur = x,
                            }
                        }
                    }
                };
                Ok(old)
            }
            Space::Shared | Space::Local => {
                // One worker runs the whole block: a plain read-modify-write is atomic here.
                let old = self.load(ctx, space, a, size, 1, t, local_size, pc)?;
                self.store(ctx, space, a, size, 1, f(old), t, local_size, pc)?;
                Ok(old)
            }
            Space::Param => Err(LaunchError::IllegalAddress {
                addr: a,
                len: size,
                pc,
            }),
        }
    }
}
