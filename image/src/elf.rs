//! Cubins: the ELF files (`e_machine` 190, `EM_CUDA`) that hold SASS. Parsed with the
//! `object` crate (fuzzed upstream, no panics on malformed files); this module reads what the
//! backend needs from them: the architecture from `e_flags`, whether the file is relocatable
//! (`-rdc`), and the kernels with their parameter layout, register count and static shared
//! memory from the `.nv.info` attribute sections.

use crate::arch::Arch;
use crate::bytes::{slice, u16_at, u32_at, u8_at};
use crate::error::{ImageError, Result};
use object::elf::{ET_REL, STT_FUNC};
use object::read::elf::{ElfFile64, FileHeader, Sym};
use object::{LittleEndian, Object, ObjectSection, ObjectSymbol};
use std::collections::HashMap;

/// `e_machine` of a cubin.
pub const EM_CUDA: u16 = 190;
/// `st_other` bit of a kernel (entry function) symbol.
pub const STO_CUDA_ENTRY: u8 = 0x10;

const WHAT: &str = "cubin";

/// `.nv.info` record formats.
const EIFMT_SVAL: u8 = 4;
/// `.nv.info` attributes this module reads.
const EIATTR_FRAME_SIZE: u8 = 0x11;
const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIATTR_CBANK_PARAM_SIZE: u8 = 0x19;
const EIATTR_REGCOUNT: u8 = 0x2f;

/// Whether `bytes` start with the header of a 64-bit little-endian CUDA ELF.
pub fn is_cubin(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF\x02\x01") && u16_at(bytes, 0x12) == Some(EM_CUDA)
}

/// One kernel parameter as `.nv.info` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelParam {
    /// Position in the kernel's parameter list.
    pub ordinal: u32,
    /// Byte offset in the parameter buffer.
    pub offset: u32,
    pub size: u32,
}

/// A kernel (an entry function) of a cubin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: String,
    /// Parameters sorted by ordinal (empty for a kernel without parameters, or when the
    /// cubin has no `.nv.info` for it).
    pub params: Vec<KernelParam>,
    /// Total size of the parameter buffer (`EIATTR_CBANK_PARAM_SIZE`).
    pub param_bytes: Option<u32>,
    /// Registers per thread (`EIATTR_REGCOUNT`).
    pub registers: Option<u32>,
    /// Local memory (stack frame) per thread (`EIATTR_FRAME_SIZE`).
    pub local_bytes: Option<u32>,
    /// Static shared memory (`.nv.shared.<name>`).
    pub static_shared_bytes: u64,
}

/// What a cubin holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cubin {
    /// The architecture from `e_flags` (the variant is not recorded there: a fatbin entry's
    /// flags carry it).
    pub arch: Arch,
    /// `EI_ABIVERSION` (8 for CUDA 13's cubins, 7 before).
    pub abi_version: u8,
    /// `ET_REL`: relocatable device code (`-rdc`), to be linked before it can be loaded.
    pub relocatable: bool,
    pub kernels: Vec<Kernel>,
}

impl Cubin {
    /// Parses a cubin. `bytes` may extend past the ELF's end.
    pub fn parse(bytes: &[u8]) -> Result<Cubin> {
        if !is_cubin(bytes) {
            return Err(ImageError::malformed(
                WHAT,
                "not a 64-bit little-endian CUDA ELF file",
            ));
        }
        let file = ElfFile64::<LittleEndian>::parse(bytes)
            .map_err(|e| ImageError::malformed(WHAT, format!("bad ELF: {e}")))?;
        let hdr = file.elf_header();
        let e_flags = hdr.e_flags(LittleEndian);
        let abi_version = u8_at(bytes, 8).unwrap_or_default();
        let arch = Arch::generic(arch_from_flags(abi_version, e_flags));
        let relocatable = hdr.e_type(LittleEndian) == ET_REL;

        // One pass over the sections (a name lookup per kernel would be quadratic).
        let mut sections = HashMap::new();
        for s in file.sections() {
            if let Ok(name) = s.name() {
                sections.entry(name).or_insert(s);
            }
        }
        // Per-symbol attributes from the global `.nv.info` section.
        let mut registers = HashMap::new();
        let mut frames = HashMap::new();
        if let Some(s) = sections.get(".nv.info") {
            let data = s
                .data()
                .map_err(|e| ImageError::malformed(WHAT, format!(".nv.info: {e}")))?;
            for (attr, val) in attributes(data) {
                if let (Some(sym), Some(v)) = (u32_at(val, 0), u32_at(val, 4)) {
                    match attr {
                        EIATTR_REGCOUNT => {
                            registers.insert(sym as usize, v);
                        }
                        EIATTR_FRAME_SIZE => {
                            frames.insert(sym as usize, v);
                        }
                        _ => {}
                    }
                }
            }
        }

        let mut kernels = Vec::new();
        for sym in file.symbols() {
            let raw = sym.elf_symbol();
            if raw.st_type() != STT_FUNC || raw.st_other() & STO_CUDA_ENTRY == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            let mut params = Vec::new();
            let mut param_bytes = None;
            if let Some(s) = sections.get(format!(".nv.info.{name}").as_str()) {
                let data = s
                    .data()
                    .map_err(|e| ImageError::malformed(WHAT, format!(".nv.info.{name}: {e}")))?;
                for (attr, val) in attributes(data) {
                    match attr {
                        EIATTR_KPARAM_INFO => {
                            if let (Some(ord), Some(off), Some(packed)) =
                                (u16_at(val, 4), u16_at(val, 6), u32_at(val, 8))
                            {
                                params.push(KernelParam {
                                    ordinal: u32::from(ord),
                                    offset: u32::from(off),
                                    size: (packed >> 18) & 0x3fff,
                                });
                            }
                        }
                        EIATTR_CBANK_PARAM_SIZE => param_bytes = u16_at(val, 0).map(u32::from),
                        _ => {}
                    }
                }
            }
            params.sort_by_key(|p| p.ordinal);
            let static_shared_bytes = sections
                .get(format!(".nv.shared.{name}").as_str())
                .map_or(0, |s| s.size());
            kernels.push(Kernel {
                name: name.to_string(),
                params,
                param_bytes,
                registers: registers.get(&sym.index().0).copied(),
                local_bytes: frames.get(&sym.index().0).copied(),
                static_shared_bytes,
            });
        }
        Ok(Cubin {
            arch,
            abi_version,
            relocatable,
            kernels,
        })
    }

    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

/// The compute capability in a cubin's `e_flags`: bits 8..16 from ABI version 8 (CUDA 13)
/// on, bits 0..8 before.
pub fn arch_from_flags(abi_version: u8, e_flags: u32) -> u32 {
    if abi_version >= 8 {
        (e_flags >> 8) & 0xff
    } else {
        e_flags & 0xff
    }
}

/// The records of an `.nv.info` section as (attribute, value bytes). Every record has a
/// 4-byte head (format, attribute, 16-bit value or size); `EIFMT_SVAL` records are followed
/// by `size` value bytes, the others carry their value in the head. A truncated record ends
/// the list.
fn attributes(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut off = 0u64;
    std::iter::from_fn(move || {
        let fmt = u8_at(data, off)?;
        let attr = u8_at(data, off + 1)?;
        let v16 = u16_at(data, off + 2)?;
        if fmt == EIFMT_SVAL {
            let val = slice(data, off + 4, u64::from(v16))?;
            off += 4 + u64::from(v16);
            Some((attr, val))
        } else {
            let val = slice(data, off + 2, 2)?;
            off += 4;
            Some((attr, val))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_from_both_abi_versions() {
        assert_eq!(arch_from_flags(8, 0x0600_4b04), 75);
        assert_eq!(arch_from_flags(8, 0x0600_6402), 100);
        assert_eq!(arch_from_flags(7, 0x0050_0550), 0x50);
    }

    #[test]
    fn nv_info_records() {
        let data = [
            4, 0x17, 12, 0, 0, 0, 0, 0, 3, 0, 0x18, 0, 0x00, 0xf0, 0x11, 0x00, // KPARAM_INFO
            3, 0x19, 0x1c, 0, // CBANK_PARAM_SIZE = 28
            4, 0x1c, 200, 0, // truncated SVAL: ends the list
        ];
        let recs: Vec<_> = attributes(&data).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].0, EIATTR_KPARAM_INFO);
        assert_eq!(u16_at(recs[1].1, 0), Some(28));
    }

    #[test]
    fn refuses_non_cuda_elf() {
        assert!(Cubin::parse(b"\x7fELF\x02\x01\x01\0").is_err());
        let mut h = [0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[0x12] = 190;
        assert!(is_cubin(&h));
        // A header whose section table lies outside the file.
        h[0x28] = 0xff;
        h[0x3c] = 3;
        h[0x3a] = 64;
        assert!(Cubin::parse(&h).is_err());
    }
}

#[cfg(test)]
mod synthetic {
    use super::*;
    use crate::testing::cubin;

    #[test]
    fn synthetic_cubin() {
        let b = cubin(86, "k", &[(0, 8), (8, 4), (16, 8)], 512, 24);
        let c = Cubin::parse(&b).unwrap();
        assert_eq!((c.arch.sm, c.abi_version, c.relocatable), (86, 8, false));
        let k = c.kernel("k").unwrap();
        let p: Vec<_> = k
            .params
            .iter()
            .map(|p| (p.ordinal, p.offset, p.size))
            .collect();
        assert_eq!(p, [(0, 0, 8), (1, 8, 4), (2, 16, 8)]);
        assert_eq!(
            (k.param_bytes, k.registers, k.static_shared_bytes),
            (Some(24), Some(24), 512)
        );
        assert_eq!(crate::probe(&b[..10]).unwrap(), crate::Probe::NeedBytes(64));
        assert_eq!(
            crate::probe(&b).unwrap(),
            crate::Probe::Length(b.len() as u64)
        );
    }
}
