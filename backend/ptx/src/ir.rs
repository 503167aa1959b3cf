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
            _ => return None,
        };
        Some(Ty { kind, bits })
    }

    pub fn bytes(self) -> usize {
        (usize::from(self.bits) / 8).max(1)
    }

    pub fn is_float(self) -> bool {
        matches!(self.kind, Kind::F | Kind::Bf)
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
    /// A generic address: shared or local window, else global.
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
    SmId,
    NSmId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    DynamicSmem,
    TotalSmem,
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
        d: u32,
        a: Src,
        b: Src,
    },
    Un {
        op: UnOp,
        ty: Ty,
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
    Selp {
        ty: Ty,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        rnd: Rnd,
        sat: bool,
        d: u32,
        a: Src,
    },
    Ld {
        ty: Ty,
        d: [u32; 4],
        n: u8,
        addr: Addr,
    },
    St {
        ty: Ty,
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
    Atom {
        op: AtomOp,
        ty: Ty,
        d: Option<u32>,
        addr: Addr,
        b: Src,
        c: Src,
    },
    Bra {
        target: u32,
    },
    Bar,
    Shfl {
        mode: ShflMode,
        d: u32,
        p: Option<u32>,
        a: Src,
        b: Src,
        c: Src,
    },
    Vote {
        mode: VoteMode,
        d: u32,
        a: Src,
        neg: bool,
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
        d: u32,
        a: Src,
        b: Src,
        c: Src,
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
        let f32t = Ty {
            kind: Kind::F,
            bits: 32,
        };
        match self {
            Op::Ld {
                ty,
                d,
                n: 1,
                addr:
                    Addr {
                        space: Space::Shared,
                        base: Some(base),
                        global: None,
                        offset,
                    },
            } if ty.bits == 32 && ty.kind != Kind::Bf => Op::LdShared32 {
                d: d[0],
                base,
                off: offset,
            },
            Op::St {
                ty,
                s,
                n: 1,
                addr:
                    Addr {
                        space: Space::Shared,
                        base: Some(base),
                        global: None,
                        offset,
                    },
            } if ty.bits == 32 && ty.kind != Kind::Bf => Op::StShared32 {
                s: s[0],
                base,
                off: offset,
            },
            Op::Fma { ty, d, a, b, c } if ty == f32t => Op::FmaF32 { d, a, b, c },
            Op::Bin {
                op: BinOp::Add,
                ty,
                d,
                a,
                b,
            } if matches!(ty.kind, Kind::U | Kind::S) && ty.bits == 32 => Op::AddI32 { d, a, b },
            Op::Bin {
                op: BinOp::Add,
                ty,
                d,
                a,
                b,
            } if matches!(ty.kind, Kind::U | Kind::S) && ty.bits == 64 => Op::AddI64 { d, a, b },
            other => other,
        }
    }

    /// Whether the instruction waits for other threads (the scheduler's yield points).
    pub fn is_collective(&self) -> bool {
        matches!(self, Op::Bar | Op::Shfl { .. } | Op::Vote { .. })
    }
}
