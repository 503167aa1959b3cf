//! Builders for synthetic images (tests and fuzz seeds; feature `testing`). Real images come
//! from nvcc in `tests/`; these make the corner cases nvcc never writes.

use crate::fatbin::{FATBIN_MAGIC, FLAG_64BIT, FLAG_LINUX, FLAG_LZ4, FLAG_ZSTD};
use crate::Compression;

/// One entry for [`fatbin`].
#[derive(Clone, Debug)]
pub struct EntrySpec<'a> {
    /// 1 PTX, 2 ELF.
    pub kind: u16,
    pub sm: u32,
    /// (major, minor).
    pub version: (u16, u16),
    pub extra_flags: u64,
    pub compression: Compression,
    pub options: &'a str,
    pub data: &'a [u8],
}

impl<'a> EntrySpec<'a> {
    pub fn ptx(sm: u32, text: &'a str) -> Self {
        EntrySpec {
            kind: 1,
            sm,
            version: (9, 5),
            extra_flags: 0,
            compression: Compression::None,
            options: "",
            data: text.as_bytes(),
        }
    }

    pub fn elf(sm: u32, data: &'a [u8]) -> Self {
        EntrySpec {
            kind: 2,
            sm,
            version: (1, 8),
            extra_flags: 0,
            compression: Compression::None,
            options: "",
            data,
        }
    }

    pub fn compressed(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
}

/// A fatbin laid out as nvcc 13.5 lays it out.
pub fn fatbin(entries: &[EntrySpec<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries {
        let (stored, flags) = match e.compression {
            Compression::None => (e.data.to_vec(), 0),
            Compression::Lz4 => (lz4_flex::block::compress(e.data), FLAG_LZ4),
            Compression::Zstd => (
                ruzstd::encoding::compress_to_vec(
                    e.data,
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
                FLAG_ZSTD,
            ),
        };
        let padded = stored.len().div_ceil(8) * 8;
        let opts = e.options.as_bytes();
        let hs = if e.kind == 1 || !opts.is_empty() {
            (0x48 + opts.len()).div_ceil(16) * 16
        } else {
            64
        };
        let mut h = vec![0u8; hs];
        h[0..2].copy_from_slice(&e.kind.to_le_bytes());
        h[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
        h[4..8].copy_from_slice(&(hs as u32).to_le_bytes());
        h[8..16].copy_from_slice(&(padded as u64).to_le_bytes());
        if e.compression != Compression::None {
            h[0x10..0x14].copy_from_slice(&(stored.len() as u32).to_le_bytes());
            h[0x38..0x40].copy_from_slice(&(e.data.len() as u64).to_le_bytes());
        }
        if hs > 64 {
            h[0x14..0x18].copy_from_slice(&0x40u32.to_le_bytes());
            h[0x40..0x44].copy_from_slice(&0x48u32.to_le_bytes());
            h[0x44..0x48].copy_from_slice(&(opts.len() as u32).to_le_bytes());
            h[0x48..0x48 + opts.len()].copy_from_slice(opts);
        }
        h[0x18..0x1a].copy_from_slice(&e.version.1.to_le_bytes());
        h[0x1a..0x1c].copy_from_slice(&e.version.0.to_le_bytes());
        h[0x1c..0x20].copy_from_slice(&e.sm.to_le_bytes());
        h[0x28..0x30]
            .copy_from_slice(&(FLAG_64BIT | FLAG_LINUX | flags | e.extra_flags).to_le_bytes());
        body.extend_from_slice(&h);
        body.extend_from_slice(&stored);
        body.resize(body.len() + padded - stored.len(), 0);
    }
    let mut out = FATBIN_MAGIC.to_le_bytes().to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A minimal PTX module for `sm` with one empty kernel `name`.
pub fn ptx_module(version: &str, sm: u32, name: &str) -> String {
    format!(".version {version}\n.target sm_{sm}\n.address_size 64\n\n.visible .entry {name}()\n{{\n\tret;\n}}\n")
}
