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

/// A minimal cubin as nvcc lays one out (ABI version 8, `EM_CUDA`, executable): one kernel
/// `name` with 4- and 8-byte parameters at the given offsets, `shared` bytes of static shared
/// memory and `regs` registers, described in `.nv.info`/`.nv.info.<name>`.
pub fn cubin(sm: u32, name: &str, params: &[(u16, u32)], shared: u64, regs: u32) -> Vec<u8> {
    // Section names.
    let mut shstr = vec![0u8];
    let add = |s: &str, t: &mut Vec<u8>| {
        let o = t.len() as u32;
        t.extend_from_slice(s.as_bytes());
        t.push(0);
        o
    };
    let n_shstrtab = add(".shstrtab", &mut shstr);
    let n_strtab = add(".strtab", &mut shstr);
    let n_symtab = add(".symtab", &mut shstr);
    let n_info = add(".nv.info", &mut shstr);
    let n_kinfo = add(&format!(".nv.info.{name}"), &mut shstr);
    let n_text = add(&format!(".text.{name}"), &mut shstr);
    let n_shared = add(&format!(".nv.shared.{name}"), &mut shstr);
    let mut strtab = vec![0u8];
    let s_name = add(name, &mut strtab);
    // Symbols: null, the kernel (global FUNC, STO_CUDA_ENTRY, in section 6 = .text.<name>).
    let mut symtab = vec![0u8; 24];
    let mut sym = vec![0u8; 24];
    sym[0..4].copy_from_slice(&s_name.to_le_bytes());
    sym[4] = 0x12; // STB_GLOBAL | STT_FUNC
    sym[5] = 0x10; // STO_CUDA_ENTRY
    sym[6..8].copy_from_slice(&6u16.to_le_bytes());
    sym[16..24].copy_from_slice(&16u64.to_le_bytes());
    symtab.extend_from_slice(&sym);
    // .nv.info: EIATTR_REGCOUNT (symbol 1).
    let mut info = vec![4u8, 0x2f, 8, 0];
    info.extend_from_slice(&1u32.to_le_bytes());
    info.extend_from_slice(&regs.to_le_bytes());
    // .nv.info.<name>: KPARAM_INFO per parameter, CBANK_PARAM_SIZE.
    let mut kinfo = Vec::new();
    let mut end = 0u32;
    for (ord, &(off, size)) in params.iter().enumerate().rev() {
        kinfo.extend_from_slice(&[4, 0x17, 12, 0, 0, 0, 0, 0]);
        kinfo.extend_from_slice(&(ord as u16).to_le_bytes());
        kinfo.extend_from_slice(&off.to_le_bytes());
        kinfo.extend_from_slice(&((size << 18) | 0x1f000).to_le_bytes());
        end = end.max(u32::from(off) + size);
    }
    kinfo.extend_from_slice(&[3, 0x19]);
    kinfo.extend_from_slice(&(end as u16).to_le_bytes());
    let text = vec![0u8; 16];
    // Layout: header, section data, section headers.
    /// (data, name, type, entsize, link, info)
    type Section<'a> = (&'a [u8], u32, u32, u64, u32, u32);
    let datas: [Section<'_>; 7] = [
        (&shstr, n_shstrtab, 3, 0, 0, 0),
        (&strtab, n_strtab, 3, 0, 0, 0),
        (&symtab, n_symtab, 2, 24, 2, 1),
        (&info, n_info, 0x7000_0000, 0, 3, 0),
        (&kinfo, n_kinfo, 0x7000_0000, 0, 3, 6),
        (&text, n_text, 1, 0, 3, 0),
        (&[], n_shared, 8, 0, 0, 6),
    ];
    let mut out = vec![0u8; 64];
    let mut offs = Vec::new();
    for (d, ..) in &datas {
        while out.len() % 8 != 0 {
            out.push(0);
        }
        offs.push(out.len() as u64);
        out.extend_from_slice(d);
    }
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    out.extend_from_slice(&[0u8; 64]); // the null section
    for (i, (d, n, t, es, link, info)) in datas.iter().enumerate() {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&n.to_le_bytes());
        h[4..8].copy_from_slice(&t.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&offs[i].to_le_bytes());
        let size = if *t == 8 { shared } else { d.len() as u64 };
        h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        h[0x28..0x2c].copy_from_slice(&link.to_le_bytes());
        h[0x2c..0x30].copy_from_slice(&info.to_le_bytes());
        h[0x30..0x38].copy_from_slice(&1u64.to_le_bytes());
        h[0x38..0x40].copy_from_slice(&es.to_le_bytes());
        out.extend_from_slice(&h);
    }
    let h = &mut out[..64];
    h[..9].copy_from_slice(b"\x7fELF\x02\x01\x01\x41\x08");
    h[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[0x12..0x14].copy_from_slice(&190u16.to_le_bytes());
    h[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    h[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    h[0x30..0x34].copy_from_slice(&(0x0600_0004 | (sm << 8)).to_le_bytes());
    h[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    h[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    h[0x3c..0x3e].copy_from_slice(&8u16.to_le_bytes());
    h[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
    out
}
