//! PTX text to [`ast::Module`]: a hand-written recursive-descent parser for the PTX that
//! compilers emit (see docs/ptx-executor.md for why not a generated grammar).

use crate::ast::{Function, Inst, Module, Operand, ParamDecl, Space, Stmt, VarDecl};
use crate::error::LoadError;
use crate::lexer::{lex, Tok, Token};

struct P {
    t: Vec<Token>,
    i: usize,
}

type R<T> = Result<T, LoadError>;

/// Size in bytes of a PTX type suffix (`.u32` -> 4); `None` if it is not a type.
pub fn type_size(ty: &str) -> Option<u32> {
    Some(match ty {
        ".pred" => 1,
        ".b8" | ".u8" | ".s8" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

impl P {
    fn line(&self) -> usize {
        self.t
            .get(self.i)
            .or_else(|| self.t.last())
            .map(|t| t.line)
            .unwrap_or(0)
    }

    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }

    fn next(&mut self) -> R<Tok> {
        let line = self.line();
        let t = self
            .t
            .get(self.i)
            .map(|t| t.tok.clone())
            .ok_or_else(|| LoadError::invalid(line, "unexpected end of module"))?;
        self.i += 1;
        Ok(t)
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.i += 1;
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
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            other => Err(LoadError::invalid(
                self.line(),
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
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(v) => Ok(if neg { -v } else { v }),
            other => Err(LoadError::invalid(
                self.line(),
                format!("expected a number, found {other:?}"),
            )),
        }
    }

    /// Skips the rest of the current source line (`.loc`, `.file`, `.section` ...).
    fn skip_line(&mut self) {
        let line = self
            .t
            .get(self.i.saturating_sub(1))
            .map(|t| t.line)
            .unwrap_or(0);
        while self.t.get(self.i).is_some_and(|t| t.line == line) {
            self.i += 1;
        }
    }

    fn skip_to_semicolon(&mut self) -> R<()> {
        while !self.eat_punct(';') {
            self.next()?;
        }
        Ok(())
    }
}

pub fn parse(src: &str) -> R<Module> {
    let mut p = P { t: lex(src)?, i: 0 };
    let mut m = Module::default();
    while p.peek().is_some() {
        let line = p.line();
        let word = p.ident()?;
        match word.as_str() {
            ".version" | ".address_size" => {
                p.next()?;
            }
            ".target" => {
                p.ident()?;
                while p.eat_punct(',') {
                    p.ident()?;
                }
            }
            ".file" | ".loc" | ".section" => p.skip_line(),
            ".pragma" => p.skip_to_semicolon()?,
            ".visible" | ".extern" | ".weak" | ".common" => {}
            ".entry" | ".func" => m.functions.push(function(&mut p, word == ".entry", line)?),
            ".global" | ".const" | ".shared" => {
                let space = match word.as_str() {
                    ".global" => Space::Global,
                    ".const" => Space::Const,
                    _ => Space::Shared,
                };
                m.vars.push(var_decl(&mut p, space, line)?);
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
    let mut align = 0;
    let mut vec = 1;
    let elem = loop {
        let w = p.ident()?;
        match w.as_str() {
            ".align" => {
                align = u32::try_from(p.int()?)
                    .map_err(|_| LoadError::invalid(line, "bad alignment"))?
            }
            ".v2" => vec = 2,
            ".v4" => vec = 4,
            ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
            t => match type_size(t) {
                Some(s) => break s * vec,
                None => {
                    return Err(LoadError::unsupported(
                        line,
                        format!("variable attribute `{t}`"),
                    ))
                }
            },
        }
    };
    let name = p.ident()?;
    let mut count: Option<u64> = None;
    while p.eat_punct('[') {
        let n = if p.is_punct(']') {
            0
        } else {
            u64::try_from(p.int()?).map_err(|_| LoadError::invalid(line, "bad array size"))?
        };
        p.expect_punct(']')?;
        count = Some(count.unwrap_or(1) * n);
    }
    let mut d = VarDecl {
        space,
        align: if align == 0 { elem } else { align },
        elem,
        name,
        count,
        init: None,
        line,
    };
    if p.eat_punct('=') {
        let mut vals = Vec::new();
        init_values(p, &mut vals)?;
        let mut bytes = Vec::with_capacity(d.size() as usize);
        for v in vals {
            let b = match v {
                Tok::Int(i) => (i as u64).to_le_bytes(),
                Tok::F32(f) => u64::from(f).to_le_bytes(),
                Tok::F64(f) => {
                    if elem == 4 {
                        u64::from((f64::from_bits(f) as f32).to_bits()).to_le_bytes()
                    } else {
                        f.to_le_bytes()
                    }
                }
                _ => return Err(LoadError::unsupported(line, "symbolic initializers")),
            };
            bytes.extend_from_slice(&b[..(elem as usize).min(8)]);
        }
        if bytes.len() as u64 > d.size() {
            return Err(LoadError::invalid(
                line,
                format!("initializer of {} larger than the variable", d.name),
            ));
        }
        bytes.resize(d.size() as usize, 0);
        d.init = Some(bytes);
    }
    p.expect_punct(';')?;
    Ok(d)
}

fn init_values(p: &mut P, out: &mut Vec<Tok>) -> R<()> {
    if p.eat_punct('{') {
        loop {
            if p.eat_punct('}') {
                return Ok(());
            }
            init_values(p, out)?;
            if !p.eat_punct(',') {
                p.expect_punct('}')?;
                return Ok(());
            }
        }
    }
    let neg = p.eat_punct('-');
    let t = p.next()?;
    out.push(match (neg, t) {
        (true, Tok::Int(v)) => Tok::Int(-v),
        (true, Tok::F64(f)) => Tok::F64((-f64::from_bits(f)).to_bits()),
        (true, Tok::F32(f)) => Tok::F32(f ^ 0x8000_0000),
        (false, t) => t,
        (true, other) => {
            return Err(LoadError::invalid(
                p.line(),
                format!("cannot negate {other:?}"),
            ))
        }
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
        let d = var_decl_no_semicolon(p, line)?;
        out.push(ParamDecl {
            name: d.name,
            elem: d.elem,
            align: d.align,
            count: d.count,
        });
        if p.eat_punct(')') {
            return Ok(out);
        }
        p.expect_punct(',')?;
    }
}

fn var_decl_no_semicolon(p: &mut P, line: usize) -> R<VarDecl> {
    let mut align = 0;
    let elem = loop {
        let w = p.ident()?;
        match w.as_str() {
            ".align" => {
                align = u32::try_from(p.int()?)
                    .map_err(|_| LoadError::invalid(line, "bad alignment"))?
            }
            ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
            t => match type_size(t) {
                Some(s) => break s,
                None => {
                    return Err(LoadError::unsupported(
                        line,
                        format!("parameter attribute `{t}`"),
                    ))
                }
            },
        }
    };
    let name = p.ident()?;
    let mut count = None;
    if p.eat_punct('[') {
        count =
            Some(u64::try_from(p.int()?).map_err(|_| LoadError::invalid(line, "bad array size"))?);
        p.expect_punct(']')?;
    }
    Ok(VarDecl {
        space: Space::Param,
        align: if align == 0 { elem } else { align },
        elem,
        name,
        count,
        init: None,
        line,
    })
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
    // Performance directives: .maxntid 256, 1, 1 / .reqntid / .minnctapersm 2 / .noreturn
    while let Some(d) = p.peek_ident() {
        if !d.starts_with('.') {
            break;
        }
        p.next()?;
        while matches!(p.peek(), Some(Tok::Int(_))) {
            p.next()?;
            p.eat_punct(',');
        }
    }
    if p.eat_punct(';') {
        return Ok(Function {
            name,
            entry,
            params,
            rets,
            body: None,
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
        params,
        rets,
        body: Some(body),
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
            let n = u32::try_from(p.int()?)
                .map_err(|_| LoadError::invalid(line, "bad register count"))?;
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
    let line = p.line();
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
            v.push(operand(p)?);
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
            v.push(operand(p)?);
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
        Tok::Ident(s) if s.starts_with('%') => {
            if p.eat_punct('|') {
                Ok(Operand::RegPair(s, p.ident()?))
            } else {
                Ok(Operand::Reg(s))
            }
        }
        Tok::Ident(s) => Ok(Operand::Sym(s)),
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
            ".version 8.8\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_p0, .param .u32 k_p1)\n{\n.reg .pred %p<2>;\n.reg .b32 %r<4>;\nld.param.u32 %r1, [k_p1];\nsetp.ge.s32 %p1, %r1, 4;\n@%p1 bra $L1;\n$L1:\nret;\n}\n",
        )
        .unwrap();
        let f = &m.functions[0];
        assert!(f.entry);
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
        let m = parse(".global .align 4 .u32 g[3] = {1, 2, 3};\n.extern .shared .align 16 .b8 s[];\n.const .f32 c = 0f3F800000;\n").unwrap();
        assert_eq!(
            m.vars[0].init.as_deref(),
            Some(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0][..])
        );
        assert_eq!(m.vars[1].count, Some(0));
        assert_eq!(m.vars[1].align, 16);
        assert_eq!(m.vars[2].init.as_deref(), Some(&1f32.to_le_bytes()[..]));
    }

    #[test]
    fn unknown_directives_are_refused_with_their_line() {
        let e = parse(".version 8.8\n.texref t;\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains(".texref"));
    }
}
