//! AST to IR: resolves registers, labels and symbols, lays out shared, local and call-parameter
//! memory, and inlines device-function calls (with their own registers and labels), so an
//! entry becomes one flat instruction list. Anything unsupported is refused here, with its
//! line, never at run time; so is anything beyond the limits a real driver enforces
//! (parameter space, static shared memory, constant bank, variable sizes).
//!
//! Instruction decoding proper is in [`inst`].

mod inst;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::ast::{self, Function, Linkage, Operand, Stmt, VarDecl};
use crate::error::LoadError;
use crate::ir::*;

/// Greatest depth of nested device-function calls (recursion is refused).
const MAX_INLINE_DEPTH: usize = 16;
/// CUDA 12.1+'s kernel parameter space limit, in bytes (PTX ISA 8.1 and later).
pub const MAX_PARAM_BYTES: u64 = 32_764;
/// The limit for PTX older than ISA 8.1.
pub const MAX_PARAM_BYTES_OLD: u64 = 4_096;

/// The parameter space a module of PTX ISA `version` (major * 10 + minor) may use.
fn param_limit(version: u32) -> u64 {
    if version != 0 && version < 81 {
        MAX_PARAM_BYTES_OLD
    } else {
        MAX_PARAM_BYTES
    }
}
/// Statically allocated shared memory per kernel (ptxas refuses more).
pub const MAX_STATIC_SHARED: u64 = 48 * 1024;
/// The `.const` bank.
pub const MAX_CONST_BYTES: u64 = 64 * 1024;
/// All `.global` variables of a module together.
pub const MAX_GLOBAL_BYTES: u64 = 1 << 36;
/// Local memory per thread (CUDA's limit).
pub const MAX_LOCAL_BYTES: u64 = 512 * 1024;
/// Virtual registers of one kernel (after inlining).
pub const MAX_REGISTERS: u32 = 1 << 20;
/// Decoded instructions of one kernel (after inlining), and of a whole module.
pub const MAX_KERNEL_CODE: usize = 1 << 20;
pub const MAX_MODULE_CODE: usize = 1 << 22;

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

/// An address stored in a variable's initial value: at byte `offset`, the device address
/// of module global `target` plus `addend` (`.global .u64 p = {sym}` / `generic(sym)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloc {
    pub offset: u64,
    pub target: u32,
    pub addend: i64,
}

/// A module-scope `.global` or `.const` variable; the executor allocates and initialises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVar {
    pub name: String,
    pub space: GlobalSpace,
    pub size: u64,
    pub align: u32,
    /// The initial bytes written in the PTX (at most `size`; the rest is zero).
    pub init: Vec<u8>,
    /// Addresses of other globals in the initial value, patched once all are placed
    /// ([`crate::Module::init_image`]).
    pub relocs: Vec<Reloc>,
}

/// What a driver reports about a kernel (`cuFuncGetAttribute`) and enforces at launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelAttrs {
    /// Most threads per block a launch may use (1024, or less under `.maxntid`/`.reqntid`).
    pub max_threads_per_block: u32,
    /// `.reqntid`: the only block shape a launch may use.
    pub reqntid: Option<[u32; 3]>,
    pub maxntid: Option<[u32; 3]>,
    pub minnctapersm: Option<u32>,
    /// Static shared memory, bytes.
    pub shared_bytes: u32,
    /// Local memory per thread, bytes.
    pub local_bytes: u32,
    /// Parameter space, bytes.
    pub param_bytes: u32,
    /// `.version` as major * 10 + minor.
    pub ptx_version: u32,
    /// `.target sm_NN` as NN.
    pub target: u32,
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
    pub attrs: KernelAttrs,
    /// Most instructions one thread can execute: `Some` when every branch goes forward and
    /// nothing sleeps (each instruction runs at most once per thread; calls are inlined), so
    /// a launch costs at most this many instructions per thread; `None` when it may loop.
    pub max_steps: Option<u32>,
}

/// [`Kernel::max_steps`] of decoded code.
fn straight_line_steps(code: &[Inst]) -> Option<u32> {
    for (i, inst) in code.iter().enumerate() {
        match inst.op {
            Op::Bra { target } if target as usize <= i => return None,
            Op::Nanosleep => return None,
            _ => {}
        }
    }
    u32::try_from(code.len()).ok()
}

impl Kernel {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    pub fn attributes(&self) -> &KernelAttrs {
        &self.attrs
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    KParam(u64),
    Local(u64),
    Shared(u64),
    Global(u32),
}

/// An external device function the executor provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    Vprintf,
    AssertFail,
}

fn builtin(name: &str) -> Option<Builtin> {
    match name {
        "vprintf" => Some(Builtin::Vprintf),
        "__assertfail" => Some(Builtin::AssertFail),
        _ => None,
    }
}

struct ModuleCtx<'a> {
    funcs: HashMap<&'a str, &'a Function>,
    globals: HashMap<&'a str, u32>,
    /// The same, as every scope sees it.
    global_names: Rc<HashMap<String, u32>>,
    /// Module-scope shared variables (static ones; unsized `extern` ones are dynamic).
    shared: HashMap<&'a str, &'a VarDecl>,
    version: u32,
    target: u32,
}

/// Name scopes: `{ }` blocks open a scope (inline assembly redeclares `r0`, `p` in each);
/// leaving it restores what it shadowed.
#[derive(Default)]
struct Scope {
    /// Module globals (one map for the whole module) and the kernel's module-scope shared
    /// variables (one per kernel), under the names declared here.
    globals: Rc<HashMap<String, u32>>,
    kernel_shared: Rc<HashMap<String, Loc>>,
    regs: HashMap<String, u32>,
    /// `%r<N>` declarations: prefix to (first register, count), so `%r17` needs no name
    /// of its own.
    vecs: HashMap<String, (u32, u32)>,
    vars: HashMap<String, Loc>,
    undo: Vec<Undo>,
    marks: Vec<usize>,
}

enum Undo {
    Reg(String, Option<u32>),
    Vec(String, Option<(u32, u32)>),
    Var(String, Option<Loc>),
}

impl Scope {
    /// The variable a name refers to.
    fn var(&self, name: &str) -> Option<Loc> {
        self.vars
            .get(name)
            .or_else(|| self.kernel_shared.get(name))
            .copied()
            .or_else(|| self.globals.get(name).map(|i| Loc::Global(*i)))
    }

    /// A scope for a callee: the same module symbols, nothing of the caller's own.
    fn inner(&self) -> Scope {
        Scope {
            globals: self.globals.clone(),
            kernel_shared: self.kernel_shared.clone(),
            ..Scope::default()
        }
    }

    /// The register a name refers to.
    fn reg(&self, name: &str) -> Option<u32> {
        if let Some(r) = self.regs.get(name) {
            return Some(*r);
        }
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let digits = &name[stem.len()..];
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        let idx: u32 = digits.parse().ok()?;
        let (first, count) = self.vecs.get(stem)?;
        (idx < *count).then(|| first + idx)
    }

    fn set_vec(&mut self, name: String, first: u32, count: u32) {
        let old = self.vecs.insert(name.clone(), (first, count));
        if !self.marks.is_empty() {
            self.undo.push(Undo::Vec(name, old));
        }
    }

    fn set_reg(&mut self, name: String, r: u32) {
        let old = self.regs.insert(name.clone(), r);
        if !self.marks.is_empty() {
            self.undo.push(Undo::Reg(name, old));
        }
    }

    fn set_var(&mut self, name: String, l: Loc) {
        let old = self.vars.insert(name.clone(), l);
        if !self.marks.is_empty() {
            self.undo.push(Undo::Var(name, old));
        }
    }

    fn open(&mut self) {
        self.marks.push(self.undo.len());
    }

    fn close(&mut self) {
        let Some(m) = self.marks.pop() else { return };
        while self.undo.len() > m {
            match self.undo.pop() {
                Some(Undo::Reg(n, Some(r))) => {
                    self.regs.insert(n, r);
                }
                Some(Undo::Reg(n, None)) => {
                    self.regs.remove(&n);
                }
                Some(Undo::Vec(n, Some(v))) => {
                    self.vecs.insert(n, v);
                }
                Some(Undo::Vec(n, None)) => {
                    self.vecs.remove(&n);
                }
                Some(Undo::Var(n, Some(l))) => {
                    self.vars.insert(n, l);
                }
                Some(Undo::Var(n, None)) => {
                    self.vars.remove(&n);
                }
                None => break,
            }
        }
    }
}

struct Decoder<'a> {
    m: &'a ModuleCtx<'a>,
    code: Vec<Inst>,
    nregs: u32,
    local_size: u64,
    /// Offsets of the shared variables of this kernel and the functions it calls.
    func_shared: HashMap<(&'a str, &'a str), u64>,
    dyn_base: u64,
    /// The carry flag register (`add.cc` ...), allocated on first use.
    cc: Option<u32>,
    /// Where `_` destinations write.
    sink: Option<u32>,
    /// Declared width in bits of each register.
    widths: Vec<u8>,
    /// Functions being inlined (recursion check).
    stack: Vec<&'a str>,
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    let a = a.max(1);
    v.checked_next_multiple_of(a)
}

fn overflow(line: usize, what: &str) -> LoadError {
    LoadError::invalid(line, format!("{what}: size overflows"))
}

pub fn decode(m: &ast::Module) -> Result<(Vec<Kernel>, Vec<GlobalVar>), LoadError> {
    let mut globals = Vec::new();
    let mut gidx: HashMap<&str, u32> = HashMap::new();
    let mut shared: HashMap<&str, &VarDecl> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut global_bytes = 0u64;
    let mut const_bytes = 0u64;
    for v in &m.vars {
        if v.linkage == Linkage::Extern && v.space != ast::Space::Shared {
            continue; // resolved below, or refused if never defined
        }
        if !seen.insert(v.name.as_str()) {
            return Err(LoadError::invalid(
                v.line,
                format!("{} is defined twice", v.name),
            ));
        }
        let size = v.size().ok_or_else(|| overflow(v.line, &v.name))?;
        match v.space {
            ast::Space::Global | ast::Space::Const => {
                if v.count == Some(0) {
                    return Err(LoadError::unsupported(
                        v.line,
                        format!("unsized global {}", v.name),
                    ));
                }
                let (total, limit, what) = if v.space == ast::Space::Global {
                    (&mut global_bytes, MAX_GLOBAL_BYTES, ".global variables")
                } else {
                    (&mut const_bytes, MAX_CONST_BYTES, "the .const bank")
                };
                *total = align_up(*total, v.align.into())
                    .and_then(|t| t.checked_add(size))
                    .filter(|t| *t <= limit)
                    .ok_or_else(|| {
                        LoadError::invalid(
                            v.line,
                            format!("{} ({size} bytes) exceeds {what} ({limit} bytes)", v.name),
                        )
                    })?;
                gidx.insert(v.name.as_str(), globals.len() as u32);
                globals.push(GlobalVar {
                    name: v.name.clone(),
                    space: if v.space == ast::Space::Global {
                        GlobalSpace::Global
                    } else {
                        GlobalSpace::Const
                    },
                    size,
                    align: v.align,
                    init: v.init.clone().unwrap_or_default(),
                    relocs: Vec::new(),
                });
            }
            ast::Space::Shared => {
                if size > MAX_STATIC_SHARED {
                    return Err(LoadError::invalid(
                        v.line,
                        format!(
                            "shared variable {} of {size} bytes (at most {MAX_STATIC_SHARED})",
                            v.name
                        ),
                    ));
                }
                if v.init.is_some() {
                    return Err(LoadError::invalid(
                        v.line,
                        format!("shared variable {} has an initializer", v.name),
                    ));
                }
                shared.insert(v.name.as_str(), v);
            }
            _ => {
                return Err(LoadError::unsupported(
                    v.line,
                    format!("module-scope variable {}", v.name),
                ))
            }
        }
    }
    for v in &m.vars {
        if v.linkage == Linkage::Extern
            && v.space != ast::Space::Shared
            && !gidx.contains_key(v.name.as_str())
        {
            return Err(LoadError::invalid(
                v.line,
                format!("unresolved external variable {}", v.name),
            ));
        }
    }
    // Addresses in initial values.
    for (gi, v) in m
        .vars
        .iter()
        .filter(|v| matches!(v.space, ast::Space::Global | ast::Space::Const))
        .filter(|v| v.linkage != Linkage::Extern)
        .enumerate()
    {
        for (off, sym, add) in &v.init_syms {
            let Some(&t) = gidx.get(sym.as_str()) else {
                return Err(LoadError::unsupported(
                    v.line,
                    format!("initializer of {} takes the address of {sym}", v.name),
                ));
            };
            globals[gi].relocs.push(Reloc {
                offset: *off,
                target: t,
                addend: *add,
            });
        }
    }
    let mut funcs: HashMap<&str, &Function> = HashMap::new();
    for f in m.functions.iter().filter(|f| f.body.is_some()) {
        if funcs.insert(f.name.as_str(), f).is_some() || gidx.contains_key(f.name.as_str()) {
            return Err(LoadError::invalid(
                f.line,
                format!("{} is defined twice", f.name),
            ));
        }
    }
    let global_names = Rc::new(gidx.iter().map(|(k, v)| ((*k).to_string(), *v)).collect());
    let ctx = ModuleCtx {
        funcs,
        global_names,
        globals: gidx,
        shared,
        version: m.version,
        target: m.target,
    };
    let mut kernels = Vec::new();
    let mut total_code = 0usize;
    for f in m.functions.iter().filter(|f| f.entry) {
        if f.body.is_none() {
            continue;
        }
        let k = kernel(&ctx, f)?;
        total_code += k.code.len();
        if total_code > MAX_MODULE_CODE {
            return Err(LoadError::unsupported(
                f.line,
                format!("module larger than {MAX_MODULE_CODE} instructions"),
            ));
        }
        kernels.push(k);
    }
    Ok((kernels, globals))
}

/// Function names reachable from `f` through direct calls (including `f`).
fn reachable<'a>(ctx: &ModuleCtx<'a>, f: &'a Function) -> Vec<&'a Function> {
    let mut out = vec![f];
    let mut seen: HashSet<&str> = HashSet::from([f.name.as_str()]);
    let mut i = 0;
    while i < out.len() {
        if let Some(body) = &out[i].body {
            for s in body {
                if let Stmt::Inst(inst) = s {
                    if inst.opcode == "call" || inst.opcode.starts_with("call.") {
                        for o in &inst.operands {
                            if let Operand::Sym(n) = o {
                                if let Some(g) = ctx.funcs.get(n.as_str()) {
                                    if seen.insert(n.as_str()) {
                                        out.push(g);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

fn referenced_syms(body: &[Stmt], out: &mut HashSet<String>) {
    fn walk(o: &Operand, out: &mut HashSet<String>) {
        match o {
            Operand::Sym(s) => {
                out.insert(s.clone());
            }
            Operand::Mem(b, _) => walk(b, out),
            Operand::Vec(v) | Operand::List(v) => v.iter().for_each(|o| walk(o, out)),
            _ => {}
        }
    }
    for s in body {
        if let Stmt::Inst(i) = s {
            i.operands.iter().for_each(|o| walk(o, out));
        }
    }
}

fn kernel<'a>(ctx: &'a ModuleCtx<'a>, f: &'a Function) -> Result<Kernel, LoadError> {
    let Some(body) = &f.body else {
        return Err(LoadError::invalid(f.line, "kernel without a body"));
    };
    let mut scope = Scope::default();
    // Parameters, in the driver's packing: each aligned to its alignment.
    let mut params = Vec::new();
    let mut off = 0u64;
    let limit = param_limit(ctx.version);
    for p in &f.params {
        let size = p
            .size()
            .filter(|s| *s <= limit)
            .ok_or_else(|| param_space(f, p.line, limit))?;
        off = align_up(off, p.align.into())
            .filter(|o| o.checked_add(size).is_some_and(|e| e <= limit))
            .ok_or_else(|| param_space(f, p.line, limit))?;
        params.push(ParamInfo {
            offset: off as u32,
            size: size as u32,
        });
        scope.set_var(p.name.clone(), Loc::KParam(off));
        off += size;
    }
    scope.globals = ctx.global_names.clone();
    // Shared memory: the kernel's own variables, those of the functions it calls, and the
    // module-scope ones any of them names; dynamic shared memory after all of them.
    let funcs = reachable(ctx, f);
    let mut used = HashSet::new();
    for g in &funcs {
        if let Some(b) = &g.body {
            referenced_syms(b, &mut used);
        }
    }
    let mut shared_size = 0u64;
    let place = |v: &VarDecl, shared_size: &mut u64| -> Result<u64, LoadError> {
        let size = v.size().ok_or_else(|| overflow(v.line, &v.name))?;
        let o = align_up(*shared_size, v.align.into()).ok_or_else(|| overflow(v.line, &v.name))?;
        *shared_size = o
            .checked_add(size)
            .filter(|e| *e <= MAX_STATIC_SHARED)
            .ok_or_else(|| {
                LoadError::invalid(
                    v.line,
                    format!(
                        "kernel {} uses more than {MAX_STATIC_SHARED} bytes of static shared memory",
                        f.name
                    ),
                )
            })?;
        Ok(o)
    };
    let mut module_shared: Vec<&VarDecl> = used
        .iter()
        .filter_map(|n| ctx.shared.get(n.as_str()).copied())
        .collect();
    module_shared.sort_by_key(|v| (v.line, v.name.as_str()));
    let mut extern_shared = Vec::new();
    let mut kernel_shared = HashMap::new();
    for v in module_shared {
        if v.count == Some(0) {
            extern_shared.push(v.name.as_str());
        } else {
            let o = place(v, &mut shared_size)?;
            kernel_shared.insert(v.name.clone(), Loc::Shared(o));
        }
    }
    let mut func_shared = HashMap::new();
    for g in &funcs {
        for s in g.body.iter().flatten() {
            if let Stmt::Var(v) = s {
                if v.space == ast::Space::Shared && v.count != Some(0) {
                    let o = place(v, &mut shared_size)?;
                    func_shared.insert((g.name.as_str(), v.name.as_str()), o);
                }
            }
        }
    }
    let dyn_base = align_up(shared_size, 16).ok_or_else(|| overflow(f.line, &f.name))?;
    for name in extern_shared {
        kernel_shared.insert(name.to_string(), Loc::Shared(dyn_base));
    }
    scope.kernel_shared = Rc::new(kernel_shared);
    let mut d = Decoder {
        m: ctx,
        code: Vec::new(),
        nregs: 0,
        local_size: 0,
        func_shared,
        dyn_base,
        cc: None,
        sink: None,
        widths: Vec::new(),
        stack: vec![f.name.as_str()],
    };
    d.body(f, body, &mut scope, None, 0)?;
    d.code.push(Inst {
        op: Op::Exit,
        guard: None,
        line: f.line as u32,
    });
    let dir = f.directives;
    let max_threads = [dir.maxntid, dir.reqntid]
        .iter()
        .flatten()
        .map(|t| t.iter().map(|&x| u64::from(x)).product::<u64>())
        .fold(1024u64, u64::min) as u32;
    let max_steps = straight_line_steps(&d.code);
    Ok(Kernel {
        name: f.name.clone(),
        params,
        param_size: off as u32,
        max_steps,
        code: d.code,
        nregs: d.nregs.max(1),
        shared_static: dyn_base as u32,
        local_size: d.local_size as u32,
        attrs: KernelAttrs {
            max_threads_per_block: max_threads,
            reqntid: dir.reqntid,
            maxntid: dir.maxntid,
            minnctapersm: dir.minnctapersm,
            shared_bytes: shared_size as u32,
            local_bytes: d.local_size as u32,
            param_bytes: off as u32,
            ptx_version: ctx.version,
            target: ctx.target,
        },
    })
}

fn param_space(f: &Function, line: usize, limit: u64) -> LoadError {
    LoadError::invalid(
        line,
        format!(
            "parameters of kernel {} exceed the {limit}-byte parameter space",
            f.name
        ),
    )
}

/// Labels are scoped like names; a branch finds the innermost label of its name.
struct Labels<'b> {
    defs: HashMap<(&'b str, usize), u32>,
    /// Scope ids enclosing the current statement, innermost last.
    stack: Vec<usize>,
    next_id: usize,
    fixups: Vec<(usize, &'b str, Vec<usize>, usize)>,
}

impl<'a> Decoder<'a> {
    fn new_regs(&mut self, n: u32, bits: u8, line: usize) -> Result<u32, LoadError> {
        let first = self.nregs;
        self.nregs = self
            .nregs
            .checked_add(n)
            .filter(|&r| r <= MAX_REGISTERS)
            .ok_or_else(|| {
                LoadError::unsupported(
                    line,
                    format!("more than {MAX_REGISTERS} registers in one kernel"),
                )
            })?;
        self.widths.resize(self.nregs as usize, bits);
        Ok(first)
    }

    fn cc_reg(&mut self, line: usize) -> Result<u32, LoadError> {
        match self.cc {
            Some(r) => Ok(r),
            None => {
                let r = self.new_regs(1, 64, line)?;
                self.cc = Some(r);
                Ok(r)
            }
        }
    }

    fn sink_reg(&mut self, line: usize) -> Result<u32, LoadError> {
        match self.sink {
            Some(r) => Ok(r),
            None => {
                let r = self.new_regs(1, 64, line)?;
                self.sink = Some(r);
                Ok(r)
            }
        }
    }

    fn alloc_local(&mut self, size: u64, align: u32, line: usize) -> Result<u64, LoadError> {
        let o = align_up(self.local_size, align.into())
            .filter(|o| o.checked_add(size).is_some_and(|e| e <= MAX_LOCAL_BYTES))
            .ok_or_else(|| {
                LoadError::invalid(
                    line,
                    format!("more than {MAX_LOCAL_BYTES} bytes of local memory per thread"),
                )
            })?;
        self.local_size = o + size;
        Ok(o)
    }

    fn push(&mut self, op: Op, guard: Option<(u32, bool)>, line: usize) -> Result<(), LoadError> {
        if self.code.len() >= MAX_KERNEL_CODE {
            return Err(LoadError::unsupported(
                line,
                format!("kernel larger than {MAX_KERNEL_CODE} instructions after inlining"),
            ));
        }
        self.code.push(Inst {
            op,
            guard,
            line: u32::try_from(line).unwrap_or(u32::MAX),
        });
        Ok(())
    }

    /// Decodes a function body into `self.code`. `ret_sites` collects the jumps `ret`
    /// becomes when inlined (None: `ret` ends the thread).
    fn body(
        &mut self,
        func: &'a Function,
        body: &'a [Stmt],
        scope: &mut Scope,
        mut ret_sites: Option<&mut Vec<usize>>,
        depth: usize,
    ) -> Result<(), LoadError> {
        let mut labels = Labels {
            defs: HashMap::new(),
            stack: vec![0],
            next_id: 1,
            fixups: Vec::new(),
        };
        for s in body {
            match s {
                Stmt::Open => {
                    scope.open();
                    labels.stack.push(labels.next_id);
                    labels.next_id += 1;
                }
                Stmt::Close => {
                    scope.close();
                    labels.stack.pop();
                }
                Stmt::Reg { names, line, elem } => {
                    let bits = if *elem == 1 {
                        8
                    } else {
                        (*elem * 8).min(64) as u8
                    };
                    for (name, count) in names {
                        match count {
                            Some(n) => {
                                let first = self.new_regs(*n, bits, *line)?;
                                scope.set_vec(name.clone(), first, *n);
                            }
                            None => {
                                let r = self.new_regs(1, bits, *line)?;
                                scope.set_reg(name.clone(), r);
                            }
                        }
                    }
                }
                Stmt::Var(v) => self.var(func, v, scope)?,
                Stmt::Label(l, line) => {
                    let sid = *labels.stack.last().unwrap_or(&0);
                    if labels
                        .defs
                        .insert((l.as_str(), sid), self.code.len() as u32)
                        .is_some()
                    {
                        return Err(LoadError::invalid(
                            *line,
                            format!("label {l} defined twice"),
                        ));
                    }
                }
                Stmt::Inst(i) => {
                    let line = i.line;
                    let guard = match &i.guard {
                        None => None,
                        Some((p, neg)) => Some((inst::reg(scope, p, line)?, *neg)),
                    };
                    let base = i.opcode.split('.').next().unwrap_or("");
                    match base {
                        "bra" | "brx" => {
                            if base == "brx" {
                                return Err(LoadError::unsupported(
                                    line,
                                    "indirect branch `brx.idx`",
                                ));
                            }
                            let Some(Operand::Sym(l)) = i.operands.first() else {
                                return Err(LoadError::invalid(line, "bra needs a label"));
                            };
                            labels.fixups.push((
                                self.code.len(),
                                l.as_str(),
                                labels.stack.clone(),
                                line,
                            ));
                            self.push(Op::Bra { target: 0 }, guard, line)?;
                        }
                        "ret" => match ret_sites.as_deref_mut() {
                            Some(v) => {
                                v.push(self.code.len());
                                self.push(Op::Bra { target: 0 }, guard, line)?;
                            }
                            None => self.push(Op::Exit, guard, line)?,
                        },
                        "call" => self.call(i, guard, scope, depth)?,
                        _ => {
                            if let Some(why) = &i.malformed {
                                return Err(if inst::KNOWN.contains(&base) {
                                    LoadError::invalid(line, format!("`{}`: {why}", i.opcode))
                                } else {
                                    LoadError::unsupported(
                                        line,
                                        format!("instruction `{}`", i.opcode),
                                    )
                                });
                            }
                            let op = self.op(i, scope)?.specialise();
                            self.push(op, guard, line)?;
                        }
                    }
                }
            }
        }
        for (at, label, stack, line) in labels.fixups {
            let t = stack
                .iter()
                .rev()
                .find_map(|sid| labels.defs.get(&(label, *sid)))
                .copied()
                .ok_or_else(|| LoadError::invalid(line, format!("unknown label {label}")))?;
            if let Op::Bra { target } = &mut self.code[at].op {
                *target = t;
            }
        }
        Ok(())
    }

    fn var(
        &mut self,
        func: &'a Function,
        v: &'a VarDecl,
        scope: &mut Scope,
    ) -> Result<(), LoadError> {
        match v.space {
            ast::Space::Local | ast::Space::Param => {
                if v.init.is_some() {
                    return Err(LoadError::unsupported(
                        v.line,
                        "initialised local variables",
                    ));
                }
                let size = v.size().ok_or_else(|| overflow(v.line, &v.name))?;
                let o = self.alloc_local(size, v.align, v.line)?;
                scope.set_var(v.name.clone(), Loc::Local(o));
            }
            ast::Space::Shared => {
                if v.count == Some(0) {
                    scope.set_var(v.name.clone(), Loc::Shared(self.dyn_base));
                } else {
                    let o = self
                        .func_shared
                        .get(&(func.name.as_str(), v.name.as_str()))
                        .copied()
                        .ok_or_else(|| {
                            LoadError::invalid(v.line, "shared variable not laid out")
                        })?;
                    scope.set_var(v.name.clone(), Loc::Shared(o));
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
        guard: Option<(u32, bool)>,
        scope: &mut Scope,
        depth: usize,
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
            _ => {
                return Err(LoadError::unsupported(
                    line,
                    "indirect call (through a function pointer)",
                ))
            }
        };
        let local_of = |o: &Operand| -> Result<u64, LoadError> {
            match o {
                Operand::Sym(s) => match scope.var(s).as_ref() {
                    Some(Loc::Local(off)) => Ok(*off),
                    _ => Err(LoadError::invalid(
                        line,
                        format!("call argument {s} is not a .param variable"),
                    )),
                },
                _ => Err(LoadError::unsupported(
                    line,
                    "call arguments must be .param variables",
                )),
            }
        };
        let Some(callee) = self.m.funcs.get(name.as_str()).copied() else {
            let op = match builtin(name) {
                Some(Builtin::Vprintf) if args.len() == 2 && rets.len() <= 1 => Op::Printf {
                    fmt: local_of(&args[0])?,
                    args: local_of(&args[1])?,
                    ret: rets.first().map(local_of).transpose()?,
                },
                Some(Builtin::AssertFail) if args.len() == 5 => Op::AssertFail {
                    msg: local_of(&args[0])?,
                    file: local_of(&args[1])?,
                    line: local_of(&args[2])?,
                    func: local_of(&args[3])?,
                },
                Some(_) => {
                    return Err(LoadError::invalid(
                        line,
                        format!("call to {name} with the wrong arguments"),
                    ))
                }
                None if self.m.globals.contains_key(name.as_str()) => {
                    return Err(LoadError::invalid(line, format!("{name} is not a function")))
                }
                None => {
                    return Err(LoadError::unsupported(
                        line,
                        format!("call to {name}, which is not defined in the module (link the module that defines it)"),
                    ))
                }
            };
            return self.push(op, guard, line);
        };
        let Some(body) = &callee.body else {
            return Err(LoadError::invalid(line, format!("{name} has no body")));
        };
        if self.stack.contains(&callee.name.as_str()) {
            return Err(LoadError::unsupported(
                line,
                format!("recursive call to {name}"),
            ));
        }
        if callee.params.len() != args.len() || callee.rets.len() != rets.len() {
            return Err(LoadError::invalid(
                line,
                format!("call to {name} with the wrong number of arguments"),
            ));
        }
        // A predicated call: jump over the inlined body when the guard fails.
        let skip = match guard {
            Some((p, neg)) => {
                let at = self.code.len();
                self.push(Op::Bra { target: 0 }, Some((p, !neg)), line)?;
                Some(at)
            }
            None => None,
        };
        let mut inner = scope.inner();
        for (decl, arg) in callee
            .params
            .iter()
            .zip(args)
            .chain(callee.rets.iter().zip(rets))
        {
            inner
                .vars
                .insert(decl.name.clone(), Loc::Local(local_of(arg)?));
        }
        let mut sites = Vec::new();
        self.stack.push(callee.name.as_str());
        self.body(callee, body, &mut inner, Some(&mut sites), depth + 1)?;
        self.stack.pop();
        let end = self.code.len() as u32;
        for at in sites.into_iter().chain(skip) {
            if let Op::Bra { target } = &mut self.code[at].op {
                *target = end;
            }
        }
        Ok(())
    }
}
