//! One PTX instruction to one [`Op`]: opcode modifiers, operand resolution, and the check
//! that every modifier is one this executor implements (an unknown one is refused, never
//! ignored).

use super::{Decoder, Loc, Scope};
use crate::ast::{self, Operand};
use crate::error::LoadError;
use crate::ir::*;
use crate::num::mask;

type R<T> = Result<T, LoadError>;

/// Instructions this executor implements (their operand syntax errors are malformed PTX).
pub(super) const KNOWN: &[&str] = &[
    "mov",
    "add",
    "sub",
    "mul",
    "mad",
    "fma",
    "div",
    "rem",
    "min",
    "max",
    "and",
    "or",
    "xor",
    "not",
    "cnot",
    "shl",
    "shr",
    "neg",
    "abs",
    "sqrt",
    "rsqrt",
    "rcp",
    "ex2",
    "lg2",
    "sin",
    "cos",
    "tanh",
    "popc",
    "clz",
    "brev",
    "bfind",
    "copysign",
    "setp",
    "set",
    "selp",
    "slct",
    "testp",
    "cvt",
    "cvta",
    "isspacep",
    "ld",
    "ldu",
    "st",
    "atom",
    "red",
    "bra",
    "call",
    "ret",
    "exit",
    "bar",
    "barrier",
    "membar",
    "fence",
    "shfl",
    "vote",
    "match",
    "redux",
    "activemask",
    "bfe",
    "bfi",
    "prmt",
    "shf",
    "bmsk",
    "fns",
    "lop3",
    "dp4a",
    "dp2a",
    "addc",
    "subc",
    "madc",
    "mad24",
    "mul24",
    "sad",
    "nanosleep",
    "trap",
    "nop",
    "prefetch",
    "prefetchu",
    "cp",
    "createpolicy",
    "discard",
    "applypriority",
    "pmevent",
    "brkpt",
    "griddepcontrol",
];

/// Cache and eviction hints of loads, stores and atomics: no effect on a CPU.
fn cache_hint(m: &str) -> bool {
    m.starts_with("L1::")
        || m.starts_with("L2::")
        || matches!(
            m,
            "ca" | "cg" | "cs" | "lu" | "cv" | "wb" | "wt" | "nc" | "weak" | "unified"
        )
}

fn scope_mod(m: &str) -> bool {
    matches!(m, "cta" | "gpu" | "sys" | "cluster")
}

fn sem_mod(m: &str) -> bool {
    matches!(
        m,
        "relaxed" | "acquire" | "release" | "acq_rel" | "volatile" | "sc"
    )
}

struct I<'x> {
    line: usize,
    opcode: &'x str,
    mods: Vec<&'x str>,
    types: Vec<Ty>,
    ops: &'x [Operand],
    scope: &'x Scope,
}

impl<'x> I<'x> {
    fn has(&self, m: &str) -> bool {
        self.mods.contains(&m)
    }

    fn unsupported(&self) -> LoadError {
        LoadError::unsupported(self.line, format!("instruction `{}`", self.opcode))
    }

    fn invalid(&self, why: impl std::fmt::Display) -> LoadError {
        LoadError::invalid(self.line, format!("`{}`: {why}", self.opcode))
    }

    /// Refuses any modifier that is neither a type nor allowed here.
    fn allow(&self, ok: impl Fn(&str) -> bool) -> R<()> {
        match self.mods.iter().find(|m| Ty::parse(m).is_none() && !ok(m)) {
            Some(m) => Err(LoadError::unsupported(
                self.line,
                format!("modifier `.{m}` of `{}`", self.opcode),
            )),
            None => Ok(()),
        }
    }

    fn ty(&self) -> R<Ty> {
        self.types
            .last()
            .copied()
            .ok_or_else(|| self.invalid("no type"))
    }

    fn need(&self, k: usize) -> R<()> {
        if self.ops.len() == k {
            Ok(())
        } else {
            Err(self.invalid(format!("takes {k} operands, found {}", self.ops.len())))
        }
    }

    fn need_range(&self, lo: usize, hi: usize) -> R<()> {
        if (lo..=hi).contains(&self.ops.len()) {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "takes {lo} to {hi} operands, found {}",
                self.ops.len()
            )))
        }
    }

    fn op(&self, k: usize) -> R<&'x Operand> {
        self.ops
            .get(k)
            .ok_or_else(|| self.invalid(format!("operand {k} missing")))
    }

    fn s(&self, k: usize, t: Ty) -> R<Src> {
        src(self.scope, self.op(k)?, t, self.line)
    }

    fn u32s(&self, k: usize) -> R<Src> {
        self.s(k, Ty::U32)
    }

    /// A predicate source, possibly negated (`!p`).
    fn pred(&self, k: usize) -> R<(Src, bool)> {
        match self.op(k)? {
            Operand::NotReg(r) => Ok((Src::R(reg(self.scope, r, self.line)?), true)),
            _ => Ok((self.s(k, Ty::PRED)?, false)),
        }
    }

    fn fmode(&self) -> FMode {
        FMode {
            rnd: self.mods.iter().find_map(|m| rnd(m)).unwrap_or(Rnd::None),
            ftz: self.has("ftz"),
            sat: self.has("sat") || self.has("satfinite"),
            nan: self.has("NaN"),
            relu: self.has("relu"),
        }
    }

    fn sem(&self) -> Sem {
        if self.has("acq_rel") || self.has("sc") {
            Sem::AcqRel
        } else if self.has("acquire") {
            Sem::Acquire
        } else if self.has("release") {
            Sem::Release
        } else {
            Sem::Relaxed
        }
    }

    fn space(&self) -> Space {
        if self.has("global") {
            Space::Global
        } else if self.has("shared") || self.mods.iter().any(|m| m.starts_with("shared::")) {
            Space::Shared
        } else if self.has("local") {
            Space::Local
        } else if self.has("param") {
            Space::Param
        } else if self.has("const") {
            Space::Global
        } else {
            Space::Generic
        }
    }
}

impl<'a> Decoder<'a> {
    fn d(&mut self, i: &I, k: usize) -> R<u32> {
        match i.op(k)? {
            Operand::Sink => self.sink_reg(i.line),
            o => dst(i.scope, o, i.line),
        }
    }

    fn addr(&self, i: &I, k: usize, space: Space) -> R<Addr> {
        address(i.scope, i.op(k)?, space, i.line)
    }

    pub(super) fn op(&mut self, inst: &ast::Inst, scope: &Scope) -> R<Op> {
        let parts: Vec<&str> = inst.opcode.split('.').collect();
        let base = parts[0];
        let i = I {
            line: inst.line,
            opcode: &inst.opcode,
            mods: parts[1..].to_vec(),
            types: parts[1..].iter().filter_map(|m| Ty::parse(m)).collect(),
            ops: &inst.operands,
            scope,
        };
        let line = i.line;
        Ok(match base {
            "mov" => self.mov(&i)?,
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" | "copysign" | "mul24" => self.binary(&i, base)?,
            "addc" | "subc" | "madc" => self.carry(&i, base)?,
            "mad" | "fma" => self.mad(&i, base)?,
            "mad24" => {
                i.allow(|m| matches!(m, "lo" | "hi"))?;
                i.need(4)?;
                let t = i.ty()?;
                Op::Mad24 {
                    ty: t,
                    hi: i.has("hi"),
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                    c: i.s(3, t)?,
                }
            }
            "sad" => {
                i.allow(|_| false)?;
                i.need(4)?;
                let t = i.ty()?;
                Op::Sad {
                    ty: t,
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                    c: i.s(3, t)?,
                }
            }
            "neg" | "abs" | "not" | "cnot" | "sqrt" | "rsqrt" | "rcp" | "ex2" | "lg2" | "sin"
            | "cos" | "tanh" | "popc" | "clz" | "brev" | "bfind" => self.unary(&i, base)?,
            "testp" => {
                i.allow(|m| {
                    matches!(
                        m,
                        "finite" | "infinite" | "number" | "notanumber" | "normal" | "subnormal"
                    )
                })?;
                i.need(2)?;
                let t = i.ty()?;
                let kind = if i.has("finite") {
                    TestpKind::Finite
                } else if i.has("infinite") {
                    TestpKind::Infinite
                } else if i.has("number") {
                    TestpKind::Number
                } else if i.has("notanumber") {
                    TestpKind::NotANumber
                } else if i.has("normal") {
                    TestpKind::Normal
                } else if i.has("subnormal") {
                    TestpKind::Subnormal
                } else {
                    return Err(i.unsupported());
                };
                Op::Testp {
                    kind,
                    ty: t,
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                }
            }
            "setp" | "set" => self.setp(&i, base)?,
            "selp" => {
                i.allow(|_| false)?;
                i.need(4)?;
                let t = i.ty()?;
                Op::Selp {
                    ty: t,
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                    c: i.s(3, Ty::PRED)?,
                }
            }
            "slct" => {
                i.allow(|m| m == "ftz")?;
                i.need(4)?;
                if i.types.len() != 2 {
                    return Err(i.invalid("needs two types"));
                }
                let (t, ct) = (i.types[0], i.types[1]);
                Op::Slct {
                    cty: ct,
                    ftz: i.has("ftz"),
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                    c: i.s(3, ct)?,
                }
            }
            "cvt" => self.cvt(&i)?,
            "cvta" => {
                i.allow(|m| {
                    matches!(m, "to" | "global" | "shared" | "local" | "const" | "param")
                        || m.starts_with("shared::")
                })?;
                i.need(2)?;
                let to = i.has("to");
                let space = match i.space() {
                    Space::Generic => return Err(i.unsupported()),
                    s => s,
                };
                let a = i.s(1, Ty::U64)?;
                let d = self.d(&i, 0)?;
                if space == Space::Global {
                    Op::Mov { d, a }
                } else {
                    Op::Cvta {
                        space,
                        to_generic: !to,
                        d,
                        a,
                    }
                }
            }
            "isspacep" => {
                i.allow(|m| {
                    matches!(m, "global" | "shared" | "local" | "const" | "param")
                        || m.starts_with("shared::")
                })?;
                i.need(2)?;
                let space = match i.space() {
                    Space::Generic => return Err(i.unsupported()),
                    s => s,
                };
                Op::Isspacep {
                    space,
                    d: self.d(&i, 0)?,
                    a: i.s(1, Ty::U64)?,
                }
            }
            "ld" | "ldu" | "st" => self.ld_st(&i, base)?,
            "atom" | "red" => self.atom(&i, base)?,
            "cp" => self.cp(&i)?,
            "bar" | "barrier" => self.bar(&i)?,
            "membar" | "fence" => {
                i.allow(|m| {
                    matches!(
                        m,
                        "cta" | "gl" | "sys" | "gpu" | "cluster" | "sc" | "acq_rel"
                    ) || m == "proxy"
                        || matches!(m, "alias" | "async" | "generic")
                        || m.starts_with("async::")
                        || m.starts_with("shared::")
                })?;
                if i.has("proxy") {
                    Op::Nop
                } else {
                    Op::Fence
                }
            }
            "shfl" | "vote" | "match" | "redux" | "activemask" => self.warp(&i, base)?,
            "bfe" => {
                i.allow(|_| false)?;
                i.need(4)?;
                let t = i.ty()?;
                Op::Bfe {
                    ty: t,
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.u32s(2)?,
                    c: i.u32s(3)?,
                }
            }
            "bfi" => {
                i.allow(|_| false)?;
                i.need(5)?;
                let t = i.ty()?;
                Op::Bfi {
                    ty: t,
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                    c: i.u32s(3)?,
                    e: i.u32s(4)?,
                }
            }
            "prmt" => {
                i.allow(|m| matches!(m, "f4e" | "b4e" | "rc8" | "ecl" | "ecr" | "rc16"))?;
                i.need(4)?;
                let mode = if i.has("f4e") {
                    PrmtMode::F4e
                } else if i.has("b4e") {
                    PrmtMode::B4e
                } else if i.has("rc8") {
                    PrmtMode::Rc8
                } else if i.has("ecl") {
                    PrmtMode::Ecl
                } else if i.has("ecr") {
                    PrmtMode::Ecr
                } else if i.has("rc16") {
                    PrmtMode::Rc16
                } else {
                    PrmtMode::Default
                };
                Op::Prmt {
                    mode,
                    d: self.d(&i, 0)?,
                    a: i.u32s(1)?,
                    b: i.u32s(2)?,
                    c: i.u32s(3)?,
                }
            }
            "shf" => {
                i.allow(|m| matches!(m, "l" | "r" | "wrap" | "clamp"))?;
                i.need(4)?;
                if !(i.has("l") ^ i.has("r")) || !(i.has("wrap") ^ i.has("clamp")) {
                    return Err(i.invalid("needs .l or .r and .wrap or .clamp"));
                }
                Op::Shf {
                    left: i.has("l"),
                    clamp: i.has("clamp"),
                    d: self.d(&i, 0)?,
                    a: i.u32s(1)?,
                    b: i.u32s(2)?,
                    c: i.u32s(3)?,
                }
            }
            "bmsk" => {
                i.allow(|m| matches!(m, "wrap" | "clamp"))?;
                i.need(3)?;
                Op::Bmsk {
                    clamp: i.has("clamp"),
                    d: self.d(&i, 0)?,
                    a: i.u32s(1)?,
                    b: i.u32s(2)?,
                }
            }
            "fns" => {
                i.allow(|_| false)?;
                i.need(4)?;
                Op::Fns {
                    d: self.d(&i, 0)?,
                    a: i.u32s(1)?,
                    b: i.u32s(2)?,
                    c: i.s(3, Ty::S32)?,
                }
            }
            "lop3" => {
                i.allow(|_| false)?;
                i.need(5)?;
                let lut = match i.op(4)? {
                    Operand::Int(v) if (0..=255).contains(v) => *v as u8,
                    _ => return Err(i.invalid("the lookup table must be an 8-bit immediate")),
                };
                let t = i.ty()?;
                Op::Lop3 {
                    d: self.d(&i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                    c: i.s(3, t)?,
                    lut,
                }
            }
            "dp4a" | "dp2a" => {
                i.allow(|m| matches!(m, "lo" | "hi"))?;
                i.need(4)?;
                if i.types.len() != 2 {
                    return Err(i.invalid("needs two types"));
                }
                let sa = i.types[0].kind == Kind::S;
                let sb = i.types[1].kind == Kind::S;
                Op::Dp {
                    four: base == "dp4a",
                    hi: i.has("hi"),
                    sa,
                    sb,
                    d: self.d(&i, 0)?,
                    a: i.u32s(1)?,
                    b: i.u32s(2)?,
                    c: i.s(3, if sa || sb { Ty::S32 } else { Ty::U32 })?,
                }
            }
            "nanosleep" => {
                i.allow(|_| false)?;
                i.need(1)?;
                Op::Nanosleep
            }
            "exit" => Op::Exit,
            "trap" => Op::Trap,
            "nop" | "pmevent" | "brkpt" => Op::Nop,
            "prefetch" | "prefetchu" | "discard" | "applypriority" => Op::Nop,
            // Programmatic dependent launch: the previous grid of the stream is complete
            // before this one starts, so there is never anything to wait for.
            "griddepcontrol" => {
                i.allow(|m| matches!(m, "wait" | "launch_dependents"))?;
                Op::Nop
            }
            "createpolicy" => {
                if i.ops.is_empty() {
                    return Err(i.invalid("needs a destination"));
                }
                Op::Mov {
                    d: self.d(&i, 0)?,
                    a: Src::I(0),
                }
            }
            _ => {
                return Err(LoadError::unsupported(
                    line,
                    format!("instruction `{}`", inst.opcode),
                ))
            }
        })
    }

    fn mov(&mut self, i: &I) -> R<Op> {
        i.allow(|_| false)?;
        i.need(2)?;
        let t = i.ty()?;
        if let Operand::Reg(r) = i.op(1)? {
            if let Some(sp) = special(r) {
                return Ok(Op::Special {
                    d: self.d(i, 0)?,
                    s: sp,
                });
            }
        }
        match (i.op(0)?, i.op(1)?) {
            (Operand::Vec(_), Operand::Vec(_)) => Err(i.unsupported()),
            (_, Operand::Vec(parts)) => {
                let n = parts.len();
                if !matches!(n, 2 | 4) || t.bits as usize % n != 0 {
                    return Err(i.invalid("bad vector"));
                }
                let bits = (t.bits as usize / n) as u8;
                let pt = Ty {
                    kind: Kind::U,
                    bits,
                };
                let mut ps = [Src::I(0); 4];
                for (k, p) in parts.iter().enumerate() {
                    ps[k] = src(i.scope, p, pt, i.line)?;
                }
                Ok(Op::Pack {
                    bits,
                    n: n as u8,
                    d: self.d(i, 0)?,
                    parts: ps,
                })
            }
            (Operand::Vec(parts), _) => {
                let n = parts.len();
                if !matches!(n, 2 | 4) || t.bits as usize % n != 0 {
                    return Err(i.invalid("bad vector"));
                }
                let mut ds = [None; 4];
                for (k, p) in parts.iter().enumerate() {
                    ds[k] = match p {
                        Operand::Sink => None,
                        o => Some(dst(i.scope, o, i.line)?),
                    };
                }
                Ok(Op::Unpack {
                    bits: (t.bits as usize / n) as u8,
                    n: n as u8,
                    ds,
                    a: i.s(1, t)?,
                })
            }
            _ => Ok(Op::Mov {
                d: self.d(i, 0)?,
                a: i.s(1, t)?,
            }),
        }
    }

    fn binary(&mut self, i: &I, base: &str) -> R<Op> {
        i.need(3)?;
        let t = i.ty()?;
        let float = t.is_float() || t.is_packed();
        if i.has("cc") {
            if !matches!(base, "add" | "sub") || !t.is_int() || t.bits < 32 {
                return Err(i.unsupported());
            }
            i.allow(|m| m == "cc")?;
            return Ok(Op::Carry {
                op: if base == "add" {
                    CarryOp::Add
                } else {
                    CarryOp::Sub
                },
                ty: t,
                cin: false,
                cout: true,
                cc: self.cc_reg(i.line)?,
                d: self.d(i, 0)?,
                a: i.s(1, t)?,
                b: i.s(2, t)?,
                c: Src::I(0),
            });
        }
        let op = match base {
            "add" => BinOp::Add,
            "sub" => BinOp::Sub,
            "mul" if i.has("hi") => BinOp::MulHi,
            "mul" => BinOp::MulLo,
            "mul24" if i.has("hi") => BinOp::Mul24Hi,
            "mul24" => BinOp::Mul24Lo,
            "min" => BinOp::Min,
            "max" => BinOp::Max,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "xor" => BinOp::Xor,
            "shl" => BinOp::Shl,
            "shr" => BinOp::Shr,
            "div" => BinOp::Div,
            "rem" => BinOp::Rem,
            _ => BinOp::Copysign,
        };
        if float {
            i.allow(|m| {
                matches!(
                    m,
                    "rn" | "rz" | "rm" | "rp" | "ftz" | "sat" | "approx" | "full" | "NaN" | "relu"
                )
            })?;
            if matches!(op, BinOp::Rem | BinOp::Shl | BinOp::Shr | BinOp::MulHi) {
                return Err(i.unsupported());
            }
            if matches!(op, BinOp::And | BinOp::Or | BinOp::Xor) {
                return Err(i.invalid("bitwise operation on a float type"));
            }
        } else if base == "mul" {
            i.allow(|m| matches!(m, "lo" | "hi" | "wide"))?;
            if i.has("wide") {
                if t.bits > 32 {
                    return Err(i.invalid(".wide of a 64-bit type"));
                }
                return Ok(Op::MulWide {
                    ty: t,
                    d: self.d(i, 0)?,
                    a: i.s(1, t)?,
                    b: i.s(2, t)?,
                });
            }
        } else if base == "mul24" {
            i.allow(|m| matches!(m, "lo" | "hi"))?;
        } else {
            i.allow(|m| m == "sat" && t == Ty::S32 && matches!(op, BinOp::Add | BinOp::Sub))?;
        }
        // Shift amounts are always .u32.
        let bt = if matches!(op, BinOp::Shl | BinOp::Shr) {
            Ty::U32
        } else {
            t
        };
        Ok(Op::Bin {
            op,
            ty: t,
            m: i.fmode(),
            d: self.d(i, 0)?,
            a: i.s(1, t)?,
            b: i.s(2, bt)?,
        })
    }

    fn carry(&mut self, i: &I, base: &str) -> R<Op> {
        i.allow(|m| matches!(m, "cc" | "lo" | "hi"))?;
        let t = i.ty()?;
        if !t.is_int() || t.bits < 32 {
            return Err(i.unsupported());
        }
        let op = match base {
            "addc" => CarryOp::Add,
            "subc" => CarryOp::Sub,
            _ => CarryOp::Mad(i.has("hi")),
        };
        i.need(if base == "madc" { 4 } else { 3 })?;
        Ok(Op::Carry {
            op,
            ty: t,
            cin: true,
            cout: i.has("cc"),
            cc: self.cc_reg(i.line)?,
            d: self.d(i, 0)?,
            a: i.s(1, t)?,
            b: i.s(2, t)?,
            c: if base == "madc" {
                i.s(3, t)?
            } else {
                Src::I(0)
            },
        })
    }

    fn mad(&mut self, i: &I, base: &str) -> R<Op> {
        i.need(4)?;
        let t = i.ty()?;
        if t.is_float() || t.is_packed() {
            i.allow(|m| {
                matches!(
                    m,
                    "rn" | "rz" | "rm" | "rp" | "ftz" | "sat" | "relu" | "oob"
                )
            })?;
            if i.has("oob") {
                return Err(i.unsupported());
            }
            return Ok(Op::Fma {
                ty: t,
                m: i.fmode(),
                d: self.d(i, 0)?,
                a: i.s(1, t)?,
                b: i.s(2, t)?,
                c: i.s(3, t)?,
            });
        }
        if base == "fma" {
            return Err(i.invalid("fma of an integer type"));
        }
        i.allow(|m| matches!(m, "lo" | "hi" | "wide" | "cc" | "sat"))?;
        if i.has("sat") {
            return Err(i.unsupported());
        }
        if i.has("cc") {
            return Ok(Op::Carry {
                op: CarryOp::Mad(i.has("hi")),
                ty: t,
                cin: false,
                cout: true,
                cc: self.cc_reg(i.line)?,
                d: self.d(i, 0)?,
                a: i.s(1, t)?,
                b: i.s(2, t)?,
                c: i.s(3, t)?,
            });
        }
        if i.has("wide") {
            if t.bits > 32 {
                return Err(i.invalid(".wide of a 64-bit type"));
            }
            let wide = Ty {
                kind: t.kind,
                bits: t.bits * 2,
            };
            return Ok(Op::MadWide {
                ty: t,
                d: self.d(i, 0)?,
                a: i.s(1, t)?,
                b: i.s(2, t)?,
                c: i.s(3, wide)?,
            });
        }
        Ok(Op::Mad {
            ty: t,
            hi: i.has("hi"),
            d: self.d(i, 0)?,
            a: i.s(1, t)?,
            b: i.s(2, t)?,
            c: i.s(3, t)?,
        })
    }

    fn unary(&mut self, i: &I, base: &str) -> R<Op> {
        i.need(2)?;
        let t = i.ty()?;
        let op = match base {
            "neg" => UnOp::Neg,
            "abs" => UnOp::Abs,
            "not" => UnOp::Not,
            "cnot" => UnOp::Cnot,
            "sqrt" => UnOp::Sqrt,
            "rsqrt" => UnOp::Rsqrt,
            "rcp" => UnOp::Rcp,
            "ex2" => UnOp::Ex2,
            "lg2" => UnOp::Lg2,
            "sin" => UnOp::Sin,
            "cos" => UnOp::Cos,
            "tanh" => UnOp::Tanh,
            "popc" => UnOp::Popc,
            "clz" => UnOp::Clz,
            "brev" => UnOp::Brev,
            "bfind" if i.has("shiftamt") => UnOp::BfindShift,
            _ => UnOp::Bfind,
        };
        let float_op = matches!(
            op,
            UnOp::Sqrt
                | UnOp::Rsqrt
                | UnOp::Rcp
                | UnOp::Ex2
                | UnOp::Lg2
                | UnOp::Sin
                | UnOp::Cos
                | UnOp::Tanh
        );
        if t.is_float() || t.is_packed() {
            if !(float_op || matches!(op, UnOp::Neg | UnOp::Abs)) {
                return Err(i.invalid("integer operation on a float type"));
            }
            i.allow(|m| matches!(m, "rn" | "rz" | "rm" | "rp" | "ftz" | "approx" | "full"))?;
        } else {
            if float_op {
                return Err(i.invalid("float operation on an integer type"));
            }
            i.allow(|m| m == "shiftamt")?;
        }
        Ok(Op::Un {
            op,
            ty: t,
            m: i.fmode(),
            d: self.d(i, 0)?,
            a: i.s(1, t)?,
        })
    }

    fn setp(&mut self, i: &I, base: &str) -> R<Op> {
        let (dty, t) = if base == "set" {
            if i.types.len() != 2 {
                return Err(i.invalid("needs two types"));
            }
            (i.types[0], i.types[1])
        } else {
            (Ty::PRED, i.ty()?)
        };
        let c = i
            .mods
            .iter()
            .find_map(|m| cmp(m))
            .ok_or_else(|| i.unsupported())?;
        i.allow(|m| cmp(m).is_some() || matches!(m, "and" | "or" | "xor" | "ftz"))?;
        let comb = i.mods.iter().find_map(|m| match *m {
            "and" => Some(BoolOp::And),
            "or" => Some(BoolOp::Or),
            "xor" => Some(BoolOp::Xor),
            _ => None,
        });
        let comb = match comb {
            None => {
                i.need(3)?;
                None
            }
            Some(bop) => {
                i.need(4)?;
                let (s, neg) = i.pred(3)?;
                Some((bop, s, neg))
            }
        };
        let a = i.s(1, t)?;
        let b = i.s(2, t)?;
        if base == "set" {
            if t.is_packed() || dty.is_packed() {
                return Err(i.unsupported());
            }
            return Ok(Op::Set {
                cmp: c,
                dty,
                ty: t,
                d: self.d(i, 0)?,
                a,
                b,
                comb,
            });
        }
        let (dp, dq) = match i.op(0)? {
            Operand::RegPair(p, q) => (reg(i.scope, p, i.line)?, Some(reg(i.scope, q, i.line)?)),
            _ => (self.d(i, 0)?, None),
        };
        if t.is_packed() && dq.is_none() {
            return Err(i.invalid("a packed comparison needs two predicates"));
        }
        Ok(Op::Setp {
            cmp: c,
            ty: t,
            d: dp,
            d2: dq,
            a,
            b,
            comb,
        })
    }

    fn cvt(&mut self, i: &I) -> R<Op> {
        i.allow(|m| rnd(m).is_some() || matches!(m, "ftz" | "sat" | "relu" | "satfinite"))?;
        if i.types.len() != 2 {
            return Err(i.invalid("needs two types"));
        }
        let (dt, st) = (i.types[0], i.types[1]);
        let m = i.fmode();
        if dt.is_packed() {
            if st != Ty::F32 {
                return Err(i.unsupported());
            }
            i.need(3)?;
            return Ok(Op::CvtPack {
                dty: dt,
                m,
                d: self.d(i, 0)?,
                a: i.s(1, st)?,
                b: i.s(2, st)?,
            });
        }
        if st.is_packed() || dt.kind == Kind::Pred || st.kind == Kind::Pred {
            return Err(i.unsupported());
        }
        i.need(2)?;
        // A float-to-float conversion that narrows needs a rounding mode; one to an integer
        // needs an integer rounding (PTX requires them; nvcc always writes them).
        let d = self.d(i, 0)?;
        Ok(Op::Cvt {
            dty: dt,
            sty: st,
            m,
            ext: self.widths.get(d as usize).copied().unwrap_or(64),
            d,
            a: i.s(1, st)?,
        })
    }

    fn ld_st(&mut self, i: &I, base: &str) -> R<Op> {
        i.allow(|m| {
            cache_hint(m)
                || scope_mod(m)
                || sem_mod(m)
                || matches!(
                    m,
                    "global" | "shared" | "local" | "param" | "const" | "v2" | "v4"
                )
                || m.starts_with("shared::")
                || m.starts_with("param::")
        })?;
        i.need(2)?;
        let t = i.ty()?;
        if t.bits > 64 || t.kind == Kind::Pred {
            return Err(i.unsupported());
        }
        let nvec: u8 = if i.has("v2") {
            2
        } else if i.has("v4") {
            4
        } else {
            1
        };
        let space = if base == "ldu" {
            Space::Global
        } else {
            i.space()
        };
        let sem = i.sem();
        let (mem, val) = if base == "st" { (0, 1) } else { (1, 0) };
        let addr = self.addr(i, mem, space)?;
        let vals: Vec<&Operand> = match i.op(val)? {
            Operand::Vec(v) => v.iter().collect(),
            o => vec![o],
        };
        if vals.len() != usize::from(nvec) {
            return Err(i.invalid("vector width and operand count differ"));
        }
        if base == "st" {
            if space == Space::Param && addr.base.is_some() {
                return Err(i.invalid("store to the kernel parameter space"));
            }
            let mut ss = [Src::I(0); 4];
            for (k, v) in vals.iter().enumerate() {
                ss[k] = src(i.scope, v, t, i.line)?;
            }
            Ok(Op::St {
                ty: t,
                sem,
                s: ss,
                n: nvec,
                addr,
            })
        } else {
            let mut dd = [0u32; 4];
            for (k, v) in vals.iter().enumerate() {
                dd[k] = match v {
                    Operand::Sink => self.sink_reg(i.line)?,
                    o => dst(i.scope, o, i.line)?,
                };
            }
            let ext = self.widths.get(dd[0] as usize).copied().unwrap_or(64);
            Ok(Op::Ld {
                ty: t,
                sem,
                ext,
                d: dd,
                n: nvec,
                addr,
            })
        }
    }

    fn atom(&mut self, i: &I, base: &str) -> R<Op> {
        i.allow(|m| {
            scope_mod(m)
                || sem_mod(m)
                || cache_hint(m)
                || matches!(
                    m,
                    "global"
                        | "shared"
                        | "add"
                        | "min"
                        | "max"
                        | "and"
                        | "or"
                        | "xor"
                        | "exch"
                        | "cas"
                        | "inc"
                        | "dec"
                        | "noftz"
                )
                || m.starts_with("shared::")
        })?;
        let t = i.ty()?;
        let op = i
            .mods
            .iter()
            .find_map(|m| match *m {
                "add" => Some(AtomOp::Add),
                "min" => Some(AtomOp::Min),
                "max" => Some(AtomOp::Max),
                "and" => Some(AtomOp::And),
                "or" => Some(AtomOp::Or),
                "xor" => Some(AtomOp::Xor),
                "exch" => Some(AtomOp::Exch),
                "cas" => Some(AtomOp::Cas),
                "inc" => Some(AtomOp::Inc),
                "dec" => Some(AtomOp::Dec),
                _ => None,
            })
            .ok_or_else(|| i.invalid("no operation"))?;
        // What PTX allows: bitwise ops on .b32/.b64, 16-bit only for cas/exch (b16) and
        // float add (f16, bf16, f16x2, bf16x2).
        let ok = match (op, t.kind, t.bits) {
            (_, Kind::Pred, _) => false,
            (AtomOp::Add, Kind::F | Kind::Bf | Kind::H2 | Kind::Bf2, _) => true,
            (AtomOp::Min | AtomOp::Max, Kind::F | Kind::Bf | Kind::H2 | Kind::Bf2, _) => {
                t.bits <= 32
            }
            (_, Kind::F | Kind::Bf | Kind::H2 | Kind::Bf2, _) => false,
            (AtomOp::Cas | AtomOp::Exch, _, 16 | 32 | 64) => true,
            (_, _, 32 | 64) => true,
            _ => false,
        };
        if !ok {
            return Err(i.unsupported());
        }
        let space = match i.space() {
            Space::Local | Space::Param => return Err(i.invalid("atomic in a non-shared space")),
            s => s,
        };
        let (d, rest) = if base == "atom" {
            (Some(self.d(i, 0)?), &i.ops[1..])
        } else {
            (None, i.ops)
        };
        let want = if op == AtomOp::Cas { 3 } else { 2 };
        if rest.len() != want {
            return Err(i.invalid("wrong operand count"));
        }
        let addr = address(i.scope, &rest[0], space, i.line)?;
        let b = src(i.scope, &rest[1], t, i.line)?;
        let c = if op == AtomOp::Cas {
            src(i.scope, &rest[2], t, i.line)?
        } else {
            Src::I(0)
        };
        Ok(Op::Atom {
            op,
            ty: t,
            sem: i.sem(),
            d,
            addr,
            b,
            c,
        })
    }

    fn cp(&mut self, i: &I) -> R<Op> {
        // cp.async.{ca,cg}.shared{::cta}.global{.L2::...} [dst], [src], size{, src_size};
        if i.mods.first() != Some(&"async") {
            return Err(i.unsupported());
        }
        if i.has("commit_group") || i.has("wait_group") || i.has("wait_all") {
            i.allow(|m| matches!(m, "async" | "commit_group" | "wait_group" | "wait_all"))?;
            return Ok(Op::Nop);
        }
        i.allow(|m| {
            matches!(m, "async" | "ca" | "cg" | "shared" | "global")
                || m.starts_with("shared::")
                || m.starts_with("L2::")
        })?;
        // dst, src, size, [src-size], [cache policy with .L2::cache_hint]
        let hint = i.mods.iter().any(|m| m.starts_with("L2::cache_hint"));
        let plain = i.ops.len() - usize::from(hint && i.ops.len() > 3);
        if !(3..=4).contains(&plain) {
            return Err(i.invalid("takes 3 or 4 operands"));
        }
        let size = match i.op(2)? {
            Operand::Int(v @ (4 | 8 | 16)) => *v as u8,
            _ => return Err(i.invalid("copy size must be 4, 8 or 16")),
        };
        let src_size = if plain == 4 { Some(i.u32s(3)?) } else { None };
        Ok(Op::CpAsync {
            dst: self.addr(i, 0, Space::Shared)?,
            src: self.addr(i, 1, Space::Global)?,
            size,
            src_size,
        })
    }

    fn bar(&mut self, i: &I) -> R<Op> {
        // bar.sync / barrier.sync{.aligned} / bar.arrive / bar.red.op.type / bar.warp.sync /
        // barrier.cta.* (PTX 8.0 names).
        i.allow(|m| {
            matches!(
                m,
                "sync" | "arrive" | "red" | "popc" | "and" | "or" | "aligned" | "cta" | "warp"
            )
        })?;
        if i.has("warp") {
            i.need(1)?;
            return Ok(Op::Warp {
                kind: WarpKind::Sync,
                d: None,
                d2: None,
                a: Src::I(0),
                b: Src::I(0),
                c: Src::I(0),
                mask: i.u32s(0)?,
            });
        }
        let kind = if i.has("red") {
            if i.has("popc") {
                BarKind::RedPopc
            } else if i.has("and") {
                BarKind::RedAnd
            } else if i.has("or") {
                BarKind::RedOr
            } else {
                return Err(i.unsupported());
            }
        } else if i.has("arrive") {
            BarKind::Arrive
        } else {
            BarKind::Sync
        };
        match kind {
            BarKind::Sync | BarKind::Arrive => {
                if kind == BarKind::Arrive {
                    i.need(2)?;
                } else {
                    i.need_range(0, 2)?;
                }
                Ok(Op::Bar {
                    kind,
                    id: if i.ops.is_empty() {
                        Src::I(0)
                    } else {
                        i.u32s(0)?
                    },
                    count: if i.ops.len() == 2 {
                        Some(i.u32s(1)?)
                    } else {
                        None
                    },
                    d: None,
                    a: Src::I(0),
                    neg: false,
                })
            }
            _ => {
                i.need_range(3, 4)?;
                let n = i.ops.len();
                let (a, neg) = i.pred(n - 1)?;
                Ok(Op::Bar {
                    kind,
                    id: i.u32s(1)?,
                    count: if n == 4 { Some(i.u32s(2)?) } else { None },
                    d: Some(self.d(i, 0)?),
                    a,
                    neg,
                })
            }
        }
    }

    fn warp(&mut self, i: &I, base: &str) -> R<Op> {
        let full = Src::I(0xffff_ffff);
        match base {
            "activemask" => {
                i.allow(|_| false)?;
                i.need(1)?;
                Ok(Op::Warp {
                    kind: WarpKind::Activemask,
                    d: Some(self.d(i, 0)?),
                    d2: None,
                    a: Src::I(0),
                    b: Src::I(0),
                    c: Src::I(0),
                    mask: full,
                })
            }
            "shfl" => {
                i.allow(|m| matches!(m, "sync" | "up" | "down" | "bfly" | "idx"))?;
                let sync = i.has("sync");
                i.need(if sync { 5 } else { 4 })?;
                let mode = if i.has("up") {
                    ShflMode::Up
                } else if i.has("down") {
                    ShflMode::Down
                } else if i.has("bfly") {
                    ShflMode::Bfly
                } else if i.has("idx") {
                    ShflMode::Idx
                } else {
                    return Err(i.unsupported());
                };
                let (d, p) = match i.op(0)? {
                    Operand::RegPair(a, b) => (
                        match a.as_str() {
                            "_" => self.sink_reg(i.line)?,
                            a => reg(i.scope, a, i.line)?,
                        },
                        Some(reg(i.scope, b, i.line)?),
                    ),
                    _ => (self.d(i, 0)?, None),
                };
                Ok(Op::Warp {
                    kind: WarpKind::Shfl(mode),
                    d: Some(d),
                    d2: p,
                    a: i.u32s(1)?,
                    b: i.u32s(2)?,
                    c: i.u32s(3)?,
                    mask: if sync { i.u32s(4)? } else { full },
                })
            }
            "vote" => {
                i.allow(|m| matches!(m, "sync" | "all" | "any" | "uni" | "ballot"))?;
                let sync = i.has("sync");
                i.need(if sync { 3 } else { 2 })?;
                let mode = if i.has("all") {
                    VoteMode::All
                } else if i.has("any") {
                    VoteMode::Any
                } else if i.has("uni") {
                    VoteMode::Uni
                } else if i.has("ballot") {
                    VoteMode::Ballot
                } else {
                    return Err(i.unsupported());
                };
                let (a, neg) = i.pred(1)?;
                Ok(Op::Warp {
                    kind: WarpKind::Vote(mode, neg),
                    d: Some(self.d(i, 0)?),
                    d2: None,
                    a,
                    b: Src::I(0),
                    c: Src::I(0),
                    mask: if sync { i.u32s(2)? } else { full },
                })
            }
            "match" => {
                i.allow(|m| matches!(m, "sync" | "any" | "all"))?;
                i.need(3)?;
                let t = i.ty()?;
                if !matches!(t.bits, 32 | 64) {
                    return Err(i.unsupported());
                }
                let all = i.has("all");
                let (d, p) = match i.op(0)? {
                    Operand::RegPair(a, b) if all => {
                        (reg(i.scope, a, i.line)?, Some(reg(i.scope, b, i.line)?))
                    }
                    _ => (self.d(i, 0)?, None),
                };
                Ok(Op::Warp {
                    kind: WarpKind::Match { all, bits: t.bits },
                    d: Some(d),
                    d2: p,
                    a: i.s(1, t)?,
                    b: Src::I(0),
                    c: Src::I(0),
                    mask: i.u32s(2)?,
                })
            }
            _ => {
                // redux.sync.op.type d, a, membermask
                i.allow(|m| matches!(m, "sync" | "add" | "min" | "max" | "and" | "or" | "xor"))?;
                i.need(3)?;
                let t = i.ty()?;
                if !t.is_int() || t.bits != 32 {
                    return Err(i.unsupported());
                }
                let op = if i.has("add") {
                    ReduxOp::Add
                } else if i.has("min") {
                    ReduxOp::Min
                } else if i.has("max") {
                    ReduxOp::Max
                } else if i.has("and") {
                    ReduxOp::And
                } else if i.has("or") {
                    ReduxOp::Or
                } else if i.has("xor") {
                    ReduxOp::Xor
                } else {
                    return Err(i.unsupported());
                };
                Ok(Op::Warp {
                    kind: WarpKind::Redux(op, t),
                    d: Some(self.d(i, 0)?),
                    d2: None,
                    a: i.s(1, t)?,
                    b: Src::I(0),
                    c: Src::I(0),
                    mask: i.u32s(2)?,
                })
            }
        }
    }
}

pub(super) fn reg(scope: &Scope, name: &str, line: usize) -> R<u32> {
    scope
        .reg(name)
        .ok_or_else(|| LoadError::invalid(line, format!("undeclared register {name}")))
}

fn dst(scope: &Scope, o: &Operand, line: usize) -> R<u32> {
    match o {
        Operand::Reg(r) | Operand::Sym(r) => reg(scope, r, line),
        _ => Err(LoadError::invalid(
            line,
            format!("expected a destination register, found {o:?}"),
        )),
    }
}

fn imm_int(v: i128, t: Ty) -> u64 {
    let bits = if t.kind == Kind::Pred { 64 } else { t.bits };
    (v as u64) & mask(bits)
}

fn src(scope: &Scope, o: &Operand, t: Ty, line: usize) -> R<Src> {
    Ok(match o {
        Operand::Reg(r) => {
            if special(r).is_some() {
                return Err(LoadError::unsupported(
                    line,
                    format!("special register {r} outside mov"),
                ));
            }
            Src::R(reg(scope, r, line)?)
        }
        Operand::Int(v) => {
            if t.is_float() && t.bits >= 32 {
                // An integer literal in a float instruction is its value.
                match t.bits {
                    32 => Src::I(u64::from((*v as f32).to_bits())),
                    _ => Src::I((*v as f64).to_bits()),
                }
            } else {
                // f16/bf16 and packed immediates are their bits.
                Src::I(imm_int(*v, t))
            }
        }
        Operand::F32(b) => match (t.kind, t.bits) {
            (Kind::F, 64) => Src::I(f64::from(f32::from_bits(*b)).to_bits()),
            (Kind::F, 16) => Src::I(u64::from(crate::num::f64_to_f16(
                f64::from(f32::from_bits(*b)),
                Rnd::Rn,
            ))),
            (Kind::Bf, _) => Src::I(u64::from(crate::num::f64_to_bf16(
                f64::from(f32::from_bits(*b)),
                Rnd::Rn,
            ))),
            _ => Src::I(u64::from(*b)),
        },
        Operand::F64(b) => match (t.kind, t.bits) {
            (Kind::F, 32) => Src::I(u64::from((f64::from_bits(*b) as f32).to_bits())),
            (Kind::F, 16) => Src::I(u64::from(crate::num::f64_to_f16(
                f64::from_bits(*b),
                Rnd::Rn,
            ))),
            (Kind::Bf, _) => Src::I(u64::from(crate::num::f64_to_bf16(
                f64::from_bits(*b),
                Rnd::Rn,
            ))),
            (Kind::F, 64) => Src::I(*b),
            _ => Src::I(*b & mask(t.bits)),
        },
        Operand::Sym(s) => {
            if let Some(r) = scope.reg(s) {
                return Ok(Src::R(r));
            }
            match scope.var(s).as_ref() {
                Some(Loc::Shared(o)) | Some(Loc::Local(o)) | Some(Loc::KParam(o)) => Src::I(*o),
                Some(Loc::Global(i)) => Src::Global(*i, 0),
                None => {
                    return Err(LoadError::invalid(
                        line,
                        format!("unknown symbol {s} (a function address needs indirect calls, which are not supported)"),
                    ))
                }
            }
        }
        _ => {
            return Err(LoadError::invalid(
                line,
                format!("unexpected operand {o:?}"),
            ))
        }
    })
}

fn address(scope: &Scope, o: &Operand, space: Space, line: usize) -> R<Addr> {
    let Operand::Mem(base, offset) = o else {
        return Err(LoadError::invalid(
            line,
            format!("expected [address], found {o:?}"),
        ));
    };
    let offset = *offset;
    let at = |space, off: u64| -> R<Addr> {
        Ok(Addr {
            space,
            base: None,
            global: None,
            offset: i64::try_from(off)
                .ok()
                .and_then(|o| o.checked_add(offset))
                .ok_or_else(|| LoadError::invalid(line, "address offset overflows"))?,
        })
    };
    match base.as_ref() {
        Operand::Reg(r) => Ok(Addr {
            space,
            base: Some(reg(scope, r, line)?),
            global: None,
            offset,
        }),
        Operand::Int(v) => Ok(Addr {
            space,
            base: None,
            global: None,
            offset: offset.wrapping_add(*v as i64),
        }),
        Operand::Sym(s) => {
            if let Some(r) = scope.reg(s) {
                return Ok(Addr {
                    space,
                    base: Some(r),
                    global: None,
                    offset,
                });
            }
            match scope.var(s).as_ref() {
                Some(Loc::KParam(o)) if matches!(space, Space::Param | Space::Generic) => {
                    at(Space::Param, *o)
                }
                Some(Loc::Local(o))
                    if matches!(space, Space::Param | Space::Local | Space::Generic) =>
                {
                    at(Space::Local, *o)
                }
                Some(Loc::Shared(o)) if matches!(space, Space::Shared | Space::Generic) => {
                    at(Space::Shared, *o)
                }
                Some(Loc::Global(i)) if matches!(space, Space::Global | Space::Generic) => {
                    Ok(Addr {
                        space: Space::Global,
                        base: None,
                        global: Some(*i),
                        offset,
                    })
                }
                Some(_) => Err(LoadError::invalid(
                    line,
                    format!("{s} is not in the instruction's state space"),
                )),
                None => Err(LoadError::invalid(line, format!("unknown symbol {s}"))),
            }
        }
        other => Err(LoadError::invalid(
            line,
            format!("bad address base {other:?}"),
        )),
    }
}

fn special(name: &str) -> Option<Special> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((reg, d)) = name.split_once('.') {
        let d = dim(d)?;
        return Some(match reg {
            "%tid" => Special::Tid(d),
            "%ntid" => Special::Ntid(d),
            "%ctaid" => Special::Ctaid(d),
            "%nctaid" => Special::Nctaid(d),
            _ => return None,
        });
    }
    if let Some(n) = name.strip_prefix("%envreg") {
        return n
            .parse::<u8>()
            .ok()
            .filter(|n| *n < 32)
            .map(Special::EnvReg);
    }
    Some(match name {
        "%laneid" => Special::LaneId,
        "%warpid" => Special::WarpId,
        "%nwarpid" => Special::NWarpId,
        "%clock" => Special::Clock,
        "%clock64" => Special::Clock64,
        "%globaltimer" => Special::GlobalTimer,
        "%globaltimer_lo" => Special::GlobalTimerLo,
        "%globaltimer_hi" => Special::GlobalTimerHi,
        "%smid" => Special::SmId,
        "%nsmid" => Special::NSmId,
        "%gridid" => Special::GridId,
        "%lanemask_eq" => Special::LaneMaskEq,
        "%lanemask_lt" => Special::LaneMaskLt,
        "%lanemask_le" => Special::LaneMaskLe,
        "%lanemask_gt" => Special::LaneMaskGt,
        "%lanemask_ge" => Special::LaneMaskGe,
        "%dynamic_smem_size" => Special::DynamicSmem,
        "%total_smem_size" => Special::TotalSmem,
        _ => return None,
    })
}

fn cmp(m: &str) -> Option<Cmp> {
    Some(match m {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

fn rnd(m: &str) -> Option<Rnd> {
    Some(match m {
        "rn" => Rnd::Rn,
        "rz" => Rnd::Rz,
        "rm" => Rnd::Rm,
        "rp" => Rnd::Rp,
        "rni" => Rnd::Rni,
        "rzi" => Rnd::Rzi,
        "rmi" => Rnd::Rmi,
        "rpi" => Rnd::Rpi,
        "rna" => Rnd::Rna,
        _ => return None,
    })
}
