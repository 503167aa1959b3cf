//! The decoded form a kernel runs from: one flat instruction list per entry (device
//! functions inlined), registers as indices, labels as instruction numbers, every symbol
//! resolved to a state space and an offset. Nothing here is re-parsed at run time.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unsigned integers and untyped bits (`.u*`, `.b*`).
    U,
    S,
    F,
    /// bfloat16.
    Bf,
    /// Two f16 packed in 32 bits (`.f16x2`), low half first.
    H2,
    /// Two bf16 packed in 32 bits (`.bf16x2`).
    Bf2,
    /// Two u16 packed in 32 bits (`.u16x2`, only in `min`/`max`), low half first.
    U2,
    /// Two s16 packed in 32 bits (`.s16x2`, only in `min`/`max`), low half first.
    S2,
    Pred,
}

/// A PTX scalar type: its kind and width in bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ty {
    pub kind: Kind,
    pub bits: u8,
}

impl Ty {
    pub const PRED: Ty = Ty {
        kind: Kind::Pred,
        bits: 1,
    };
    pub const U32: Ty = Ty {
        kind: Kind::U,
        bits: 32,
    };
    pub const U64: Ty = Ty {
        kind: Kind::U,
        bits: 64,
    };
    pub const S32: Ty = Ty {
        kind: Kind::S,
        bits: 32,
    };
    pub const F32: Ty = Ty {
        kind: Kind::F,
        bits: 32,
    };
    pub const F64: Ty = Ty {
        kind: Kind::F,
        bits: 64,
    };
    pub const F16: Ty = Ty {
        kind: Kind::F,
        bits: 16,
    };
    pub const BF16: Ty = Ty {
        kind: Kind::Bf,
        bits: 16,
    };

    pub fn parse(s: &str) -> Option<Ty> {
        let (kind, bits) = match s {
            "pred" => return Some(Ty::PRED),
            "u8" | "b8" => (Kind::U, 8),
            "u16" | "b16" => (Kind::U, 16),
            "u32" | "b32" => (Kind::U, 32),
            "u64" | "b64" => (Kind::U, 64),
            "s8" => (Kind::S, 8),
            "s16" => (Kind::S, 16),
            "s32" => (Kind::S, 32),
            "s64" => (Kind::S, 64),
            "f16" => (Kind::F, 16),
            "bf16" => (Kind::Bf, 16),
            "f32" => (Kind::F, 32),
            "f64" => (Kind::F, 64),
            "f16x2" => (Kind::H2, 32),
            "bf16x2" => (Kind::Bf2, 32),
            "u16x2" => (Kind::U2, 32),
            "s16x2" => (Kind::S2, 32),
            _ => return None,
        };
        Some(Ty { kind, bits })
    }

    pub fn bytes(self) -> usize {
        (usize::from(self.bits) / 8).max(1)
    }

    /// A scalar float type (f16, bf16, f32, f64).
    pub fn is_float(self) -> bool {
        matches!(self.kind, Kind::F | Kind::Bf)
    }

    /// Two 16-bit floats packed in 32 bits.
    pub fn is_packed(self) -> bool {
        matches!(self.kind, Kind::H2 | Kind::Bf2)
    }

    /// Two 16-bit integers packed in 32 bits (`.u16x2`, `.s16x2`).
    pub fn is_packed_int(self) -> bool {
        matches!(self.kind, Kind::U2 | Kind::S2)
    }

    /// The type of one half of a packed type.
    pub fn half(self) -> Ty {
        match self.kind {
            Kind::H2 => Ty::F16,
            Kind::Bf2 => Ty::BF16,
            Kind::U2 => Ty {
                kind: Kind::U,
                bits: 16,
            },
            Kind::S2 => Ty {
                kind: Kind::S,
                bits: 16,
            },
            _ => self,
        }
    }

    pub fn is_int(self) -> bool {
        matches!(self.kind, Kind::U | Kind::S)
    }
}

/// A source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    R(u32),
    I(u64),
    /// The device address of module global `index`, plus an offset (known at launch).
    Global(u32, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    /// Per-thread memory: `.local` variables and call parameters.
    Local,
    /// The kernel's parameter buffer (read-only).
    Param,
    /// A generic address: shared, local or parameter window, else global.
    Generic,
}

/// `base register + offset`, in `space`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub space: Space,
    pub base: Option<u32>,
    pub global: Option<u32>,
    pub offset: i64,
}

/// Memory ordering of a global load, store or atomic (`.relaxed`, `.acquire`, `.release`,
/// `.acq_rel`; plain and `.volatile` accesses are relaxed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sem {
    Relaxed,
    Acquire,
    Release,
    AcqRel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Copysign,
    /// `mul24.lo`/`mul24.hi`: 24-bit operands.
    Mul24Lo,
    Mul24Hi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Abs,
    Not,
    Cnot,
    Sqrt,
    Rsqrt,
    Rcp,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Popc,
    Clz,
    Brev,
    Bfind,
    /// `bfind.shiftamt`.
    BfindShift,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rnd {
    /// No rounding modifier (exact, or the default nearest).
    None,
    Rn,
    Rz,
    Rm,
    Rp,
    /// Round to an integral value (`.rni .rzi .rmi .rpi`).
    Rni,
    Rzi,
    Rmi,
    Rpi,
    /// `.rna`: nearest, ties away from zero (cvt to tf32).
    Rna,
}

/// Modifiers of a float instruction: rounding, flush of subnormals to zero, saturation to
/// [0, 1], NaN propagation (`min/max.NaN`) and `.relu` (negative results become 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FMode {
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
    pub nan: bool,
    pub relu: bool,
}

impl FMode {
    pub const DEFAULT: FMode = FMode {
        rnd: Rnd::None,
        ftz: false,
        sat: false,
        nan: false,
        relu: false,
    };

    /// Whether the result is the plain IEEE round-to-nearest one.
    pub fn is_default(self) -> bool {
        matches!(self.rnd, Rnd::None | Rnd::Rn) && !self.ftz && !self.sat && !self.nan && !self.relu
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
    Exch,
    Cas,
    Inc,
    Dec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

/// A warp-wide collective. Every one but `Activemask` names the lanes taking part with a
/// member mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarpKind {
    Shfl(ShflMode),
    /// `neg`: the predicate source is negated.
    Vote(VoteMode, bool),
    /// `match.any` (all: false) or `match.all` (true) over `bits`-wide values.
    Match {
        all: bool,
        bits: u8,
    },
    Redux(ReduxOp, Ty),
    /// `bar.warp.sync` / `__syncwarp`.
    Sync,
    Activemask,
}

/// Block barrier flavours (`bar.sync`, `bar.arrive`, `bar.red.{popc,and,or}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Sync,
    Arrive,
    RedPopc,
    RedAnd,
    RedOr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrmtMode {
    Default,
    F4e,
    B4e,
    Rc8,
    Ecl,
    Ecr,
    Rc16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestpKind {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarryOp {
    Add,
    Sub,
    /// `mad.lo.cc`/`madc.lo` (hi: false) and `.hi` (true).
    Mad(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    Clock,
    Clock64,
    GlobalTimer,
    GlobalTimerLo,
    GlobalTimerHi,
    SmId,
    NSmId,
    GridId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    DynamicSmem,
    TotalSmem,
    /// `%envreg<N>`: driver-defined; 1 and 2 hold the cooperative-launch grid workspace.
    EnvReg(u8),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Mov {
        d: u32,
        a: Src,
    },
    Special {
        d: u32,
        s: Special,
    },
    Bin {
        op: BinOp,
        ty: Ty,
        m: FMode,
        d: u32,
        a: Src,
        b: Src,
    },
    Un {
        op: UnOp,
        ty: Ty,
        m: FMode,
        d: u32,
        a: Src,
    },
    /// `mul.wide`: `d` is twice as wide as `ty`.
    MulWide {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
    },
    /// `mad.lo/.hi` (integers): `d = (a * b) + c` keeping the low or high half.
    Mad {
        ty: Ty,
        hi: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    MadWide {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Fma {
        ty: Ty,
        m: FMode,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// Extended-precision arithmetic through the carry flag (`add.cc`, `addc`, `sub.cc`,
    /// `subc`, `mad.cc`, `madc`): `cin` reads the flag, `cout` writes it.
    Carry {
        op: CarryOp,
        ty: Ty,
        cin: bool,
        cout: bool,
        cc: u32,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `sad`: `d = c + |a - b|`.
    Sad {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `mad24.lo/.hi`.
    Mad24 {
        ty: Ty,
        hi: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        d: u32,
        d2: Option<u32>,
        a: Src,
        b: Src,
        comb: Option<(BoolOp, Src, bool)>,
    },
    /// `set.cmp.dtype.stype`: all ones / 1.0 (float `dty`) when true, else 0.
    Set {
        cmp: Cmp,
        dty: Ty,
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        comb: Option<(BoolOp, Src, bool)>,
    },
    Selp {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `slct.dtype.ctype d, a, b, c`: `c >= 0 ? a : b`.
    Slct {
        cty: Ty,
        ftz: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Testp {
        kind: TestpKind,
        ty: Ty,
        d: u32,
        a: Src,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        m: FMode,
        /// Width of the destination register (a narrower signed result is sign-extended).
        ext: u8,
        d: u32,
        a: Src,
    },
    /// `cvt.rn.f16x2.f32 d, a, b` (and bf16x2): `d = {lo: cvt(b), hi: cvt(a)}`.
    CvtPack {
        dty: Ty,
        m: FMode,
        d: u32,
        a: Src,
        b: Src,
    },
    /// `mov.b64 d, {a, b}`: `n` parts of `bits` each, first part lowest.
    Pack {
        bits: u8,
        n: u8,
        d: u32,
        parts: [Src; 4],
    },
    /// `mov.b64 {a, b}, s`: the inverse (a sink `_` is `None`).
    Unpack {
        bits: u8,
        n: u8,
        ds: [Option<u32>; 4],
        a: Src,
    },
    Ld {
        ty: Ty,
        sem: Sem,
        /// Width of the destination registers: a signed value narrower than them is
        /// sign-extended to it (PTX's rule for wide operands).
        ext: u8,
        d: [u32; 4],
        n: u8,
        addr: Addr,
    },
    St {
        ty: Ty,
        sem: Sem,
        s: [Src; 4],
        n: u8,
        addr: Addr,
    },
    /// Address of a generic-window location (`cvta`): `to_generic` adds the window base.
    Cvta {
        space: Space,
        to_generic: bool,
        d: u32,
        a: Src,
    },
    /// `isspacep.space d, a`.
    Isspacep {
        space: Space,
        d: u32,
        a: Src,
    },
    Atom {
        op: AtomOp,
        ty: Ty,
        sem: Sem,
        d: Option<u32>,
        addr: Addr,
        b: Src,
        c: Src,
    },
    /// `cp.async` (executed at once: the copy is complete when the instruction retires, so
    /// `cp.async.wait_*` has nothing to wait for): `size` bytes, of which the first
    /// `src_size` are read and the rest zero-filled.
    CpAsync {
        dst: Addr,
        src: Addr,
        size: u8,
        src_size: Option<Src>,
    },
    Bra {
        target: u32,
    },
    /// A block barrier: `id` names the barrier (0..16), `count` the threads it waits for
    /// (all of the block if `None`); `bar.red` reduces `a` into `d`.
    Bar {
        kind: BarKind,
        id: Src,
        count: Option<Src>,
        d: Option<u32>,
        a: Src,
        neg: bool,
    },
    Warp {
        kind: WarpKind,
        d: Option<u32>,
        /// Second result: shfl's in-range predicate, match.all's predicate.
        d2: Option<u32>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    Bfe {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Bfi {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
        e: Src,
    },
    Prmt {
        mode: PrmtMode,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// Funnel shift: `shf.l/.r.wrap/.clamp.b32 d, a, b, c` (a low word, b high word).
    Shf {
        left: bool,
        clamp: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bmsk.clamp/.wrap.b32 d, a (position), b (width)`.
    Bmsk {
        clamp: bool,
        d: u32,
        a: Src,
        b: Src,
    },
    /// `fns.b32 d, mask, base, offset`: the n-th set bit.
    Fns {
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `lop3.b32 d, a, b, c, lut`.
    Lop3 {
        d: u32,
        a: Src,
        b: Src,
        c: Src,
        lut: u8,
    },
    /// `dp4a`/`dp2a` (lo: dp2a.lo), signedness of a and b.
    Dp {
        four: bool,
        hi: bool,
        sa: bool,
        sb: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `fence`/`membar`: a sequentially consistent fence (stronger than any scope needs).
    Fence,
    /// `nanosleep`: the thread yields its time slice.
    Nanosleep,
    /// `vprintf(fmt, args)`: `fmt` and `args` are the local offsets of the call's
    /// parameters, `ret` of its return value.
    Printf {
        fmt: u64,
        args: u64,
        ret: Option<u64>,
    },
    /// `__assertfail(message, file, line, function, charsize)` (local offsets of the
    /// parameters): prints CUDA's assertion message and fails the launch.
    AssertFail {
        msg: u64,
        file: u64,
        line: u64,
        func: u64,
    },
    Exit,
    Trap,
    Nop,
    // Specialised forms of the commonest shapes, chosen at decode time (same semantics).
    /// `ld.shared.{b,u,s,f}32 d, [base+off]`.
    LdShared32 {
        d: u32,
        base: u32,
        off: i64,
    },
    /// `st.shared.{b,u,s,f}32 [base+off], s`.
    StShared32 {
        s: Src,
        base: u32,
        off: i64,
    },
    /// `ld.global.{b,u,s,f}32 d, [base+off]` (relaxed).
    LdGlobal32 {
        d: u32,
        base: u32,
        off: i64,
    },
    /// `fma.rn.f32` / `mad.f32`.
    FmaF32 {
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `add.{s,u}32`.
    AddI32 {
        d: u32,
        a: Src,
        b: Src,
    },
    /// `add.{s,u}64`.
    AddI64 {
        d: u32,
        a: Src,
        b: Src,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub op: Op,
    pub guard: Option<(u32, bool)>,
    pub line: u32,
}

impl Op {
    /// The specialised form of this instruction, if it has one.
    pub fn specialise(self) -> Op {
        match self {
            Op::Ld {
                ty,
                sem: Sem::Relaxed,
                d,
                n: 1,
                ext,
                addr:
                    Addr {
                        space: Space::Shared,
                        base: Some(base),
                        global: None,
                        offset,
                    },
            } if ty.bits == 32
                && (matches!(ty.kind, Kind::U | Kind::F) || (ty.kind == Kind::S && ext <= 32)) =>
            {
                Op::LdShared32 {
                    d: d[0],
                    base,
                    off: offset,
                }
            }
            Op::Ld {
                ty,
                sem: Sem::Relaxed,
                d,
                n: 1,
                ext,
                addr:
                    Addr {
                        space: Space::Global,
                        base: Some(base),
                        global: None,
                        offset,
                    },
            } if ty.bits == 32
                && (matches!(ty.kind, Kind::U | Kind::F) || (ty.kind == Kind::S && ext <= 32)) =>
            {
                Op::LdGlobal32 {
                    d: d[0],
                    base,
                    off: offset,
                }
            }
            Op::St {
                ty,
                sem: Sem::Relaxed,
                s,
                n: 1,
                addr:
                    Addr {
                        space: Space::Shared,
                        base: Some(base),
                        global: None,
                        offset,
                    },
            } if ty.bits == 32 && matches!(ty.kind, Kind::U | Kind::S | Kind::F) => {
                Op::StShared32 {
                    s: s[0],
                    base,
                    off: offset,
                }
            }
            Op::Fma { ty, m, d, a, b, c } if ty == Ty::F32 && m.is_default() => {
                Op::FmaF32 { d, a, b, c }
            }
            Op::Bin {
                op: BinOp::Add,
                ty,
                d,
                a,
                b,
                ..
            } if ty.is_int() && ty.bits == 32 => Op::AddI32 { d, a, b },
            Op::Bin {
                op: BinOp::Add,
                ty,
                d,
                a,
                b,
                ..
            } if ty.is_int() && ty.bits == 64 => Op::AddI64 { d, a, b },
            other => other,
        }
    }

    /// Whether the instruction waits for other threads (the scheduler's yield points).
    pub fn is_collective(&self) -> bool {
        matches!(self, Op::Bar { .. } | Op::Warp { .. })
    }
}
