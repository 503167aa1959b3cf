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

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')
}

pub fn lex(src: &str) -> Result<Vec<Token>, LoadError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let err = |line, msg: String| LoadError {
        line,
        message: msg,
        kind: LoadErrorKind::InvalidPtx,
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Str(chars[start..i.min(chars.len())].iter().collect()),
                line,
            });
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Token {
                tok: number(&text).ok_or_else(|| err(line, format!("bad number `{text}`")))?,
                line,
            });
        } else if ident_start(c) {
            let start = i;
            i += 1;
            loop {
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                // Qualifiers such as `.L1::evict_last` and `.L2::128B` belong to the opcode.
                if chars.get(i) == Some(&':')
                    && chars.get(i + 1) == Some(&':')
                    && chars
                        .get(i + 2)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Ident(chars[start..i].iter().collect()),
                line,
            });
        } else if "{}()[];:,+-|!@<>=".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        } else {
            return Err(err(line, format!("unexpected character `{c}`")));
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
