//! The parsed form of a PTX module, before name resolution.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Const,
    Shared,
    Local,
    Param,
}

/// How a module-scope symbol links (`.visible`, `.extern`, `.weak`, `.common`, or none:
/// private to its module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Linkage {
    #[default]
    Internal,
    Visible,
    /// A declaration of a symbol another module defines.
    Extern,
    /// A definition another module's strong definition overrides.
    Weak,
    /// `.common`: like weak; the largest definition wins.
    Common,
}

#[derive(Clone, Debug)]
pub struct VarDecl {
    pub space: Space,
    pub linkage: Linkage,
    pub align: u32,
    /// Element size in bytes.
    pub elem: u32,
    pub name: String,
    /// Array length; `Some(0)` for an unsized (`extern []`) array; `None` for a scalar.
    pub count: Option<u64>,
    /// Initial value bytes (at most the variable's size; the rest is zero), if any.
    pub init: Option<Vec<u8>>,
    /// Symbolic initializer entries: (byte offset, symbol, added offset), each the address
    /// of a module variable or a function (`.global .u64 p = {sym}`, `generic(sym)`).
    pub init_syms: Vec<(u64, String, i64)>,
    pub line: usize,
}

impl VarDecl {
    /// Size in bytes; `None` if `elem * count` overflows.
    pub fn size(&self) -> Option<u64> {
        u64::from(self.elem).checked_mul(self.count.unwrap_or(1))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Reg(String),
    /// `%r|%p`: a value and a predicate result (shfl, setp with two outputs).
    RegPair(String, String),
    /// A predicate source negated with `!`.
    NotReg(String),
    Int(i128),
    F32(u32),
    F64(u64),
    /// A symbol: a variable, a parameter, a label, a function, or a register named without
    /// `%` (inline assembly declares `r0`, `p`).
    Sym(String),
    /// `[base+offset]`.
    Mem(Box<Operand>, i64),
    /// `{a, b, ...}`.
    Vec(Vec<Operand>),
    /// `(a, b, ...)` in a call.
    List(Vec<Operand>),
    /// `_`: a sink destination, or an ignored source.
    Sink,
}

#[derive(Clone, Debug)]
pub struct Inst {
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<Operand>,
    pub line: usize,
    /// Operands the parser could not read (the decoder decides whether that means
    /// unsupported syntax of an unknown instruction, or malformed PTX).
    pub malformed: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    /// `.reg .ty names`: each name with its `<N>` count, if any.
    Reg {
        elem: u32,
        names: Vec<(String, Option<u32>)>,
        line: usize,
    },
    Var(VarDecl),
    Label(String, usize),
    Inst(Inst),
    Open,
    Close,
}

#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: String,
    pub elem: u32,
    pub align: u32,
    pub count: Option<u64>,
    pub line: usize,
}

impl ParamDecl {
    /// Size in bytes; `None` if `elem * count` overflows.
    pub fn size(&self) -> Option<u64> {
        u64::from(self.elem).checked_mul(self.count.unwrap_or(1))
    }
}

/// Performance directives of an entry (`.maxntid`, `.reqntid`, `.minnctapersm`, `.maxnreg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
    pub minnctapersm: Option<u32>,
    pub maxnreg: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    pub entry: bool,
    pub linkage: Linkage,
    pub params: Vec<ParamDecl>,
    pub rets: Vec<ParamDecl>,
    /// `None` for a declaration without a body.
    pub body: Option<Vec<Stmt>>,
    pub directives: Directives,
    pub line: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Module {
    /// `.version major.minor`, as `major * 10 + minor` (0 if absent).
    pub version: u32,
    /// `.target sm_NN` (0 if absent).
    pub target: u32,
    pub vars: Vec<VarDecl>,
    pub functions: Vec<Function>,
}
