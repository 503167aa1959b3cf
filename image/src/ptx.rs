//! PTX text: recognising it, cutting it at its NUL terminator, and reading the `.version`,
//! `.target` and `.address_size` directives that every module starts with.

use crate::arch::Arch;
use crate::error::{ImageError, Result};
use std::fmt;

/// A PTX ISA version (`.version 9.5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PtxVersion {
    pub major: u32,
    pub minor: u32,
}

impl PtxVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        PtxVersion { major, minor }
    }
}

impl fmt::Display for PtxVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a module's leading directives say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxInfo {
    pub version: PtxVersion,
    /// The architecture from `.target` (the first `sm_*` item).
    pub arch: Arch,
    /// Every `.target` item as written (`sm_75`, `texmode_independent`, `debug`, ...).
    pub target: Vec<String>,
    /// `.address_size` (64 when absent, as ptxas assumes on 64-bit hosts).
    pub address_size: u32,
}

/// The text of a PTX image: the bytes up to the first NUL (or all of them), which must be
/// UTF-8 (PTX is ASCII; UTF-8 is accepted in comments and strings).
pub fn text(bytes: &[u8]) -> Result<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).map_err(|e| {
        ImageError::InvalidPtx(format!(
            "not UTF-8 text (byte {} of the image)",
            e.valid_up_to()
        ))
    })
}

/// Whether `bytes` start like a PTX module: whitespace and comments, then `.version`.
/// Reads at most the first 64 KiB.
pub fn looks_like_ptx(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 << 10)];
    let mut lx = Lexer::new(head);
    lx.skip_trivia();
    lx.rest().starts_with(b".version") && !lx.rest()[8..].first().is_some_and(is_ident)
}

/// Reads the leading `.version`, `.target` and `.address_size` directives.
pub fn info(text: &str) -> Result<PtxInfo> {
    let mut lx = Lexer::new(text.as_bytes());
    lx.skip_trivia();
    if lx.word() != Some(".version") {
        return Err(ImageError::InvalidPtx(
            "the module does not start with a .version directive".into(),
        ));
    }
    lx.skip_trivia();
    let version = lx.word().and_then(parse_version).ok_or_else(|| {
        ImageError::InvalidPtx("the .version directive has no valid version".into())
    })?;
    lx.skip_trivia();
    if lx.word() != Some(".target") {
        return Err(ImageError::InvalidPtx(
            "the .version directive is not followed by .target".into(),
        ));
    }
    let mut target = Vec::new();
    loop {
        lx.skip_trivia();
        let item = lx
            .word()
            .ok_or_else(|| ImageError::InvalidPtx("empty .target directive".into()))?;
        target.push(item.to_string());
        if target.len() > 16 {
            return Err(ImageError::InvalidPtx(".target has too many items".into()));
        }
        lx.skip_trivia();
        if !lx.eat(b',') {
            break;
        }
    }
    let arch = target
        .iter()
        .find_map(|t| t.starts_with("sm_").then(|| Arch::parse(t)).flatten())
        .ok_or_else(|| {
            ImageError::InvalidPtx(format!(
                ".target {} names no sm_ architecture",
                target.join(", ")
            ))
        })?;
    let mut address_size = 64;
    if lx.word() == Some(".address_size") {
        lx.skip_trivia();
        address_size = lx
            .word()
            .and_then(|w| w.parse().ok())
            .filter(|&n| n == 32 || n == 64)
            .ok_or_else(|| ImageError::InvalidPtx(".address_size must be 32 or 64".into()))?;
    }
    Ok(PtxInfo {
        version,
        arch,
        target,
        address_size,
    })
}

fn parse_version(w: &str) -> Option<PtxVersion> {
    let (a, b) = w.split_once('.')?;
    if a.is_empty() || b.is_empty() || a.len() > 4 || b.len() > 4 {
        return None;
    }
    Some(PtxVersion::new(a.parse().ok()?, b.parse().ok()?))
}

fn is_ident(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b'%')
}

struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(b: &'a [u8]) -> Self {
        Lexer { b, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }

    /// Skips whitespace, `// ...` and `/* ... */` comments.
    fn skip_trivia(&mut self) {
        loop {
            let r = self.rest();
            if let Some(&c) = r.first() {
                if c.is_ascii_whitespace() {
                    self.pos += 1;
                    continue;
                }
            }
            if r.starts_with(b"//") {
                self.pos += r.iter().position(|&c| c == b'\n').unwrap_or(r.len());
            } else if r.starts_with(b"/*") {
                self.pos += r[2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(r.len(), |p| p + 4);
            } else {
                return;
            }
        }
    }

    /// An identifier-like word (`.version`, `9.5`, `sm_75`).
    fn word(&mut self) -> Option<&'a str> {
        let r = self.rest();
        let n = r.iter().take_while(|b| is_ident(b)).count();
        if n == 0 {
            return None;
        }
        self.pos += n;
        std::str::from_utf8(&r[..n]).ok()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.rest().first() == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchVariant;

    const NVCC: &str = "//\n// Generated by NVIDIA NVVM Compiler\n//\n// Compiler Build ID: CL-1\n\
        // Cuda compilation tools, release 13.5\n// Based on NVVM 7.0.1\n//\n\n\
        .version 9.5\n.target sm_75\n.address_size 64\n\n.visible .entry k()\n{\nret;\n}\n";

    #[test]
    fn reads_nvcc_output() {
        assert!(looks_like_ptx(NVCC.as_bytes()));
        let i = info(NVCC).unwrap();
        assert_eq!(i.version, PtxVersion::new(9, 5));
        assert_eq!(i.arch, Arch::generic(75));
        assert_eq!(i.target, ["sm_75"]);
        assert_eq!(i.address_size, 64);
    }

    #[test]
    fn target_lists_comments_and_variants() {
        let t = "\n\n/* c */ .version 7.8 // x\n .target sm_90a , debug\n";
        let i = info(t).unwrap();
        assert_eq!(i.version, PtxVersion::new(7, 8));
        assert_eq!((i.arch.sm, i.arch.variant), (90, ArchVariant::Specific));
        assert_eq!(i.target, ["sm_90a", "debug"]);
        assert_eq!(i.address_size, 64);
        let i = info(".version 6.0 .target texmode_independent, sm_52 .address_size 32").unwrap();
        assert_eq!((i.arch.sm, i.address_size), (52, 32));
    }

    #[test]
    fn refuses_what_is_not_ptx() {
        assert!(!looks_like_ptx(b"hello"));
        assert!(!looks_like_ptx(b".versionx 1.0"));
        assert!(!looks_like_ptx(b"/* unterminated .version 9.5"));
        assert!(!looks_like_ptx(b""));
        for bad in [
            "",
            ".target sm_75",
            ".version\n.target sm_75",
            ".version 9.5",
            ".version 9.5 .target",
            ".version 9.5 .target texmode_independent",
            ".version 99999.5 .target sm_75",
            ".version 9.5 .target sm_75 .address_size 48",
        ] {
            assert!(
                matches!(info(bad), Err(ImageError::InvalidPtx(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_stops_at_nul_and_wants_utf8() {
        assert_eq!(
            text(b".version 9.5\0\0garbage\xff").unwrap(),
            ".version 9.5"
        );
        assert_eq!(text(b"abc").unwrap(), "abc");
        assert!(matches!(text(b"ab\xffc\0"), Err(ImageError::InvalidPtx(_))));
    }
}
