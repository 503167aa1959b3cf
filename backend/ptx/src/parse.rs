//! PTX text to [`ast::Module`]: a hand-written recursive-descent parser for the PTX that
//! compilers emit (see docs/ptx-executor.md for why not a generated grammar).

use crate::ast::{
    Directives, Function, Inst, Linkage, Module, Operand, ParamDecl, Space, Stmt, VarDecl,
};
use crate::error::LoadError;
use crate::lexer::{Lexer, Tok, Token};

/// The parser's position: one token of lookahead over the [`Lexer`].
struct P<'a> {
    lexer: Lexer<'a>,
    /// The next token; `None` at the end or after a lexing error (kept in `lex_error`).
    cur: Option<Token>,
    /// The line of the token last consumed, and of the last token lexed (for errors at the end).
    prev_line: usize,
    last_line: usize,
    /// A lexing error: the module fails with it, whatever the parser made of the end.
    lex_error: Option<LoadError>,
}

type R<T> = Result<T, LoadError>;

/// Size in bytes of a PTX type suffix (`.u32` -> 4); `None` if it is not a type.
pub fn type_size(ty: &str) -> Option<u32> {
    Some(match ty {
        ".pred" => 1,
        ".b8" | ".u8" | ".s8" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" | ".tf32" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

/// Largest array any declaration may have, in elements (refused beyond as malformed).
const MAX_COUNT: u64 = 1 << 48;
/// Deepest nesting of braces in an initializer and of `{ }`/`( )` in an operand (the parser
/// recurses on them; real PTX nests two or three deep).
const MAX_NESTING: usize = 32;

impl<'a> P<'a> {
    fn new(src: &'a str) -> Self {
        let mut p = P {
            lexer: Lexer::new(src),
            cur: None,
            prev_line: 0,
            last_line: 0,
            lex_error: None,
        };
        p.advance();
        p
    }

    /// Lexes the next token into `cur`.
    fn advance(&mut self) {
        if self.lex_error.is_some() {
            self.cur = None;
            return;
        }
        match self.lexer.next_token() {
            Ok(t) => {
                if let Some(t) = &t {
                    self.last_line = t.line;
                }
                self.cur = t;
            }
            Err(e) => {
                self.cur = None;
                self.lex_error = Some(e);
            }
        }
    }

    fn line(&self) -> usize {
        self.cur.as_ref().map_or(self.last_line, |t| t.line)
    }

    fn peek(&self) -> Option<&Tok> {
        self.cur.as_ref().map(|t| &t.tok)
    }

    /// Consumes the current token.
    fn bump(&mut self) {
        if let Some(t) = &self.cur {
            self.prev_line = t.line;
        }
        self.advance();
    }

    fn next(&mut self) -> R<Tok> {
        let line = self.line();
        match self.cur.take() {
            Some(t) => {
                self.prev_line = t.line;
                self.advance();
                Ok(t.tok)
            }
            None => Err(self
                .lex_error
                .clone()
                .unwrap_or_else(|| LoadError::invalid(line, "unexpected end of module"))),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> R<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(LoadError::invalid(
                self.line(),
                format!("expected `{c}`, found {:?}", self.peek()),
            ))
        }
    }

    fn ident(&mut self) -> R<String> {
        let line = self.line();
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            other => Err(LoadError::invalid(
                line,
                format!("expected a name, found {other:?}"),
            )),
        }
    }

    fn peek_ident(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Ident(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&mut self) -> R<i128> {
        let line = self.line();
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(v) => Ok(if neg { -v } else { v }),
            other => Err(LoadError::invalid(
                line,
                format!("expected a number, found {other:?}"),
            )),
        }
    }

    fn u32(&mut self, what: &str) -> R<u32> {
        let line = self.line();
        u32::try_from(self.int()?).map_err(|_| LoadError::invalid(line, format!("bad {what}")))
    }

    /// Skips the rest of the current source line (`.loc`, `.file` ...).
    fn skip_line(&mut self) {
        let line = self.prev_line;
        while self.cur.as_ref().is_some_and(|t| t.line == line) {
            self.bump();
        }
    }

    fn skip_to_semicolon(&mut self) -> R<()> {
        while !self.eat_punct(';') {
            self.next()?;
        }
        Ok(())
    }

    /// `.section name { ... }` (debug sections): skipped whole.
    fn skip_section(&mut self) -> R<()> {
        self.ident()?;
        if !self.eat_punct('{') {
            return Ok(());
        }
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }
}

pub fn parse(src: &str) -> R<Module> {
    let mut p = P::new(src);
    let r = module(&mut p);
    // A lexing error is the module's error, as when the whole text was lexed first.
    match p.lex_error.take() {
        Some(e) => Err(e),
        None => r,
    }
}

fn module(p: &mut P) -> R<Module> {
    let mut m = Module::default();
    let mut linkage = Linkage::Internal;
    while p.peek().is_some() {
        let line = p.line();
        let word = p.ident()?;
        match word.as_str() {
            ".version" => {
                m.version = match p.next()? {
                    Tok::F64(bits) => {
                        let v = f64::from_bits(bits);
                        (v * 10.0).round() as u32
                    }
                    Tok::Int(v) => u32::try_from(v.saturating_mul(10)).unwrap_or(0),
                    other => {
                        return Err(LoadError::invalid(line, format!("bad .version {other:?}")))
                    }
                }
            }
            ".address_size" => {
                let v = p.int()?;
                if v != 64 {
                    return Err(LoadError::unsupported(
                        line,
                        format!(".address_size {v} (only 64-bit addressing)"),
                    ));
                }
            }
            ".target" => loop {
                let t = p.ident()?;
                if let Some(n) = t.strip_prefix("sm_") {
                    let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
                    m.target = digits.parse().unwrap_or(0);
                }
                if t == "texmode_independent" || t == "map_f64_to_f32" {
                    return Err(LoadError::unsupported(line, format!(".target {t}")));
                }
                if !p.eat_punct(',') {
                    break;
                }
            },
            ".file" | ".loc" => p.skip_line(),
            ".section" => p.skip_section()?,
            ".pragma" => p.skip_to_semicolon()?,
            ".visible" => linkage = Linkage::Visible,
            ".extern" => linkage = Linkage::Extern,
            ".weak" => linkage = Linkage::Weak,
            ".common" => linkage = Linkage::Common,
            ".entry" | ".func" => {
                let mut f = function(p, word == ".entry", line)?;
                f.linkage = std::mem::take(&mut linkage);
                m.functions.push(f);
            }
            ".global" | ".const" | ".shared" => {
                let space = match word.as_str() {
                    ".global" => Space::Global,
                    ".const" => Space::Const,
                    _ => Space::Shared,
                };
                let mut v = var_decl(p, space, line)?;
                v.linkage = std::mem::take(&mut linkage);
                m.vars.push(v);
            }
            other => {
                return Err(LoadError::unsupported(
                    line,
                    format!("module directive `{other}`"),
                ))
            }
        }
    }
    Ok(m)
}

/// After the state space: `[.align N] [.vN] .type name[dims] [= init] ;`
fn var_decl(p: &mut P, space: Space, line: usize) -> R<VarDecl> {
    let mut d = var_head(p, space, line)?;
    if p.eat_punct('=') {
        let scalar = d.align_scalar;
        let mut vals = Vec::new();
        init_values(p, &mut vals, 0)?;
        let size = d.v.size().ok_or_else(|| too_large(line, &d.v.name))?;
        let mut bytes = Vec::new();
        for v in vals {
            let off = bytes.len() as u64;
            let b = match v {
                Init::Tok(Tok::Int(i)) => (i as u64).to_le_bytes(),
                Init::Tok(Tok::F32(f)) => {
                    if scalar == 8 {
                        f64::from(f32::from_bits(f)).to_bits().to_le_bytes()
                    } else {
                        u64::from(f).to_le_bytes()
                    }
                }
                Init::Tok(Tok::F64(f)) => {
                    if scalar == 4 {
                        u64::from((f64::from_bits(f) as f32).to_bits()).to_le_bytes()
                    } else {
                        f.to_le_bytes()
                    }
                }
                Init::Sym(s, add) => {
                    if scalar != 8 {
                        return Err(LoadError::unsupported(
                            line,
                            format!("address of {s} in a {scalar}-byte initializer"),
                        ));
                    }
                    d.v.init_syms.push((off, s, add));
                    [0; 8]
                }
                Init::Tok(other) => {
                    return Err(LoadError::invalid(
                        line,
                        format!("bad initializer {other:?}"),
                    ))
                }
            };
            bytes.extend_from_slice(&b[..(scalar as usize).min(8)]);
            if bytes.len() as u64 > size {
                return Err(LoadError::invalid(
                    line,
                    format!("initializer of {} larger than the variable", d.v.name),
                ));
            }
        }
        d.v.init = Some(bytes);
    }
    p.expect_punct(';')?;
    Ok(d.v)
}

fn too_large(line: usize, name: &str) -> LoadError {
    LoadError::invalid(line, format!("size of {name} overflows"))
}

struct Head {
    v: VarDecl,
    /// Size of one scalar element (of a vector type: one component).
    align_scalar: u32,
}

/// `[.align N] [.ptr .space] [.vN] .type name[dims]...` of a variable or parameter.
fn var_head(p: &mut P, space: Space, line: usize) -> R<Head> {
    let mut align = 0;
    let mut vec = 1;
    let scalar = loop {
        let w = p.ident()?;
        match w.as_str() {
            ".align" => align = p.u32("alignment")?,
            ".v2" => vec = 2,
            ".v4" => vec = 4,
            ".v8" => vec = 8,
            ".ptr" | ".global" | ".shared" | ".const" | ".local" | ".param" => {}
            t => match type_size(t) {
                Some(s) => break s,
                None => {
                    return Err(LoadError::unsupported(
                        line,
                        format!("variable attribute `{t}`"),
                    ))
                }
            },
        }
    };
    // `.ptr .global .align 8` may also follow the type of a parameter.
    while let Some(w) = p.peek_ident() {
        match w {
            ".ptr" | ".global" | ".shared" | ".const" | ".local" => {
                p.next()?;
            }
            ".align" => {
                p.next()?;
                align = p.u32("alignment")?;
            }
            _ => break,
        }
    }
    if align != 0 && !align.is_power_of_two() {
        return Err(LoadError::invalid(line, format!("alignment {align}")));
    }
    let elem = scalar * vec;
    let name = p.ident()?;
    let mut count: Option<u64> = None;
    while p.eat_punct('[') {
        let n = if p.is_punct(']') {
            0
        } else {
            let l = p.line();
            u64::try_from(p.int()?)
                .ok()
                .filter(|n| *n <= MAX_COUNT)
                .ok_or_else(|| LoadError::invalid(l, format!("bad array size of {name}")))?
        };
        p.expect_punct(']')?;
        count = Some(
            count
                .unwrap_or(1)
                .checked_mul(n)
                .filter(|n| *n <= MAX_COUNT)
                .ok_or_else(|| too_large(line, &name))?,
        );
    }
    Ok(Head {
        v: VarDecl {
            space,
            linkage: Linkage::Internal,
            align: if align == 0 { elem } else { align },
            elem,
            name,
            count,
            init: None,
            init_syms: Vec::new(),
            line,
        },
        align_scalar: scalar,
    })
}

enum Init {
    Tok(Tok),
    Sym(String, i64),
}

fn init_values(p: &mut P, out: &mut Vec<Init>, depth: usize) -> R<()> {
    if p.eat_punct('{') {
        if depth >= MAX_NESTING {
            return Err(LoadError::invalid(p.line(), "initializer nested too deep"));
        }
        loop {
            if p.eat_punct('}') {
                return Ok(());
            }
            init_values(p, out, depth + 1)?;
            if !p.eat_punct(',') {
                p.expect_punct('}')?;
                return Ok(());
            }
        }
    }
    let line = p.line();
    let neg = p.eat_punct('-');
    let t = p.next()?;
    out.push(match (neg, t) {
        (true, Tok::Int(v)) => Init::Tok(Tok::Int(-v)),
        (true, Tok::F64(f)) => Init::Tok(Tok::F64((-f64::from_bits(f)).to_bits())),
        (true, Tok::F32(f)) => Init::Tok(Tok::F32(f ^ 0x8000_0000)),
        (false, Tok::Ident(s)) => {
            // `sym`, `sym+N`, `generic(sym)`, `generic(sym)+N`.
            let name = if s == "generic" && p.eat_punct('(') {
                let n = p.ident()?;
                p.expect_punct(')')?;
                n
            } else {
                s
            };
            let mut add = 0i64;
            if p.eat_punct('+') {
                add = i64::try_from(p.int()?)
                    .map_err(|_| LoadError::invalid(line, "bad initializer offset"))?;
            }
            Init::Sym(name, add)
        }
        (false, t) => Init::Tok(t),
        (true, other) => return Err(LoadError::invalid(line, format!("cannot negate {other:?}"))),
    });
    Ok(())
}

fn param_list(p: &mut P) -> R<Vec<ParamDecl>> {
    let mut out = Vec::new();
    p.expect_punct('(')?;
    if p.eat_punct(')') {
        return Ok(out);
    }
    loop {
        let line = p.line();
        let w = p.ident()?;
        if w != ".param" && w != ".reg" {
            return Err(LoadError::invalid(
                line,
                format!("expected .param, found `{w}`"),
            ));
        }
        let d = var_head(p, Space::Param, line)?.v;
        out.push(ParamDecl {
            name: d.name,
            elem: d.elem,
            align: d.align,
            count: d.count,
            line,
        });
        if p.eat_punct(')') {
            return Ok(out);
        }
        p.expect_punct(',')?;
    }
}

fn dims(p: &mut P) -> R<[u32; 3]> {
    let mut d = [1u32; 3];
    for (k, v) in d.iter_mut().enumerate() {
        if k > 0 && !p.eat_punct(',') {
            break;
        }
        *v = p.u32("thread count")?;
    }
    Ok(d)
}

fn function(p: &mut P, entry: bool, line: usize) -> R<Function> {
    let rets = if p.is_punct('(') {
        param_list(p)?
    } else {
        Vec::new()
    };
    let name = p.ident()?;
    let params = if p.is_punct('(') {
        param_list(p)?
    } else {
        Vec::new()
    };
    let mut directives = Directives::default();
    while let Some(d) = p.peek_ident() {
        if !d.starts_with('.') {
            break;
        }
        let dl = p.line();
        let d = p.ident()?;
        match d.as_str() {
            ".maxntid" => directives.maxntid = Some(dims(p)?),
            ".reqntid" => directives.reqntid = Some(dims(p)?),
            ".minnctapersm" => directives.minnctapersm = Some(p.u32(".minnctapersm")?),
            ".maxnctapersm" => {
                p.u32(".maxnctapersm")?;
            }
            ".maxnreg" => directives.maxnreg = Some(p.u32(".maxnreg")?),
            ".noreturn" => {}
            ".pragma" => p.skip_to_semicolon()?,
            other => {
                return Err(LoadError::unsupported(
                    dl,
                    format!("function directive `{other}`"),
                ))
            }
        }
    }
    if p.eat_punct(';') {
        return Ok(Function {
            name,
            entry,
            linkage: Linkage::Internal,
            params,
            rets,
            body: None,
            directives,
            line,
        });
    }
    p.expect_punct('{')?;
    let mut body = Vec::new();
    let mut depth = 1;
    while depth > 0 {
        let line = p.line();
        if p.eat_punct('{') {
            depth += 1;
            body.push(Stmt::Open);
            continue;
        }
        if p.eat_punct('}') {
            depth -= 1;
            if depth > 0 {
                body.push(Stmt::Close);
            }
            continue;
        }
        if p.eat_punct('@') {
            let neg = p.eat_punct('!');
            let pred = p.ident()?;
            let opcode = p.ident()?;
            body.push(Stmt::Inst(instruction(p, Some((pred, neg)), opcode, line)?));
            continue;
        }
        let w = p.ident()?;
        match w.as_str() {
            ".reg" => body.push(reg_decl(p, line)?),
            ".local" | ".shared" | ".param" | ".const" | ".global" => {
                let space = match w.as_str() {
                    ".local" => Space::Local,
                    ".shared" => Space::Shared,
                    ".param" => Space::Param,
                    ".const" => Space::Const,
                    _ => Space::Global,
                };
                body.push(Stmt::Var(var_decl(p, space, line)?));
            }
            ".loc" | ".file" => p.skip_line(),
            ".pragma" => p.skip_to_semicolon()?,
            _ if p.eat_punct(':') => body.push(Stmt::Label(w, line)),
            _ if w.starts_with('.') => {
                return Err(LoadError::unsupported(
                    line,
                    format!("directive `{w}` in a function body"),
                ))
            }
            _ => body.push(Stmt::Inst(instruction(p, None, w, line)?)),
        }
    }
    Ok(Function {
        name,
        entry,
        linkage: Linkage::Internal,
        params,
        rets,
        body: Some(body),
        directives,
        line,
    })
}

fn reg_decl(p: &mut P, line: usize) -> R<Stmt> {
    let mut vec = 1;
    let elem = loop {
        let w = p.ident()?;
        match w.as_str() {
            ".v2" => vec = 2,
            ".v4" => vec = 4,
            t => match type_size(t) {
                Some(s) => break s * vec,
                None => return Err(LoadError::unsupported(line, format!("register type `{t}`"))),
            },
        }
    };
    let mut names = Vec::new();
    loop {
        let name = p.ident()?;
        let count = if p.eat_punct('<') {
            let n = p.u32("register count")?;
            p.expect_punct('>')?;
            Some(n)
        } else {
            None
        };
        names.push((name, count));
        if !p.eat_punct(',') {
            break;
        }
    }
    p.expect_punct(';')?;
    Ok(Stmt::Reg { elem, names, line })
}

fn instruction(p: &mut P, guard: Option<(String, bool)>, opcode: String, line: usize) -> R<Inst> {
    let mut operands = Vec::new();
    if !p.eat_punct(';') {
        loop {
            let o = operand(p).and_then(|o| {
                operands.push(o);
                if p.eat_punct(';') {
                    Ok(true)
                } else {
                    p.expect_punct(',').map(|_| false)
                }
            });
            match o {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    // Keep going to the end of the instruction; the decoder reports it.
                    p.skip_to_semicolon()?;
                    return Ok(Inst {
                        guard,
                        opcode,
                        operands,
                        line,
                        malformed: Some(e.message),
                    });
                }
            }
        }
    }
    Ok(Inst {
        guard,
        opcode,
        operands,
        line,
        malformed: None,
    })
}

fn operand(p: &mut P) -> R<Operand> {
    operand_at(p, 0)
}

fn operand_at(p: &mut P, depth: usize) -> R<Operand> {
    let line = p.line();
    if depth >= MAX_NESTING {
        return Err(LoadError::invalid(line, "operand nested too deep"));
    }
    if p.eat_punct('[') {
        let base = match p.next()? {
            Tok::Ident(s) if s.starts_with('%') => Operand::Reg(s),
            Tok::Ident(s) => Operand::Sym(s),
            Tok::Int(v) => Operand::Int(v),
            other => return Err(LoadError::invalid(line, format!("bad address {other:?}"))),
        };
        let mut off = 0i64;
        if p.eat_punct('+') {
            off = i64::try_from(p.int()?).map_err(|_| LoadError::invalid(line, "bad offset"))?;
        } else if p.is_punct('-') {
            off = i64::try_from(p.int()?).map_err(|_| LoadError::invalid(line, "bad offset"))?;
        }
        p.expect_punct(']')?;
        return Ok(Operand::Mem(Box::new(base), off));
    }
    if p.eat_punct('{') {
        let mut v = Vec::new();
        loop {
            v.push(operand_at(p, depth + 1)?);
            if p.eat_punct('}') {
                return Ok(Operand::Vec(v));
            }
            p.expect_punct(',')?;
        }
    }
    if p.eat_punct('(') {
        let mut v = Vec::new();
        if p.eat_punct(')') {
            return Ok(Operand::List(v));
        }
        loop {
            v.push(operand_at(p, depth + 1)?);
            if p.eat_punct(')') {
                return Ok(Operand::List(v));
            }
            p.expect_punct(',')?;
        }
    }
    if p.eat_punct('!') {
        return Ok(Operand::NotReg(p.ident()?));
    }
    if p.eat_punct('-') {
        return match p.next()? {
            Tok::Int(v) => Ok(Operand::Int(-v)),
            Tok::F32(f) => Ok(Operand::F32(f ^ 0x8000_0000)),
            Tok::F64(f) => Ok(Operand::F64(f ^ (1 << 63))),
            other => Err(LoadError::invalid(line, format!("cannot negate {other:?}"))),
        };
    }
    match p.next()? {
        Tok::Ident(s) if s == "_" => Ok(Operand::Sink),
        Tok::Ident(s) => {
            if p.eat_punct('|') {
                Ok(Operand::RegPair(s, p.ident()?))
            } else if s.starts_with('%') {
                Ok(Operand::Reg(s))
            } else {
                Ok(Operand::Sym(s))
            }
        }
        Tok::Int(v) => Ok(Operand::Int(v)),
        Tok::F32(f) => Ok(Operand::F32(f)),
        Tok::F64(f) => Ok(Operand::F64(f)),
        other => Err(LoadError::invalid(
            line,
            format!("unexpected {other:?} in an operand"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_entry_with_params_registers_labels_and_predicates() {
        let m = parse(
            ".version 8.8\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_p0, .param .u32 k_p1)\n.maxntid 256, 1, 1\n.minnctapersm 2\n{\n.reg .pred %p<2>;\n.reg .b32 %r<4>;\nld.param.u32 %r1, [k_p1];\nsetp.ge.s32 %p1, %r1, 4;\n@%p1 bra $L1;\n$L1:\nret;\n}\n",
        )
        .unwrap();
        assert_eq!(m.version, 88);
        assert_eq!(m.target, 80);
        let f = &m.functions[0];
        assert!(f.entry);
        assert_eq!(f.linkage, Linkage::Visible);
        assert_eq!(f.directives.maxntid, Some([256, 1, 1]));
        assert_eq!(f.directives.minnctapersm, Some(2));
        assert_eq!(f.params.len(), 2);
        let body = f.body.as_ref().unwrap();
        assert!(
            matches!(&body[2], Stmt::Inst(i) if i.operands[1] == Operand::Mem(Box::new(Operand::Sym("k_p1".into())), 0))
        );
        assert!(matches!(&body[4], Stmt::Inst(i) if i.guard == Some(("%p1".into(), false))));
        assert!(matches!(&body[5], Stmt::Label(l, _) if l == "$L1"));
    }

    #[test]
    fn parses_globals_with_initializers_and_extern_shared() {
        let m = parse(".global .align 4 .u32 g[3] = {1, 2, 3};\n.extern .shared .align 16 .b8 s[];\n.const .f32 c = 0f3F800000;\n.global .align 8 .u64 p[2] = {g, generic(g)+4};\n.global .u32 big[4] = {7};\n").unwrap();
        assert_eq!(
            m.vars[0].init.as_deref(),
            Some(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0][..])
        );
        assert_eq!(m.vars[1].count, Some(0));
        assert_eq!(m.vars[1].align, 16);
        assert_eq!(m.vars[1].linkage, Linkage::Extern);
        assert_eq!(m.vars[2].init.as_deref(), Some(&1f32.to_le_bytes()[..]));
        assert_eq!(
            m.vars[3].init_syms,
            vec![(0, "g".to_string(), 0), (8, "g".to_string(), 4)]
        );
        // Initializers are kept as written; the rest of the variable is zero.
        assert_eq!(m.vars[4].init.as_deref(), Some(&[7, 0, 0, 0][..]));
    }

    #[test]
    fn inline_assembly_blocks_with_bare_register_names() {
        let m = parse(".entry k() {\n.reg .b32 %r<3>;\n{  .reg .s32 r0;  .reg .pred p;  shfl.sync.up.b32 r0|p, %r1, 1, 0, -1;  @p add.s32 r0, r0, %r1;  mov.s32 %r2, r0;}\n{.reg.b32 f;\n mov.b32 f, _;}\n}\n").unwrap();
        let body = m.functions[0].body.as_ref().unwrap();
        assert!(body.iter().any(|s| matches!(s, Stmt::Inst(i) if i.operands[0] == Operand::RegPair("r0".into(), "p".into()))));
        assert!(body
            .iter()
            .any(|s| matches!(s, Stmt::Inst(i) if i.guard == Some(("p".into(), false)))));
        assert!(body
            .iter()
            .any(|s| matches!(s, Stmt::Reg { names, .. } if names[0].0 == "f")));
        assert!(body
            .iter()
            .any(|s| matches!(s, Stmt::Inst(i) if i.operands[1] == Operand::Sink)));
    }

    #[test]
    fn array_sizes_that_overflow_are_refused() {
        let e = parse(".global .b8 a[4294967296][4294967296];\n").unwrap_err();
        assert_eq!(e.kind, crate::LoadErrorKind::InvalidPtx);
        assert_eq!(e.line, 1);
        let e = parse(".global .u64 a[2305843009213693952];\n").unwrap_err();
        assert!(e.message.contains("array size"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = |open: &str, close: &str| open.repeat(200_000) + &close.repeat(200_000);
        let e = parse(&format!(".global .b8 x[1] = {};\n", deep("{", "}"))).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
        for (o, c) in [("{", "}"), ("(", ")")] {
            let src = format!(".entry k() {{\nmov.u32 %r1, {};\n}}\n", deep(o, c));
            let m = parse(&src).unwrap();
            let body = m.functions[0].body.as_ref().unwrap();
            assert!(
                matches!(&body[0], Stmt::Inst(i) if i.malformed.as_deref().is_some_and(|w| w.contains("nested")))
            );
        }
    }

    #[test]
    fn a_lexing_error_is_the_modules_error_wherever_the_parser_stopped() {
        // The parser reads tokens one at a time; a bad character after an unterminated
        // function is still reported as what it is, with its line.
        let e = parse(".version 8.0\n.target sm_80\n.address_size 64\n.entry k() {\n ret;\n #")
            .unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.message.contains("unexpected character"), "{}", e.message);
        // `.loc` lines are skipped to their end, and only their line.
        let m = parse(".version 8.0\n.target sm_80\n.address_size 64\n.file 1 \"a.cu\"\n.entry k()\n{\n.loc 1 2 3\nret;\n}\n").unwrap();
        assert_eq!(m.functions.len(), 1);
    }

    #[test]
    fn unknown_directives_are_refused_with_their_line() {
        let e = parse(".version 8.8\n.texref t;\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains(".texref"));
        let e = parse(".address_size 32\n").unwrap_err();
        assert_eq!(e.kind, crate::LoadErrorKind::NotSupported);
    }
}
