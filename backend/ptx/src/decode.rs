//! AST to IR: resolves registers, labels and symbols, lays out shared, local and call-parameter
//! memory, and inlines device-function calls (with their own registers and labels), so an
//! entry becomes one flat instruction list. Anything unsupported is refused here, with its
//! line, never at run time.

use std::collections::HashMap;

use crate::ast::{self, Function, Operand, Stmt, VarDecl};
use crate::error::LoadError;
use crate::ir::*;

/// Greatest depth of nested device-function calls (recursion is refused).
const MAX_INLINE_DEPTH: usize = 16;

/// One kernel parameter as the driver API packs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalSpace {
    Global,
    Const,
}

/// A module-scope `.global` or `.const` variable; the executor allocates and initialises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVar {
    pub name: String,
    pub space: GlobalSpace,
    pub size: u64,
    pub align: u32,
    pub init: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<ParamInfo>,
    pub param_size: u32,
    pub code: Vec<Inst>,
    pub nregs: u32,
    /// Bytes of static shared memory; dynamic shared memory starts here (aligned to 16).
    pub shared_static: u32,
    pub local_size: u32,
}

impl Kernel {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }
}

#[derive(Clone, Copy, Debug)]
enum Loc {
    KParam(u64),
    Local(u64),
    Shared(u64),
    Global(u32),
}

struct ModuleCtx<'a> {
    funcs: HashMap<&'a str, &'a Function>,
    globals: HashMap<String, u32>,
    shared: HashMap<String, u64>,
    shared_size: u64,
}

struct Decoder<'a> {
    m: &'a ModuleCtx<'a>,
    code: Vec<Inst>,
    nregs: u32,
    local_size: u64,
    shared_size: u64,
}

#[derive(Default, Clone)]
struct Scope {
    regs: HashMap<String, u32>,
    vars: HashMap<String, Loc>,
}

fn align_up(v: u64, a: u64) -> u64 {
    let a = a.max(1);
    v.div_ceil(a) * a
}

pub fn decode(m: &ast::Module) -> Result<(Vec<Kernel>, Vec<GlobalVar>), LoadError> {
    let mut globals = Vec::new();
    let mut gidx = HashMap::new();
    let mut shared = HashMap::new();
    let mut shared_size = 0u64;
    let mut extern_shared = Vec::new();
    for v in &m.vars {
        match v.space {
            ast::Space::Global | ast::Space::Const => {
                if v.count == Some(0) {
                    return Err(LoadError::unsupported(
                        v.line,
                        format!("unsized global {}", v.name),
                    ));
                }
                gidx.insert(v.name.clone(), globals.len() as u32);
                globals.push(GlobalVar {
                    name: v.name.clone(),
                    space: if v.space == ast::Space::Global {
                        GlobalSpace::Global
                    } else {
                        GlobalSpace::Const
                    },
                    size: v.size(),
                    align: v.align,
                    init: v.init.clone().unwrap_or_else(|| vec![0; v.size() as usize]),
                });
            }
            ast::Space::Shared if v.count == Some(0) => extern_shared.push(v.name.clone()),
            ast::Space::Shared => {
                shared_size = align_up(shared_size, v.align.into());
                shared.insert(v.name.clone(), shared_size);
                shared_size += v.size();
            }
            _ => {
                return Err(LoadError::unsupported(
                    v.line,
                    format!("module-scope variable {}", v.name),
                ))
            }
        }
    }
    let funcs: HashMap<&str, &Function> = m
        .functions
        .iter()
        .filter(|f| f.body.is_some())
        .map(|f| (f.name.as_str(), f))
        .collect();
    let ctx = ModuleCtx {
        funcs,
        globals: gidx,
        shared,
        shared_size,
    };
    let mut kernels = Vec::new();
    for f in m.functions.iter().filter(|f| f.entry) {
        let Some(body) = &f.body else { continue };
        let mut d = Decoder {
            m: &ctx,
            code: Vec::new(),
            nregs: 0,
            local_size: 0,
            shared_size: ctx.shared_size,
        };
        let mut scope = Scope::default();
        let mut params = Vec::new();
        let mut off = 0u64;
        for p in &f.params {
            off = align_up(off, p.align.into());
            params.push(ParamInfo {
                offset: off as u32,
                size: p.size() as u32,
            });
            scope.vars.insert(p.name.clone(), Loc::KParam(off));
            off += p.size();
        }
        for (name, o) in &ctx.shared {
            scope.vars.insert(name.clone(), Loc::Shared(*o));
        }
        for (name, i) in &ctx.globals {
            scope.vars.insert(name.clone(), Loc::Global(*i));
        }
        // Function-scope shared variables are laid out first, so dynamic shared memory can
        // start after all static shared memory.
        for s in body {
            if let Stmt::Var(v) = s {
                if v.space == ast::Space::Shared && v.count != Some(0) {
                    d.shared_size = align_up(d.shared_size, v.align.into());
                    scope
                        .vars
                        .insert(v.name.clone(), Loc::Shared(d.shared_size));
                    d.shared_size += v.size();
                }
            }
        }
        let dyn_base = align_up(d.shared_size, 16);
        for name in &extern_shared {
            scope.vars.insert(name.clone(), Loc::Shared(dyn_base));
        }
        d.body(body, &mut scope, None, 0, dyn_base)?;
        d.code.push(Inst {
            op: Op::Exit,
            guard: None,
            line: f.line as u32,
        });
        if d.shared_size > u64::from(u32::MAX) || d.local_size > u64::from(u32::MAX) {
            return Err(LoadError::unsupported(
                f.line,
                "kernel memory larger than 4 GiB",
            ));
        }
        kernels.push(Kernel {
            name: f.name.clone(),
            params,
            param_size: off as u32,
            code: d.code,
            nregs: d.nregs.max(1),
            shared_static: dyn_base as u32,
            local_size: d.local_size as u32,
        });
    }
    Ok((kernels, globals))
}

impl<'a> Decoder<'a> {
    fn new_reg(&mut self) -> u32 {
        self.nregs += 1;
        self.nregs - 1
    }

    fn alloc_local(&mut self, size: u64, align: u32) -> u64 {
        self.local_size = align_up(self.local_size, align.into());
        let o = self.local_size;
        self.local_size += size;
        o
    }

    /// Decodes a function body into `self.code`. `ret_target` is where `ret` jumps when
    /// inlined (None: `ret` ends the thread).
    fn body(
        &mut self,
        body: &'a [Stmt],
        scope: &mut Scope,
        ret_target: Option<&mut Vec<usize>>,
        depth: usize,
        dyn_base: u64,
    ) -> Result<(), LoadError> {
        let mut labels: HashMap<&str, u32> = HashMap::new();
        let mut fixups: Vec<(usize, &str, usize)> = Vec::new();
        let mut rets = ret_target;
        for s in body {
            match s {
                Stmt::Open | Stmt::Close => {}
                Stmt::Reg { names, .. } => {
                    for (name, count) in names {
                        match count {
                            Some(n) => {
                                for i in 0..*n {
                                    let r = self.new_reg();
                                    scope.regs.insert(format!("{name}{i}"), r);
                                }
                            }
                            None => {
                                let r = self.new_reg();
                                scope.regs.insert(name.clone(), r);
                            }
                        }
                    }
                }
                Stmt::Var(v) => self.var(v, scope, dyn_base)?,
                Stmt::Label(l, _) => {
                    labels.insert(l.as_str(), self.code.len() as u32);
                }
                Stmt::Inst(i) => {
                    let line = i.line;
                    let guard = match &i.guard {
                        None => None,
                        Some((p, neg)) => Some((reg(scope, p, line)?, *neg)),
                    };
                    let base = i.opcode.split('.').next().unwrap_or("");
                    match base {
                        "bra" => {
                            let Some(Operand::Sym(l)) = i.operands.first() else {
                                return Err(LoadError::invalid(line, "bra needs a label"));
                            };
                            fixups.push((self.code.len(), l.as_str(), line));
                            self.code.push(Inst {
                                op: Op::Bra { target: 0 },
                                guard,
                                line: line as u32,
                            });
                        }
                        "ret" => match rets.as_deref_mut() {
                            Some(v) => {
                                v.push(self.code.len());
                                self.code.push(Inst {
                                    op: Op::Bra { target: 0 },
                                    guard,
                                    line: line as u32,
                                });
                            }
                            None => self.code.push(Inst {
                                op: Op::Exit,
                                guard,
                                line: line as u32,
                            }),
                        },
                        "call" => {
                            if guard.is_some() {
                                return Err(LoadError::unsupported(line, "predicated call"));
                            }
                            self.call(i, scope, depth, dyn_base)?;
                        }
                        _ => {
                            if let Some(why) = &i.malformed {
                                return Err(if KNOWN.contains(&base) {
                                    LoadError::invalid(line, format!("`{}`: {why}", i.opcode))
                                } else {
                                    LoadError::unsupported(
                                        line,
                                        format!("instruction `{}`", i.opcode),
                                    )
                                });
                            }
                            let op = self.op(i, scope)?.specialise();
                            self.code.push(Inst {
                                op,
                                guard,
                                line: line as u32,
                            });
                        }
                    }
                }
            }
        }
        for (at, label, line) in fixups {
            let t = *labels
                .get(label)
                .ok_or_else(|| LoadError::invalid(line, format!("unknown label {label}")))?;
            if let Op::Bra { target } = &mut self.code[at].op {
                *target = t;
            }
        }
        Ok(())
    }

    fn var(&mut self, v: &VarDecl, scope: &mut Scope, dyn_base: u64) -> Result<(), LoadError> {
        match v.space {
            ast::Space::Local | ast::Space::Param => {
                if v.init.is_some() {
                    return Err(LoadError::unsupported(
                        v.line,
                        "initialised local variables",
                    ));
                }
                let o = self.alloc_local(v.size(), v.align);
                scope.vars.insert(v.name.clone(), Loc::Local(o));
            }
            ast::Space::Shared => {
                if v.count == Some(0) {
                    scope.vars.insert(v.name.clone(), Loc::Shared(dyn_base));
                } else if !scope.vars.contains_key(&v.name) {
                    // Inlined functions' shared variables (kernels' own were laid out up front).
                    self.shared_size = align_up(self.shared_size, v.align.into());
                    scope
                        .vars
                        .insert(v.name.clone(), Loc::Shared(self.shared_size));
                    self.shared_size += v.size();
                }
            }
            _ => {
                return Err(LoadError::unsupported(
                    v.line,
                    format!("function-scope {:?} variable {}", v.space, v.name),
                ))
            }
        }
        Ok(())
    }

    fn call(
        &mut self,
        i: &'a ast::Inst,
        scope: &mut Scope,
        depth: usize,
        dyn_base: u64,
    ) -> Result<(), LoadError> {
        let line = i.line;
        if depth >= MAX_INLINE_DEPTH {
            return Err(LoadError::unsupported(
                line,
                "call nesting deeper than 16 (recursion is not supported)",
            ));
        }
        let (rets, name, args) = match i.operands.as_slice() {
            [Operand::List(r), Operand::Sym(n), Operand::List(a)] => {
                (r.as_slice(), n, a.as_slice())
            }
            [Operand::Sym(n), Operand::List(a)] => (&[][..], n, a.as_slice()),
            [Operand::List(r), Operand::Sym(n)] => (r.as_slice(), n, &[][..]),
            [Operand::Sym(n)] => (&[][..], n, &[][..]),
            _ => return Err(LoadError::unsupported(line, "indirect or malformed call")),
        };
        let callee = *self.m.funcs.get(name.as_str()).ok_or_else(|| {
            LoadError::invalid(line, format!("call to undefined function {name}"))
        })?;
        let Some(body) = &callee.body else {
            return Err(LoadError::invalid(line, format!("{name} has no body")));
        };
        if callee.params.len() != args.len() || callee.rets.len() != rets.len() {
            return Err(LoadError::invalid(
                line,
                format!("call to {name} with the wrong number of arguments"),
            ));
        }
        let mut inner = Scope {
            regs: HashMap::new(),
            vars: scope
                .vars
                .iter()
                .filter(|(_, l)| matches!(l, Loc::Shared(_) | Loc::Global(_)))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        };
        for (decl, arg) in callee
            .params
            .iter()
            .zip(args)
            .chain(callee.rets.iter().zip(rets))
        {
            let Operand::Sym(s) = arg else {
                return Err(LoadError::unsupported(
                    line,
                    "call arguments must be .param variables",
                ));
            };
            match scope.vars.get(s) {
                Some(Loc::Local(o)) => {
                    inner.vars.insert(decl.name.clone(), Loc::Local(*o));
                }
                _ => {
                    return Err(LoadError::invalid(
                        line,
                        format!("call argument {s} is not a .param variable"),
                    ))
                }
            }
        }
        let mut ret_sites = Vec::new();
        self.body(body, &mut inner, Some(&mut ret_sites), depth + 1, dyn_base)?;
        let end = self.code.len() as u32;
        for at in ret_sites {
            if let Op::Bra { target } = &mut self.code[at].op {
                *target = end;
            }
        }
        Ok(())
    }

    fn op(&mut self, i: &ast::Inst, scope: &Scope) -> Result<Op, LoadError> {
        let line = i.line;
        let parts: Vec<&str> = i.opcode.split('.').collect();
        let base = parts[0];
        let mods = &parts[1..];
        let unsupported = || LoadError::unsupported(line, format!("instruction `{}`", i.opcode));
        let types: Vec<Ty> = mods.iter().filter_map(|m| Ty::parse(m)).collect();
        let ty = types.last().copied();
        let has = |m: &str| mods.contains(&m);
        let ops = &i.operands;
        let n = ops.len();
        let need = |k: usize| -> Result<(), LoadError> {
            if n == k {
                Ok(())
            } else {
                Err(LoadError::invalid(
                    line,
                    format!("`{}` takes {k} operands, found {n}", i.opcode),
                ))
            }
        };
        let ty_or = |t: Option<Ty>| {
            t.ok_or_else(|| LoadError::invalid(line, format!("`{}` has no type", i.opcode)))
        };
        let d = |k: usize| dst(scope, &ops[k], line);
        let s = |k: usize, t: Ty| src(scope, &ops[k], t, line);
        Ok(match base {
            "mov" => {
                need(2)?;
                let t = ty_or(ty)?;
                if let Operand::Reg(r) = &ops[1] {
                    if let Some(sp) = special(r) {
                        return Ok(Op::Special { d: d(0)?, s: sp });
                    }
                }
                if let Operand::Vec(_) = &ops[0] {
                    return Err(unsupported());
                }
                Op::Mov {
                    d: d(0)?,
                    a: s(1, t)?,
                }
            }
            "add" | "sub" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" | "div"
            | "rem" | "copysign" => {
                need(3)?;
                let t = ty_or(ty)?;
                let op = match base {
                    "add" => BinOp::Add,
                    "sub" => BinOp::Sub,
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
                if has("cc") || has("relu") {
                    return Err(unsupported());
                }
                // Shift amounts are always .u32.
                let bt = if matches!(op, BinOp::Shl | BinOp::Shr) {
                    Ty {
                        kind: Kind::U,
                        bits: 32,
                    }
                } else {
                    t
                };
                Op::Bin {
                    op,
                    ty: t,
                    d: d(0)?,
                    a: s(1, t)?,
                    b: s(2, bt)?,
                }
            }
            "mul" => {
                need(3)?;
                let t = ty_or(ty)?;
                if has("wide") {
                    Op::MulWide {
                        ty: t,
                        d: d(0)?,
                        a: s(1, t)?,
                        b: s(2, t)?,
                    }
                } else if has("hi") {
                    Op::Bin {
                        op: BinOp::MulHi,
                        ty: t,
                        d: d(0)?,
                        a: s(1, t)?,
                        b: s(2, t)?,
                    }
                } else {
                    Op::Bin {
                        op: BinOp::MulLo,
                        ty: t,
                        d: d(0)?,
                        a: s(1, t)?,
                        b: s(2, t)?,
                    }
                }
            }
            "mad" | "fma" => {
                need(4)?;
                let t = ty_or(ty)?;
                if t.is_float() {
                    Op::Fma {
                        ty: t,
                        d: d(0)?,
                        a: s(1, t)?,
                        b: s(2, t)?,
                        c: s(3, t)?,
                    }
                } else if has("wide") {
                    let wide = Ty {
                        kind: t.kind,
                        bits: t.bits * 2,
                    };
                    Op::MadWide {
                        ty: t,
                        d: d(0)?,
                        a: s(1, t)?,
                        b: s(2, t)?,
                        c: s(3, wide)?,
                    }
                } else if has("cc") {
                    return Err(unsupported());
                } else {
                    Op::Mad {
                        ty: t,
                        hi: has("hi"),
                        d: d(0)?,
                        a: s(1, t)?,
                        b: s(2, t)?,
                        c: s(3, t)?,
                    }
                }
            }
            "neg" | "abs" | "not" | "cnot" | "sqrt" | "rsqrt" | "rcp" | "ex2" | "lg2" | "sin"
            | "cos" | "tanh" | "popc" | "clz" | "brev" | "bfind" => {
                need(2)?;
                let t = ty_or(ty)?;
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
                    _ => UnOp::Bfind,
                };
                if has("shiftamt") {
                    return Err(unsupported());
                }
                Op::Un {
                    op,
                    ty: t,
                    d: d(0)?,
                    a: s(1, t)?,
                }
            }
            "setp" => {
                let t = ty_or(ty)?;
                let cmp = mods.iter().find_map(|m| cmp(m)).ok_or_else(unsupported)?;
                let comb = mods.iter().find_map(|m| match *m {
                    "and" => Some(BoolOp::And),
                    "or" => Some(BoolOp::Or),
                    "xor" => Some(BoolOp::Xor),
                    _ => None,
                });
                let (dp, dq) = match &ops.first() {
                    Some(Operand::RegPair(p, q)) => {
                        (reg(scope, p, line)?, Some(reg(scope, q, line)?))
                    }
                    Some(o) => (dst(scope, o, line)?, None),
                    None => return Err(LoadError::invalid(line, "setp without operands")),
                };
                let comb = match comb {
                    None => {
                        need(3)?;
                        None
                    }
                    Some(bop) => {
                        need(4)?;
                        let (c, neg) = match &ops[3] {
                            Operand::NotReg(r) => (Src::R(reg(scope, r, line)?), true),
                            _ => (s(3, Ty::PRED)?, false),
                        };
                        Some((bop, c, neg))
                    }
                };
                Op::Setp {
                    cmp,
                    ty: t,
                    d: dp,
                    d2: dq,
                    a: s(1, t)?,
                    b: s(2, t)?,
                    comb,
                }
            }
            "selp" => {
                need(4)?;
                let t = ty_or(ty)?;
                Op::Selp {
                    ty: t,
                    d: d(0)?,
                    a: s(1, t)?,
                    b: s(2, t)?,
                    c: s(3, Ty::PRED)?,
                }
            }
            "cvt" => {
                need(2)?;
                if types.len() != 2 {
                    return Err(unsupported());
                }
                let rnd = mods.iter().find_map(|m| rnd(m)).unwrap_or(Rnd::None);
                Op::Cvt {
                    dty: types[0],
                    sty: types[1],
                    rnd,
                    sat: has("sat"),
                    d: d(0)?,
                    a: s(1, types[1])?,
                }
            }
            "cvta" => {
                need(2)?;
                let to = has("to");
                let space = if has("global") || has("const") || has("param") {
                    Space::Global
                } else if has("shared") {
                    Space::Shared
                } else if has("local") {
                    Space::Local
                } else {
                    return Err(unsupported());
                };
                let a = s(
                    1,
                    Ty {
                        kind: Kind::U,
                        bits: 64,
                    },
                )?;
                if space == Space::Global {
                    Op::Mov { d: d(0)?, a }
                } else {
                    Op::Cvta {
                        space,
                        to_generic: !to,
                        d: d(0)?,
                        a,
                    }
                }
            }
            "ld" | "st" => {
                need(2)?;
                let t = ty_or(ty)?;
                let nvec: u8 = if has("v2") {
                    2
                } else if has("v4") {
                    4
                } else {
                    1
                };
                let space = if has("global") {
                    Space::Global
                } else if has("shared") {
                    Space::Shared
                } else if has("local") {
                    Space::Local
                } else if has("param") {
                    Space::Param
                } else if has("const") {
                    Space::Global
                } else {
                    Space::Generic
                };
                let (mem, val) = if base == "ld" {
                    (&ops[1], &ops[0])
                } else {
                    (&ops[0], &ops[1])
                };
                let addr = address(scope, mem, space, line)?;
                let vals: Vec<&Operand> = match val {
                    Operand::Vec(v) => v.iter().collect(),
                    o => vec![o],
                };
                if vals.len() != usize::from(nvec) {
                    return Err(LoadError::invalid(
                        line,
                        "vector width and operand count differ",
                    ));
                }
                if base == "ld" {
                    let mut dd = [0u32; 4];
                    for (k, v) in vals.iter().enumerate() {
                        dd[k] = dst(scope, v, line)?;
                    }
                    Op::Ld {
                        ty: t,
                        d: dd,
                        n: nvec,
                        addr,
                    }
                } else {
                    let mut ss = [Src::I(0); 4];
                    for (k, v) in vals.iter().enumerate() {
                        ss[k] = src(scope, v, t, line)?;
                    }
                    Op::St {
                        ty: t,
                        s: ss,
                        n: nvec,
                        addr,
                    }
                }
            }
            "atom" | "red" => {
                let t = ty_or(ty)?;
                let op = mods
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
                    .ok_or_else(unsupported)?;
                if has("v2") || has("v4") || t.bits < 32 || t.kind == Kind::Bf {
                    return Err(unsupported());
                }
                let space = if has("shared") {
                    Space::Shared
                } else if has("global") {
                    Space::Global
                } else {
                    Space::Generic
                };
                let (dreg, rest) = if base == "atom" {
                    (Some(d(0)?), &ops[1..])
                } else {
                    (None, &ops[..])
                };
                let want = if op == AtomOp::Cas { 3 } else { 2 };
                if rest.len() != want {
                    return Err(LoadError::invalid(
                        line,
                        format!("`{}` has the wrong operand count", i.opcode),
                    ));
                }
                let addr = address(scope, &rest[0], space, line)?;
                let b = src(scope, &rest[1], t, line)?;
                let c = if op == AtomOp::Cas {
                    src(scope, &rest[2], t, line)?
                } else {
                    Src::I(0)
                };
                Op::Atom {
                    op,
                    ty: t,
                    d: dreg,
                    addr,
                    b,
                    c,
                }
            }
            "bar" | "barrier" => {
                if has("red") || has("arrive") {
                    return Err(unsupported());
                }
                Op::Bar
            }
            "membar" | "fence" => Op::Nop,
            "exit" => Op::Exit,
            "trap" => Op::Trap,
            "shfl" => {
                need(5)?;
                let mode = if has("up") {
                    ShflMode::Up
                } else if has("down") {
                    ShflMode::Down
                } else if has("bfly") {
                    ShflMode::Bfly
                } else if has("idx") {
                    ShflMode::Idx
                } else {
                    return Err(unsupported());
                };
                let u = Ty {
                    kind: Kind::U,
                    bits: 32,
                };
                let (dd, p) = match &ops[0] {
                    Operand::RegPair(a, b) => (reg(scope, a, line)?, Some(reg(scope, b, line)?)),
                    o => (dst(scope, o, line)?, None),
                };
                Op::Shfl {
                    mode,
                    d: dd,
                    p,
                    a: s(1, u)?,
                    b: s(2, u)?,
                    c: s(3, u)?,
                }
            }
            "vote" => {
                let mode = if has("all") {
                    VoteMode::All
                } else if has("any") {
                    VoteMode::Any
                } else if has("uni") {
                    VoteMode::Uni
                } else if has("ballot") {
                    VoteMode::Ballot
                } else {
                    return Err(unsupported());
                };
                if n < 2 {
                    return Err(LoadError::invalid(line, "vote needs operands"));
                }
                let (a, neg) = match &ops[1] {
                    Operand::NotReg(r) => (Src::R(reg(scope, r, line)?), true),
                    _ => (s(1, Ty::PRED)?, false),
                };
                Op::Vote {
                    mode,
                    d: d(0)?,
                    a,
                    neg,
                }
            }
            "bfe" => {
                need(4)?;
                let t = ty_or(ty)?;
                let u = Ty {
                    kind: Kind::U,
                    bits: 32,
                };
                Op::Bfe {
                    ty: t,
                    d: d(0)?,
                    a: s(1, t)?,
                    b: s(2, u)?,
                    c: s(3, u)?,
                }
            }
            "bfi" => {
                need(5)?;
                let t = ty_or(ty)?;
                let u = Ty {
                    kind: Kind::U,
                    bits: 32,
                };
                Op::Bfi {
                    ty: t,
                    d: d(0)?,
                    a: s(1, t)?,
                    b: s(2, t)?,
                    c: s(3, u)?,
                    e: s(4, u)?,
                }
            }
            "prmt" => {
                need(4)?;
                if mods.len() > 1 {
                    return Err(unsupported());
                }
                let u = Ty {
                    kind: Kind::U,
                    bits: 32,
                };
                Op::Prmt {
                    d: d(0)?,
                    a: s(1, u)?,
                    b: s(2, u)?,
                    c: s(3, u)?,
                }
            }
            "activemask" => Op::Vote {
                mode: VoteMode::Ballot,
                d: d(0)?,
                a: Src::I(1),
                neg: false,
            },
            "nop" | "pmevent" => Op::Nop,
            _ => return Err(unsupported()),
        })
    }
}

/// Instructions this executor implements (their operand syntax errors are malformed PTX).
const KNOWN: &[&str] = &[
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
    "selp",
    "cvt",
    "cvta",
    "ld",
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
    "bfe",
    "bfi",
    "prmt",
    "activemask",
    "trap",
    "nop",
];

fn reg(scope: &Scope, name: &str, line: usize) -> Result<u32, LoadError> {
    scope
        .regs
        .get(name)
        .copied()
        .ok_or_else(|| LoadError::invalid(line, format!("undeclared register {name}")))
}

fn dst(scope: &Scope, o: &Operand, line: usize) -> Result<u32, LoadError> {
    match o {
        Operand::Reg(r) => reg(scope, r, line),
        _ => Err(LoadError::invalid(
            line,
            format!("expected a destination register, found {o:?}"),
        )),
    }
}

fn src(scope: &Scope, o: &Operand, t: Ty, line: usize) -> Result<Src, LoadError> {
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
            if t.is_float() {
                // An integer literal in a float instruction is its value.
                match t.bits {
                    32 => Src::I(u64::from((*v as f32).to_bits())),
                    64 => Src::I((*v as f64).to_bits()),
                    _ => return Err(LoadError::unsupported(line, "16-bit float literal")),
                }
            } else {
                Src::I(*v as u64)
            }
        }
        Operand::F32(b) => match t.bits {
            64 => Src::I(f64::from(f32::from_bits(*b)).to_bits()),
            _ => Src::I(u64::from(*b)),
        },
        Operand::F64(b) => match t.bits {
            32 => Src::I(u64::from((f64::from_bits(*b) as f32).to_bits())),
            _ => Src::I(*b),
        },
        Operand::Sym(s) => match scope.vars.get(s) {
            Some(Loc::Shared(o)) | Some(Loc::Local(o)) => Src::I(*o),
            Some(Loc::Global(i)) => Src::Global(*i, 0),
            Some(Loc::KParam(_)) => {
                return Err(LoadError::unsupported(
                    line,
                    "the address of a kernel parameter",
                ))
            }
            None => return Err(LoadError::invalid(line, format!("unknown symbol {s}"))),
        },
        _ => {
            return Err(LoadError::invalid(
                line,
                format!("unexpected operand {o:?}"),
            ))
        }
    })
}

fn address(scope: &Scope, o: &Operand, space: Space, line: usize) -> Result<Addr, LoadError> {
    let Operand::Mem(base, offset) = o else {
        return Err(LoadError::invalid(
            line,
            format!("expected [address], found {o:?}"),
        ));
    };
    let offset = *offset;
    Ok(match base.as_ref() {
        Operand::Reg(r) => Addr {
            space,
            base: Some(reg(scope, r, line)?),
            global: None,
            offset,
        },
        Operand::Int(v) => Addr {
            space,
            base: None,
            global: None,
            offset: offset.wrapping_add(*v as i64),
        },
        Operand::Sym(s) => match scope.vars.get(s) {
            Some(Loc::KParam(o)) if space == Space::Param => Addr {
                space: Space::Param,
                base: None,
                global: None,
                offset: *o as i64 + offset,
            },
            Some(Loc::Local(o))
                if matches!(space, Space::Param | Space::Local | Space::Generic) =>
            {
                Addr {
                    space: Space::Local,
                    base: None,
                    global: None,
                    offset: *o as i64 + offset,
                }
            }
            Some(Loc::Shared(o)) if matches!(space, Space::Shared | Space::Generic) => Addr {
                space: Space::Shared,
                base: None,
                global: None,
                offset: *o as i64 + offset,
            },
            Some(Loc::Global(i)) if matches!(space, Space::Global | Space::Generic) => Addr {
                space: Space::Global,
                base: None,
                global: Some(*i),
                offset,
            },
            Some(_) => {
                return Err(LoadError::invalid(
                    line,
                    format!("{s} is not in the instruction's state space"),
                ))
            }
            None => return Err(LoadError::invalid(line, format!("unknown symbol {s}"))),
        },
        other => {
            return Err(LoadError::invalid(
                line,
                format!("bad address base {other:?}"),
            ))
        }
    })
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
    Some(match name {
        "%laneid" => Special::LaneId,
        "%warpid" => Special::WarpId,
        "%nwarpid" => Special::NWarpId,
        "%clock" => Special::Clock,
        "%clock64" => Special::Clock64,
        "%globaltimer" => Special::GlobalTimer,
        "%smid" => Special::SmId,
        "%nsmid" => Special::NSmId,
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
        _ => return None,
    })
}
