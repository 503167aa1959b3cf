//! PTX tokens: identifiers (directives, opcodes with their dotted modifiers, registers,
//! labels and symbols are all identifiers), numbers, and punctuation, each with its line.

use crate::error::{LoadError, LoadErrorKind};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i128),
    /// A float literal, as the bits of an f64 (`0d...`, decimal) or f32 (`0f...`).
    F32(u32),
    F64(u64),
    Str(String),
    Punct(char),
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.')
}

pub fn lex(src: &str) -> Result<Vec<Token>, LoadError> {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    let mut i = 0;
    let mut line = 1;
    let err = |line, msg: String| LoadError {
        line,
        message: msg,
        kind: LoadErrorKind::InvalidPtx,
        module: None,
    };
    // Every token's text is ASCII (the lexer only takes ASCII bytes into tokens but for
    // strings), so slicing `src` at these byte offsets is at character boundaries.
    let text = |s: usize, e: usize| String::from_utf8_lossy(&b[s..e]).into_owned();
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            out.push(Token {
                tok: Tok::Str(text(start, i.min(b.len()))),
                line,
            });
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            let t = text(start, i);
            out.push(Token {
                tok: number(&t).ok_or_else(|| err(line, format!("bad number `{t}`")))?,
                line,
            });
        } else if ident_start(c) {
            let start = i;
            i += 1;
            loop {
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                // Qualifiers such as `.L1::evict_last` and `.L2::128B` belong to the opcode.
                if b.get(i) == Some(&b':')
                    && b.get(i + 1) == Some(&b':')
                    && b.get(i + 2)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Ident(text(start, i)),
                line,
            });
        } else if b"{}()[];:,+-|!@<>=".contains(&c) {
            out.push(Token {
                tok: Tok::Punct(c as char),
                line,
            });
            i += 1;
        } else {
            let ch = src
                .get(i..)
                .and_then(|s| s.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(err(line, format!("unexpected character `{ch}`")));
        }
    }
    Ok(out)
}

fn number(text: &str) -> Option<Tok> {
    let t = text.trim_end_matches(['U', 'u']);
    if let Some(h) = t.strip_prefix("0f").or_else(|| t.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16)
            .ok()
            .filter(|_| h.len() == 8)
            .map(Tok::F32);
    }
    if let Some(h) = t.strip_prefix("0d").or_else(|| t.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16)
            .ok()
            .filter(|_| h.len() == 16)
            .map(Tok::F64);
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i128::from_str_radix(h, 16).ok().map(Tok::Int);
    }
    if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        return i128::from_str_radix(b, 2).ok().map(Tok::Int);
    }
    if t.contains(['.', 'e', 'E']) {
        return t.parse::<f64>().ok().map(|f| Tok::F64(f.to_bits()));
    }
    if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return i128::from_str_radix(&t[1..], 8).ok().map(Tok::Int);
    }
    t.parse::<i128>().ok().map(Tok::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_opcodes_registers_and_float_literals() {
        let t = lex("@%p1 bra $L__BB0_2; // c\nmov.f32 %f9, 0f3F800000;").unwrap();
        let toks: Vec<Tok> = t.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(toks[0], Tok::Punct('@'));
        assert_eq!(toks[1], Tok::Ident("%p1".into()));
        assert_eq!(toks[3], Tok::Ident("$L__BB0_2".into()));
        assert_eq!(t[5].line, 2);
        assert!(toks.contains(&Tok::F32(0x3f80_0000)));
    }

    #[test]
    fn cache_qualifiers_stay_in_the_opcode() {
        let t = lex("ld.global.L1::evict_last.L2::128B.u32 %r1, [%rd1];").unwrap();
        assert_eq!(
            t[0].tok,
            Tok::Ident("ld.global.L1::evict_last.L2::128B.u32".into())
        );
        let t = lex("$L1:\n").unwrap();
        assert_eq!(t[1].tok, Tok::Punct(':'));
    }

    #[test]
    fn numbers_in_every_base() {
        assert_eq!(number("0x10"), Some(Tok::Int(16)));
        assert_eq!(number("4294967295U"), Some(Tok::Int(4_294_967_295)));
        assert_eq!(number("010"), Some(Tok::Int(8)));
        assert_eq!(number("0d3FF0000000000000"), Some(Tok::F64(1f64.to_bits())));
        assert_eq!(number("0fXYZ"), None);
    }
}
