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

/// Tokens of `src`, one at a time: the parser holds one token of lookahead, so a module is
/// never held as a token list (a 22 MB CUB module is ~5 M tokens, ~400 MB as a list).
/// Dotted directive words (`.reg.b32`, `.ptr.global.align`) come as their parts, as if
/// written apart; opcodes (not starting with `.`) keep their modifiers.
pub struct Lexer<'a> {
    src: &'a str,
    i: usize,
    line: usize,
    /// The remaining parts of a split directive word, in order, and their line.
    parts: std::collections::VecDeque<Token>,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            i: 0,
            line: 1,
            parts: std::collections::VecDeque::new(),
        }
    }

    fn err(&self, msg: String) -> LoadError {
        LoadError {
            line: self.line,
            message: msg,
            kind: LoadErrorKind::InvalidPtx,
            module: None,
        }
    }

    /// `src[s..e]`. Token boundaries are at ASCII bytes (the lexer takes only ASCII bytes into
    /// tokens but for strings, which end at a quote), so the slice is at character boundaries.
    fn text(&self, s: usize, e: usize) -> String {
        self.src.get(s..e).map(str::to_owned).unwrap_or_default()
    }

    /// The next token, `None` at the end, or the error that stops lexing.
    pub fn next_token(&mut self) -> Result<Option<Token>, LoadError> {
        if let Some(t) = self.parts.pop_front() {
            return Ok(Some(t));
        }
        let b = self.src.as_bytes();
        while self.i < b.len() {
            let i = self.i;
            let c = b[i];
            if c == b'\n' {
                self.line += 1;
                self.i += 1;
            } else if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
                while self.i < b.len() && b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
                self.i += 2;
                while self.i < b.len() && !(b[self.i] == b'*' && b.get(self.i + 1) == Some(&b'/')) {
                    if b[self.i] == b'\n' {
                        self.line += 1;
                    }
                    self.i += 1;
                }
                self.i += 2;
            } else if c == b'"' {
                let start = i + 1;
                self.i += 1;
                while self.i < b.len() && b[self.i] != b'"' {
                    if b[self.i] == b'\n' {
                        self.line += 1;
                    }
                    self.i += 1;
                }
                let tok = Tok::Str(self.text(start, self.i.min(b.len())));
                self.i += 1;
                return Ok(Some(Token {
                    tok,
                    line: self.line,
                }));
            } else if c.is_ascii_digit() {
                let start = i;
                while self.i < b.len() && (b[self.i].is_ascii_alphanumeric() || b[self.i] == b'.') {
                    self.i += 1;
                }
                let t = self.src.get(start..self.i).unwrap_or_default();
                let tok = number(t).ok_or_else(|| self.err(format!("bad number `{t}`")))?;
                return Ok(Some(Token {
                    tok,
                    line: self.line,
                }));
            } else if ident_start(c) {
                let start = i;
                self.i += 1;
                loop {
                    while self.i < b.len() && ident_char(b[self.i]) {
                        self.i += 1;
                    }
                    // Qualifiers such as `.L1::evict_last` and `.L2::128B` belong to the opcode.
                    if b.get(self.i) == Some(&b':')
                        && b.get(self.i + 1) == Some(&b':')
                        && b.get(self.i + 2)
                            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    {
                        self.i += 2;
                    } else {
                        break;
                    }
                }
                let word = self.src.get(start..self.i).unwrap_or_default();
                if let Some(rest) = word.strip_prefix('.').filter(|r| r.contains('.')) {
                    let line = self.line;
                    self.parts.extend(rest.split('.').map(|part| Token {
                        tok: Tok::Ident(format!(".{part}")),
                        line,
                    }));
                    return Ok(self.parts.pop_front());
                }
                return Ok(Some(Token {
                    tok: Tok::Ident(word.to_owned()),
                    line: self.line,
                }));
            } else if b"{}()[];:,+-|!@<>=".contains(&c) {
                self.i += 1;
                return Ok(Some(Token {
                    tok: Tok::Punct(c as char),
                    line: self.line,
                }));
            } else {
                let ch = self
                    .src
                    .get(i..)
                    .and_then(|s| s.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(self.err(format!("unexpected character `{ch}`")));
            }
        }
        Ok(None)
    }
}

/// All of `src`'s tokens (tests and tools; the parser reads a [`Lexer`] one token at a time).
pub fn lex(src: &str) -> Result<Vec<Token>, LoadError> {
    let mut l = Lexer::new(src);
    let mut out = Vec::new();
    while let Some(t) = l.next_token()? {
        out.push(t);
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
    fn dotted_directives_come_apart_and_opcodes_do_not() {
        let t = lex(".reg .b32 %r<4>;\n.param.u64.ptr.global.align 8 p;\nadd.s32 %r1, %r2, 1;")
            .unwrap();
        let idents: Vec<(&str, usize)> = t
            .iter()
            .filter_map(|t| match &t.tok {
                Tok::Ident(s) => Some((s.as_str(), t.line)),
                _ => None,
            })
            .collect();
        assert_eq!(
            idents,
            [
                (".reg", 1),
                (".b32", 1),
                ("%r", 1),
                (".param", 2),
                (".u64", 2),
                (".ptr", 2),
                (".global", 2),
                (".align", 2),
                ("p", 2),
                ("add.s32", 3),
                ("%r1", 3),
                ("%r2", 3),
            ]
        );
    }

    #[test]
    fn a_bad_character_is_an_error_with_its_line_after_good_tokens() {
        let mut l = Lexer::new("mov.u32 %r1, 2;\n/* two\nlines */ ~");
        let mut n = 0;
        let e = loop {
            match l.next_token() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 5);
        assert_eq!(e.line, 3);
        assert!(e.message.contains('~'), "{}", e.message);
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
