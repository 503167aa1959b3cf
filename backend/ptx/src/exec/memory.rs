//! Memory accesses of a block's threads: generic addresses resolved to their state space,
//! every access bounds- and alignment-checked, global memory through atomics of the access
//! width with the instruction's ordering.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::error::LaunchError;
use crate::ir::*;
use crate::num;

use super::block::Block;
use super::{
    Ctx, GRID_WINDOW, GRID_WORKSPACE_WORDS, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW, WINDOW_SIZE,
};

fn load_order(s: Sem) -> Ordering {
    match s {
        Sem::Acquire | Sem::AcqRel => Ordering::Acquire,
        _ => Ordering::Relaxed,
    }
}

fn store_order(s: Sem) -> Ordering {
    match s {
        Sem::Release | Sem::AcqRel => Ordering::Release,
        _ => Ordering::Relaxed,
    }
}

impl Block {
    pub(super) fn address(&self, a: &Addr, t: usize, g: &[u64]) -> u64 {
        let mut v = a.offset as u64;
        if let Some(r) = a.base {
            v = v.wrapping_add(self.regs[t * self.nregs + r as usize]);
        }
        if let Some(i) = a.global {
            v = v.wrapping_add(g[i as usize]);
        }
        v
    }

    /// Resolves a generic address to its state space.
    pub(super) fn classify(space: Space, a: u64) -> (Space, u64) {
        if space != Space::Generic {
            return (space, a);
        }
        if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) {
            (Space::Shared, a - SHARED_WINDOW)
        } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&a) {
            (Space::Local, a - LOCAL_WINDOW)
        } else if (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&a) {
            (Space::Param, a - PARAM_WINDOW)
        } else {
            (Space::Global, a)
        }
    }

    /// Host pointer for a global access, bounds- and alignment-checked.
    #[inline]
    pub(super) fn global_ptr(
        &mut self,
        ctx: &Ctx,
        a: u64,
        len: usize,
        align: usize,
        line: u32,
    ) -> Result<*mut u8, LaunchError> {
        if a % align as u64 != 0 {
            return Err(LaunchError::MisalignedAddress { addr: a, len, line });
        }
        let illegal = LaunchError::IllegalAddress { addr: a, len, line };
        let end = a.checked_add(len as u64).ok_or(illegal.clone())?;
        for &(base, rlen, p) in &self.cache {
            if !p.is_null() && a >= base && end <= base + rlen {
                // SAFETY: inside a cached allocation (checked just above).
                return Ok(unsafe { p.add((a - base) as usize) });
            }
        }
        if let Some(ws) = &ctx.grid_ws {
            let size = (GRID_WORKSPACE_WORDS * 8) as u64;
            if a >= GRID_WINDOW && end <= GRID_WINDOW + size {
                let p = ws.as_ptr() as *mut u8;
                // SAFETY: inside the launch's grid workspace, which outlives the launch's
                // workers; it is only accessed through atomics.
                return Ok(unsafe { p.add((a - GRID_WINDOW) as usize) });
            }
        }
        if let Some((b, l, p)) = ctx.mem.region(a) {
            self.cache[self.cache_next] = (b, l as u64, p.as_ptr());
            self.cache_next = (self.cache_next + 1) % self.cache.len();
            if a >= b && end <= b + l as u64 {
                // SAFETY: inside the allocation the executor reported.
                return Ok(unsafe { p.as_ptr().add((a - b) as usize) });
            }
            return Err(illegal);
        }
        ctx.mem.resolve(a, len).map(|p| p.as_ptr()).ok_or(illegal)
    }

    fn local_range(
        &self,
        ctx: &Ctx,
        t: usize,
        off: u64,
        len: usize,
        line: u32,
    ) -> Result<usize, LaunchError> {
        let local_size = ctx.k.local_size as usize;
        if off % (len.min(16) as u64) != 0 {
            return Err(LaunchError::MisalignedAddress {
                addr: LOCAL_WINDOW.wrapping_add(off),
                len,
                line,
            });
        }
        if off
            .checked_add(len as u64)
            .is_some_and(|e| e <= local_size as u64)
        {
            Ok(t * local_size + off as usize)
        } else {
            Err(LaunchError::IllegalAddress {
                addr: LOCAL_WINDOW.wrapping_add(off),
                len,
                line,
            })
        }
    }

    fn shared_range(&self, off: u64, len: usize, line: u32) -> Result<usize, LaunchError> {
        if off % (len.min(16) as u64) != 0 {
            return Err(LaunchError::MisalignedAddress {
                addr: SHARED_WINDOW.wrapping_add(off),
                len,
                line,
            });
        }
        if off
            .checked_add(len as u64)
            .is_some_and(|e| e <= self.shared.len() as u64)
        {
            Ok(off as usize)
        } else {
            Err(LaunchError::IllegalAddress {
                addr: SHARED_WINDOW.wrapping_add(off),
                len,
                line,
            })
        }
    }

    fn param_range(
        &self,
        ctx: &Ctx,
        off: u64,
        len: usize,
        line: u32,
    ) -> Result<usize, LaunchError> {
        if off
            .checked_add(len as u64)
            .is_some_and(|e| e <= ctx.params.len() as u64)
        {
            Ok(off as usize)
        } else {
            Err(LaunchError::IllegalAddress {
                addr: PARAM_WINDOW.wrapping_add(off),
                len,
                line,
            })
        }
    }

    /// Loads `n` consecutive values of `size` bytes at `a` (the vector aligned as a whole).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load_vec(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        size: usize,
        n: usize,
        sem: Sem,
        t: usize,
        line: u32,
        out: &mut [u64; 4],
    ) -> Result<(), LaunchError> {
        let (space, a) = Self::classify(space, a);
        let total = size * n;
        let bytes = |s: &[u8]| {
            let mut b = [0u8; 8];
            b[..s.len()].copy_from_slice(s);
            u64::from_le_bytes(b)
        };
        match space {
            Space::Global | Space::Generic => {
                let p = self.global_ptr(ctx, a, total, total.min(16), line)?;
                let order = load_order(sem);
                for (k, o) in out.iter_mut().enumerate().take(n) {
                    // SAFETY: `p` points to `total` bytes of one live allocation, aligned to
                    // the whole vector (checked), so each element is aligned to its size;
                    // atomics of that width may access it concurrently with other blocks'.
                    *o = unsafe {
                        let q = p.add(k * size);
                        match size {
                            1 => u64::from(AtomicU8::from_ptr(q).load(order)),
                            2 => u64::from(AtomicU16::from_ptr(q.cast()).load(order)),
                            4 => u64::from(AtomicU32::from_ptr(q.cast()).load(order)),
                            _ => AtomicU64::from_ptr(q.cast()).load(order),
                        }
                    };
                }
            }
            Space::Shared => {
                let o = self.shared_range(a, total, line)?;
                for (k, v) in out.iter_mut().enumerate().take(n) {
                    *v = bytes(&self.shared[o + k * size..o + (k + 1) * size]);
                }
            }
            Space::Local => {
                let o = self.local_range(ctx, t, a, total, line)?;
                for (k, v) in out.iter_mut().enumerate().take(n) {
                    *v = bytes(&self.local[o + k * size..o + (k + 1) * size]);
                }
            }
            Space::Param => {
                let o = self.param_range(ctx, a, total, line)?;
                for (k, v) in out.iter_mut().enumerate().take(n) {
                    *v = bytes(&ctx.params[o + k * size..o + (k + 1) * size]);
                }
            }
        }
        Ok(())
    }

    /// One value of `size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        size: usize,
        t: usize,
        line: u32,
    ) -> Result<u64, LaunchError> {
        let mut v = [0u64; 4];
        self.load_vec(ctx, space, a, size, 1, Sem::Relaxed, t, line, &mut v)?;
        Ok(v[0])
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_vec(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        size: usize,
        vals: &[u64],
        sem: Sem,
        t: usize,
        line: u32,
    ) -> Result<(), LaunchError> {
        let (space, a) = Self::classify(space, a);
        let total = size * vals.len();
        match space {
            Space::Global | Space::Generic => {
                let p = self.global_ptr(ctx, a, total, total.min(16), line)?;
                let order = store_order(sem);
                for (k, &v) in vals.iter().enumerate() {
                    // SAFETY: as in `load_vec`.
                    unsafe {
                        let q = p.add(k * size);
                        match size {
                            1 => AtomicU8::from_ptr(q).store(v as u8, order),
                            2 => AtomicU16::from_ptr(q.cast()).store(v as u16, order),
                            4 => AtomicU32::from_ptr(q.cast()).store(v as u32, order),
                            _ => AtomicU64::from_ptr(q.cast()).store(v, order),
                        }
                    }
                }
            }
            Space::Shared => {
                let o = self.shared_range(a, total, line)?;
                for (k, &v) in vals.iter().enumerate() {
                    self.shared[o + k * size..o + (k + 1) * size]
                        .copy_from_slice(&v.to_le_bytes()[..size]);
                }
            }
            Space::Local => {
                let o = self.local_range(ctx, t, a, total, line)?;
                for (k, &v) in vals.iter().enumerate() {
                    self.local[o + k * size..o + (k + 1) * size]
                        .copy_from_slice(&v.to_le_bytes()[..size]);
                }
            }
            Space::Param => {
                return Err(LaunchError::IllegalAddress {
                    addr: PARAM_WINDOW.wrapping_add(a),
                    len: total,
                    line,
                })
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        size: usize,
        v: u64,
        t: usize,
        line: u32,
    ) -> Result<(), LaunchError> {
        self.store_vec(ctx, space, a, size, &[v], Sem::Relaxed, t, line)
    }

    /// An atomic read-modify-write; returns the old value.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn atomic(
        &mut self,
        ctx: &Ctx,
        space: Space,
        a: u64,
        op: AtomOp,
        ty: Ty,
        b: u64,
        c: u64,
        t: usize,
        line: u32,
    ) -> Result<u64, LaunchError> {
        let (space, a) = Self::classify(space, a);
        let size = ty.bytes();
        let f = |old: u64| num::atom(op, ty, old, b, c);
        match space {
            Space::Global | Space::Generic => {
                let p = self.global_ptr(ctx, a, size, size, line)?;
                macro_rules! rmw {
                    ($at:ty, $t:ty) => {{
                        // SAFETY: `p` is aligned to `size` and inside one allocation
                        // (checked); the read-modify-write is a compare-exchange loop,
                        // atomic against other blocks.
                        let at = unsafe { <$at>::from_ptr(p.cast()) };
                        let mut cur = at.load(Ordering::Relaxed);
                        loop {
                            let new = f(u64::from(cur)) as $t;
                            match at.compare_exchange_weak(
                                cur,
                                new,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            ) {
                                Ok(_) => break u64::from(cur),
                                Err(x) => cur = x,
                            }
                        }
                    }};
                }
                Ok(match size {
                    2 => rmw!(AtomicU16, u16),
                    4 => rmw!(AtomicU32, u32),
                    _ => rmw!(AtomicU64, u64),
                })
            }
            Space::Shared | Space::Local => {
                // One worker runs the whole block: a plain read-modify-write is atomic here.
                let old = self.load(ctx, space, a, size, t, line)?;
                self.store(ctx, space, a, size, f(old), t, line)?;
                Ok(old)
            }
            Space::Param => Err(LaunchError::IllegalAddress {
                addr: a,
                len: size,
                line,
            }),
        }
    }

    /// The NUL-terminated string at generic address `a` (at most `max` bytes); `None` if
    /// it starts outside memory. A string running off the end of its memory is cut there.
    pub(super) fn read_string(
        &mut self,
        ctx: &Ctx,
        a: u64,
        max: usize,
        t: usize,
        line: u32,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for k in 0..max as u64 {
            match self.load(ctx, Space::Generic, a.wrapping_add(k), 1, t, line) {
                Ok(0) => break,
                Ok(b) => out.push(b as u8),
                Err(_) if k == 0 => return None,
                Err(_) => break,
            }
        }
        Some(out)
    }
}
