//! The parsed form of a PTX module, before name resolution.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Const,
    Shared,
    Local,
    Param,
}

#[derive(Clone, Debug)]
pub struct VarDecl {
    pub space: Space,
    pub align: u32,
    /// Element size in bytes.
    pub elem: u32,
    pub name: String,
    /// Array length; `Some(0)` for an unsized (`extern []`) array; `None` for a scalar.
    pub count: Option<u64>,
    /// Initial value bytes (zero-filled to the size), if any.
    pub init: Option<Vec<u8>>,
    pub line: usize,
}

impl VarDecl {
    pub fn size(&self) -> u64 {
        u64::from(self.elem) * self.count.unwrap_or(1)
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
    /// A symbol: a variable, a parameter, a label or a function.
    Sym(String),
    /// `[base+offset]`.
    Mem(Box<Operand>, i64),
    /// `{a, b, ...}`.
    Vec(Vec<Operand>),
    /// `(a, b, ...)` in a call.
    List(Vec<Operand>),
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
}

impl ParamDecl {
    pub fn size(&self) -> u64 {
        u64::from(self.elem) * self.count.unwrap_or(1)
    }
}

#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    pub entry: bool,
    pub params: Vec<ParamDecl>,
    pub rets: Vec<ParamDecl>,
    /// `None` for a declaration without a body.
    pub body: Option<Vec<Stmt>>,
    pub line: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Module {
    pub vars: Vec<VarDecl>,
    pub functions: Vec<Function>,
}
