//! The interpreter loop: runs one thread until it waits at a collective, exits, or has used
//! its time slice.

use std::sync::atomic::Ordering;

use crate::error::LaunchError;
use crate::ir::*;
use crate::num;
use crate::printf;

use super::block::{val, Block, St};
use super::{Ctx, Record, GRID_WINDOW, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW, SLICE};

/// printf's view of a thread's argument buffer and of device memory.
struct ArgReader<'b, 'c> {
    b: &'b mut Block,
    ctx: &'b Ctx<'c>,
    t: usize,
    base: u64,
    off: u64,
    line: u32,
}

impl printf::Args for ArgReader<'_, '_> {
    fn next(&mut self, size: usize) -> Option<u64> {
        self.off = self.off.checked_next_multiple_of(size as u64)?;
        let v = self
            .b
            .load(
                self.ctx,
                Space::Generic,
                self.base.wrapping_add(self.off),
                size,
                self.t,
                self.line,
            )
            .ok()?;
        self.off += size as u64;
        Some(v)
    }

    fn string(&mut self, addr: u64) -> Option<Vec<u8>> {
        self.b
            .read_string(self.ctx, addr, printf::MAX_STRING, self.t, self.line)
    }
}

impl Block {
    fn tid(&self, ctx: &Ctx, t: usize) -> [u32; 3] {
        let [bx, by, _] = ctx.cfg.block;
        [
            (t as u32) % bx,
            ((t as u32) / bx) % by,
            (t as u32) / (bx * by),
        ]
    }

    fn local_u64(
        &mut self,
        ctx: &Ctx,
        t: usize,
        off: u64,
        size: usize,
        line: u32,
    ) -> Result<u64, LaunchError> {
        self.load(ctx, Space::Local, off, size, t, line)
    }

    /// Keeps one line of console output from thread `t`, if it fits under the limit.
    fn console(&mut self, ctx: &Ctx, t: usize, text: Vec<u8>) {
        if ctx.console_reserve(text.len()) {
            self.records.push(Record {
                key: (
                    self.id,
                    self.epoch,
                    (t / 32) as u32,
                    self.pseq[t],
                    (t % 32) as u32,
                ),
                text,
            });
        }
        self.pseq[t] += 1;
    }

    fn printf(
        &mut self,
        ctx: &Ctx,
        t: usize,
        fmt: u64,
        args: u64,
        ret: Option<u64>,
        line: u32,
    ) -> Result<(), LaunchError> {
        let fp = self.local_u64(ctx, t, fmt, 8, line)?;
        let ap = self.local_u64(ctx, t, args, 8, line)?;
        let (text, n) = match self.read_string(ctx, fp, printf::MAX_CALL_OUTPUT, t, line) {
            None => (Vec::new(), -1),
            Some(f) => {
                let mut r = ArgReader {
                    b: self,
                    ctx,
                    t,
                    base: ap,
                    off: 0,
                    line,
                };
                printf::format(&f, &mut r)
            }
        };
        if n >= 0 || !text.is_empty() {
            self.console(ctx, t, text);
        }
        if let Some(r) = ret {
            self.store(ctx, Space::Local, r, 4, n as u32 as u64, t, line)?;
        }
        Ok(())
    }

    fn assert_fail(&mut self, ctx: &Ctx, t: usize, locs: [u64; 4], line: u32) -> LaunchError {
        let mut read = |off: u64, size: usize| self.local_u64(ctx, t, off, size, line).unwrap_or(0);
        let (msg, file, fline, func) = (
            read(locs[0], 8),
            read(locs[1], 8),
            read(locs[2], 4),
            read(locs[3], 8),
        );
        let mut s = |p: u64| {
            String::from_utf8_lossy(&self.read_string(ctx, p, 4096, t, line).unwrap_or_default())
                .into_owned()
        };
        let (msg, file, func) = (s(msg), s(file), s(func));
        let tid = self.tid(ctx, t);
        let text = format!(
            "{file}:{fline}: {func}: block: [{},{},{}], thread: [{},{},{}] Assertion `{msg}` failed.\n",
            self.ctaid[0], self.ctaid[1], self.ctaid[2], tid[0], tid[1], tid[2]
        );
        self.console(ctx, t, text.into_bytes());
        LaunchError::Assert {
            line,
            block: self.ctaid,
            thread: tid,
        }
    }

    /// Runs thread `t` until it exits, reaches a collective or uses its slice.
    pub(super) fn thread(&mut self, ctx: &Ctx, t: usize) -> Result<(), LaunchError> {
        let code = &ctx.k.code[..];
        let g = ctx.globals;
        let nregs = self.nregs;
        let mut pc = self.pc[t] as usize;
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
            let line = inst.line;
            match inst.op {
                Op::Mov { d, a } => r[d as usize] = val(r, a, g),
                Op::Bin { op, ty, m, d, a, b } => {
                    r[d as usize] = num::bin(op, ty, m, val(r, a, g), val(r, b, g))
                }
                Op::Un { op, ty, m, d, a } => r[d as usize] = num::un(op, ty, m, val(r, a, g)),
                Op::Fma { ty, m, d, a, b, c } => {
                    r[d as usize] = num::fma(ty, m, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::MulWide { ty, d, a, b } => {
                    r[d as usize] = num::mul_wide(ty, val(r, a, g), val(r, b, g))
                }
                Op::Mad { ty, hi, d, a, b, c } => {
                    let m = num::bin(
                        if hi { BinOp::MulHi } else { BinOp::MulLo },
                        ty,
                        FMode::DEFAULT,
                        val(r, a, g),
                        val(r, b, g),
                    );
                    r[d as usize] = num::bin(BinOp::Add, ty, FMode::DEFAULT, m, val(r, c, g));
                }
                Op::MadWide { ty, d, a, b, c } => {
                    let m = num::mul_wide(ty, val(r, a, g), val(r, b, g));
                    r[d as usize] = m.wrapping_add(val(r, c, g)) & num::mask(ty.bits * 2);
                }
                Op::Carry {
                    op,
                    ty,
                    cin,
                    cout,
                    cc,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let ci = if cin { r[cc as usize] } else { 0 };
                    let (v, co) = num::carry(op, ty, ci, val(r, a, g), val(r, b, g), val(r, c, g));
                    r[d as usize] = v;
                    if cout {
                        r[cc as usize] = co;
                    }
                }
                Op::Sad { ty, d, a, b, c } => {
                    r[d as usize] = num::sad(ty, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Mad24 { ty, hi, d, a, b, c } => {
                    r[d as usize] = num::mad24(ty, hi, val(r, a, g), val(r, b, g), val(r, c, g))
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
                    let (av, bv) = (val(r, a, g), val(r, b, g));
                    let combine = |c: bool| match comb {
                        None => c,
                        Some((bop, s, neg)) => {
                            let x = (val(r, s, g) != 0) != neg;
                            match bop {
                                BoolOp::And => c && x,
                                BoolOp::Or => c || x,
                                BoolOp::Xor => c ^ x,
                            }
                        }
                    };
                    let (p, q) = if ty.is_packed() {
                        let h = ty.half();
                        (
                            combine(num::compare(cmp, h, av & 0xffff, bv & 0xffff)),
                            combine(num::compare(
                                cmp,
                                h,
                                (av >> 16) & 0xffff,
                                (bv >> 16) & 0xffff,
                            )),
                        )
                    } else {
                        let c = num::compare(cmp, ty, av, bv);
                        (combine(c), combine(!c))
                    };
                    r[d as usize] = u64::from(p);
                    if let Some(d2) = d2 {
                        r[d2 as usize] = u64::from(q);
                    }
                }
                Op::Set {
                    cmp,
                    dty,
                    ty,
                    d,
                    a,
                    b,
                    comb,
                } => {
                    let mut c = num::compare(cmp, ty, val(r, a, g), val(r, b, g));
                    if let Some((bop, s, neg)) = comb {
                        let x = (val(r, s, g) != 0) != neg;
                        c = match bop {
                            BoolOp::And => c && x,
                            BoolOp::Or => c || x,
                            BoolOp::Xor => c ^ x,
                        };
                    }
                    r[d as usize] = match (c, dty.is_float()) {
                        (false, _) => 0,
                        (true, true) => num::putf(1.0, dty),
                        (true, false) => num::mask(dty.bits),
                    };
                }
                Op::Selp { ty, d, a, b, c } => {
                    let v = if val(r, c, g) != 0 {
                        val(r, a, g)
                    } else {
                        val(r, b, g)
                    };
                    r[d as usize] = num::norm(v, ty);
                }
                Op::Slct {
                    cty,
                    ftz,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let cv = val(r, c, g);
                    let take_a = if cty.is_float() {
                        let x = num::getf(cv, cty);
                        let x = if ftz && x.abs() < f64::from(f32::MIN_POSITIVE) {
                            0.0
                        } else {
                            x
                        };
                        x >= 0.0 || (x == 0.0)
                    } else {
                        num::sext(cv, cty.bits) >= 0
                    };
                    r[d as usize] = if take_a { val(r, a, g) } else { val(r, b, g) };
                }
                Op::Testp { kind, ty, d, a } => {
                    r[d as usize] = u64::from(num::testp(kind, ty, val(r, a, g)))
                }
                Op::Cvt {
                    dty,
                    sty,
                    m,
                    ext,
                    d,
                    a,
                } => r[d as usize] = num::load_ext(num::cvt(dty, sty, m, val(r, a, g)), dty, ext),
                Op::CvtPack { dty, m, d, a, b } => {
                    r[d as usize] = num::cvt_pack(dty, m, val(r, a, g), val(r, b, g))
                }
                Op::Pack { bits, n, d, parts } => {
                    let m = num::mask(bits);
                    let mut v = 0u64;
                    for (k, p) in parts.iter().enumerate().take(usize::from(n)) {
                        v |= (val(r, *p, g) & m) << (k * usize::from(bits));
                    }
                    r[d as usize] = v;
                }
                Op::Unpack { bits, n, ds, a } => {
                    let v = val(r, a, g);
                    let m = num::mask(bits);
                    for (k, dk) in ds.iter().enumerate().take(usize::from(n)) {
                        if let Some(dk) = dk {
                            r[*dk as usize] = (v >> (k * usize::from(bits))) & m;
                        }
                    }
                }
                Op::Cvta {
                    space,
                    to_generic,
                    d,
                    a,
                } => {
                    let base = match space {
                        Space::Shared => SHARED_WINDOW,
                        Space::Param => PARAM_WINDOW,
                        _ => LOCAL_WINDOW,
                    };
                    let v = val(r, a, g);
                    r[d as usize] = if to_generic {
                        v.wrapping_add(base)
                    } else {
                        v.wrapping_sub(base)
                    };
                }
                Op::Isspacep { space, d, a } => {
                    let (s, _) = Block::classify(Space::Generic, val(r, a, g));
                    r[d as usize] = u64::from(s == space);
                }
                Op::Special { d, s } => {
                    let v = self.special(ctx, s, t);
                    self.regs[t * nregs + d as usize] = v;
                }
                Op::Ld {
                    ty,
                    sem,
                    ext,
                    d,
                    n,
                    addr,
                } => {
                    let a = self.address(&addr, t, g);
                    let mut out = [0u64; 4];
                    self.load_vec(
                        ctx,
                        addr.space,
                        a,
                        ty.bytes(),
                        usize::from(n),
                        sem,
                        t,
                        line,
                        &mut out,
                    )?;
                    for (k, dk) in d.iter().enumerate().take(usize::from(n)) {
                        self.regs[t * nregs + *dk as usize] = num::load_ext(out[k], ty, ext);
                    }
                }
                Op::St {
                    ty,
                    sem,
                    s,
                    n,
                    addr,
                } => {
                    let a = self.address(&addr, t, g);
                    let r = &self.regs[t * nregs..(t + 1) * nregs];
                    let mut vals = [0u64; 4];
                    for (k, src) in s.iter().enumerate().take(usize::from(n)) {
                        vals[k] = val(r, *src, g);
                    }
                    self.store_vec(
                        ctx,
                        addr.space,
                        a,
                        ty.bytes(),
                        &vals[..usize::from(n)],
                        sem,
                        t,
                        line,
                    )?;
                }
                Op::Atom {
                    op,
                    ty,
                    d,
                    addr,
                    b,
                    c,
                    ..
                } => {
                    let (bv, cv) = (val(r, b, g), val(r, c, g));
                    let a = self.address(&addr, t, g);
                    let old = self.atomic(ctx, addr.space, a, op, ty, bv, cv, t, line)?;
                    if let Some(d) = d {
                        self.regs[t * nregs + d as usize] = old;
                    }
                }
                Op::CpAsync {
                    dst,
                    src,
                    size,
                    src_size,
                } => {
                    let n = usize::from(size);
                    let avail = src_size.map_or(n, |s| (val(r, s, g) as usize).min(n));
                    let (da, sa) = (self.address(&dst, t, g), self.address(&src, t, g));
                    for k in 0..n {
                        let v = if k < avail {
                            self.load(ctx, src.space, sa.wrapping_add(k as u64), 1, t, line)?
                        } else {
                            0
                        };
                        self.store(ctx, dst.space, da.wrapping_add(k as u64), 1, v, t, line)?;
                    }
                }
                Op::Bra { target } => {
                    let target = target as usize;
                    if target <= pc && count >= SLICE {
                        // A loop that has run its slice: let the other threads run.
                        self.pc[t] = target as u32;
                        break Ok(());
                    }
                    pc = target;
                    continue;
                }
                Op::Bar {
                    kind: BarKind::Arrive,
                    id,
                    ..
                } => {
                    // bar.arrive does not wait: the arrival counts toward the barrier.
                    let b = (val(r, id, g) & 15) as usize;
                    self.arrived[b] += 1;
                }
                Op::Bar { .. } | Op::Warp { .. } => {
                    self.pc[t] = pc as u32;
                    self.state[t] = St::Wait;
                    break Ok(());
                }
                Op::Bfe { ty, d, a, b, c } => {
                    r[d as usize] = num::bfe(ty, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Bfi { ty, d, a, b, c, e } => {
                    r[d as usize] =
                        num::bfi(ty, val(r, a, g), val(r, b, g), val(r, c, g), val(r, e, g))
                }
                Op::Prmt { mode, d, a, b, c } => {
                    r[d as usize] = num::prmt(mode, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Shf {
                    left,
                    clamp,
                    d,
                    a,
                    b,
                    c,
                } => {
                    r[d as usize] = num::shf(left, clamp, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Bmsk { clamp, d, a, b } => {
                    r[d as usize] = num::bmsk(clamp, val(r, a, g), val(r, b, g))
                }
                Op::Fns { d, a, b, c } => {
                    r[d as usize] = num::fns(val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Lop3 { d, a, b, c, lut } => {
                    r[d as usize] =
                        num::lop3(val(r, a, g), val(r, b, g), val(r, c, g), lut) & 0xffff_ffff
                }
                Op::Dp {
                    four,
                    hi,
                    sa,
                    sb,
                    d,
                    a,
                    b,
                    c,
                } => {
                    r[d as usize] =
                        num::dp(four, hi, sa, sb, val(r, a, g), val(r, b, g), val(r, c, g))
                }
                Op::Fence => std::sync::atomic::fence(Ordering::SeqCst),
                Op::Nanosleep => {
                    self.slept = true;
                    self.pc[t] = pc as u32 + 1;
                    self.executed = start + count;
                    return Ok(());
                }
                Op::Printf { fmt, args, ret } => {
                    self.printf(ctx, t, fmt, args, ret, line)?;
                }
                Op::AssertFail {
                    msg,
                    file,
                    line: l,
                    func,
                } => break Err(self.assert_fail(ctx, t, [msg, file, l, func], line)),
                Op::Exit => {
                    self.state[t] = St::Exited;
                    break Ok(());
                }
                Op::Trap => {
                    break Err(LaunchError::Trap {
                        line,
                        block: self.ctaid,
                        thread: self.tid(ctx, t),
                    })
                }
                Op::Nop => {}
                Op::LdShared32 { d, base, off } => {
                    let a = r[base as usize].wrapping_add(off as u64);
                    let o = a as usize;
                    match self
                        .shared
                        .get(o..o.wrapping_add(4))
                        .filter(|_| a < 1 << 32 && a % 4 == 0)
                    {
                        Some(b) => {
                            r[d as usize] = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        }
                        None => break Err(shared_fault(a, line)),
                    }
                }
                Op::StShared32 { s, base, off } => {
                    let a = r[base as usize].wrapping_add(off as u64);
                    let v = val(r, s, g) as u32;
                    let o = a as usize;
                    match self
                        .shared
                        .get_mut(o..o.wrapping_add(4))
                        .filter(|_| a < 1 << 32 && a % 4 == 0)
                    {
                        Some(b) => b.copy_from_slice(&v.to_le_bytes()),
                        None => break Err(shared_fault(a, line)),
                    }
                }
                Op::LdGlobal32 { d, base, off } => {
                    let a = r[base as usize].wrapping_add(off as u64);
                    let p = self.global_ptr(ctx, a, 4, 4, line)?;
                    // SAFETY: `p` points to 4 bytes of one live allocation, 4-aligned
                    // (checked).
                    let v = unsafe {
                        std::sync::atomic::AtomicU32::from_ptr(p.cast()).load(Ordering::Relaxed)
                    };
                    self.regs[t * nregs + d as usize] = u64::from(v);
                }
                Op::FmaF32 { d, a, b, c } => {
                    let f = |v: u64| f32::from_bits(v as u32);
                    let x = f(val(r, a, g)).mul_add(f(val(r, b, g)), f(val(r, c, g)));
                    r[d as usize] = if x.is_nan() {
                        0x7fff_ffff
                    } else {
                        u64::from(x.to_bits())
                    };
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

    fn special(&self, ctx: &Ctx, s: Special, t: usize) -> u64 {
        let lane = (t % 32) as u32;
        let nwarps = self.nthreads.div_ceil(32) as u64;
        // The clock is read only for the registers that hold time.
        let ns = || ctx.clock().0.elapsed().as_nanos() as u64;
        let global_ns = || {
            let (start, epoch) = ctx.clock();
            epoch.wrapping_add(start.elapsed().as_nanos() as u64)
        };
        match s {
            Special::Tid(d) => self.tid(ctx, t)[usize::from(d)].into(),
            Special::Ntid(d) => ctx.cfg.block[usize::from(d)].into(),
            Special::Ctaid(d) => self.ctaid[usize::from(d)].into(),
            Special::Nctaid(d) => ctx.cfg.grid[usize::from(d)].into(),
            Special::LaneId => lane.into(),
            Special::WarpId => (t / 32) as u64,
            Special::NWarpId => nwarps,
            Special::Clock => ns() & 0xffff_ffff,
            Special::Clock64 => ns(),
            Special::GlobalTimer => global_ns(),
            Special::GlobalTimerLo => global_ns() & 0xffff_ffff,
            Special::GlobalTimerHi => global_ns() >> 32,
            Special::SmId => (self.worker as u64) % u64::from(ctx.sm_count.max(1)),
            Special::NSmId => ctx.sm_count.into(),
            Special::GridId => ctx.grid_id,
            Special::LaneMaskEq => 1u64 << lane,
            Special::LaneMaskLt => (1u64 << lane) - 1,
            Special::LaneMaskLe => (1u64 << (lane + 1)) - 1,
            Special::LaneMaskGt => 0xffff_ffff & !((1u64 << (lane + 1)) - 1),
            Special::LaneMaskGe => 0xffff_ffff & !((1u64 << lane) - 1),
            Special::DynamicSmem => ctx.cfg.shared_mem_bytes.into(),
            Special::TotalSmem => self.shared.len() as u64,
            // The cooperative grid workspace's address, high word in 1, low word in 2.
            Special::EnvReg(1) if ctx.grid_ws.is_some() => GRID_WINDOW >> 32,
            Special::EnvReg(2) if ctx.grid_ws.is_some() => GRID_WINDOW & 0xffff_ffff,
            Special::EnvReg(_) => 0,
        }
    }
}

fn shared_fault(a: u64, line: u32) -> LaunchError {
    if a % 4 != 0 {
        LaunchError::MisalignedAddress {
            addr: SHARED_WINDOW.wrapping_add(a),
            len: 4,
            line,
        }
    } else {
        LaunchError::IllegalAddress {
            addr: SHARED_WINDOW.wrapping_add(a),
            len: 4,
            line,
        }
    }
}
