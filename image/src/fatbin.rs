//! The fatbin container (magic `0xBA55ED50`) and its entries, as nvcc's `fatbinary` writes
//! them (layout measured on nvcc 13.5's output; see `docs/module-images.md`).
//!
//! ```text
//! container: u32 magic, u16 version (1), u16 header size (16), u64 size of the entries
//! entry:     0x00 u16 kind (1 PTX, 2 ELF)   0x02 u16 (0x0101)     0x04 u32 header size
//!            0x08 u64 payload size (padded; the next entry follows the payload)
//!            0x10 u32 compressed size       0x14 u32 offset of the options descriptor
//!            0x18 u16 minor, u16 major      0x1c u32 sm (75 = 7.5)
//!            0x20 u32 offset, 0x24 u32 length of the source file name (with -G)
//!            0x28 u64 flags                 0x38 u64 uncompressed size
//!            options descriptor: u32 offset, u32 length of the option text (e.g.
//!            "--compile-only" for -rdc PTX), both inside the entry header.
//! ```

use crate::arch::{Arch, ArchVariant};
use crate::bytes::{slice, u16_at, u32_at, u64_at};
use crate::compress::{decompress, Compression};
use crate::error::{ImageError, Result};
use crate::limits::{Budget, Limits};
use crate::ptx::PtxVersion;
use std::borrow::Cow;

/// The first four bytes of a fatbin, little-endian.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Size of the container header nvcc writes.
pub const FATBIN_HEADER_SIZE: u16 = 16;
/// The smallest entry header (an ELF entry without a file name or options).
pub const ENTRY_HEADER_MIN: u32 = 64;

/// Entry flag: 64-bit code.
pub const FLAG_64BIT: u64 = 0x1;
/// Entry flag: built with debug information (`-G`).
pub const FLAG_DEBUG: u64 = 0x2;
/// Entry flag: for a Linux host.
pub const FLAG_LINUX: u64 = 0x10;
/// Entry flag: the payload is LZ4-compressed (block format).
pub const FLAG_LZ4: u64 = 0x2000;
/// Entry flag: the payload is Zstandard-compressed.
pub const FLAG_ZSTD: u64 = 0x8000;
/// Entry flag: architecture-specific code (`sm_90a`).
pub const FLAG_ARCH_SPECIFIC: u64 = 0x10_0000;
/// Entry flag: family-specific code (`sm_100f`).
pub const FLAG_FAMILY_SPECIFIC: u64 = 0x20_0000;

const WHAT: &str = "fatbin";
const ENTRY: &str = "fatbin entry";

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Ptx,
    Elf,
    /// A kind this crate does not know (kept, never selected).
    Other(u16),
}

/// One entry of a fatbin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: EntryKind,
    /// Offset of the entry header from the start of the fatbin.
    pub offset: usize,
    pub header_size: u32,
    /// For PTX the ISA version (9.5); for ELF the cubin format version nvcc writes (1.8).
    pub version: PtxVersion,
    pub arch: Arch,
    pub flags: u64,
    pub compression: Compression,
    /// The decompressed size a compressed entry declares (0 when not compressed).
    pub uncompressed_size: u64,
    /// The source file name nvcc records with `-G`.
    pub name: Option<&'a [u8]>,
    /// The option text of the entry (PTX: the options ptxas must be given, e.g.
    /// `--compile-only` for relocatable device code).
    pub options: Option<&'a [u8]>,
    /// The payload exactly as stored (the compressed bytes of a compressed entry; an
    /// uncompressed payload keeps its zero padding).
    pub stored: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The entry's contents, decompressed if needed (at most [`Limits::max_entry_bytes`]).
    pub fn contents(&self, limits: &Limits) -> Result<Cow<'a, [u8]>> {
        self.contents_in(&Budget::new(limits))
    }

    pub(crate) fn contents_in(&self, budget: &Budget) -> Result<Cow<'a, [u8]>> {
        match self.compression {
            Compression::None => Ok(Cow::Borrowed(self.stored)),
            c => decompress(c, self.stored, self.uncompressed_size, budget).map(Cow::Owned),
        }
    }

    /// The option text, trimmed (`None` when empty).
    pub fn options_text(&self) -> Option<String> {
        let o = String::from_utf8_lossy(self.options?);
        let o = o.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        (!o.is_empty()).then(|| o.to_string())
    }

    /// Whether this is PTX of relocatable device code (`-rdc=true`): ptxas is told
    /// `--compile-only`, and the module must be linked with the others of the program.
    pub fn is_relocatable_ptx(&self) -> bool {
        self.kind == EntryKind::Ptx
            && self.options_text().is_some_and(|o| {
                o.split_whitespace()
                    .any(|w| w == "--compile-only" || w == "-c")
            })
    }
}

/// A parsed fatbin container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatbin<'a> {
    pub version: u16,
    pub header_size: u16,
    pub entries: Vec<Entry<'a>>,
    bytes: &'a [u8],
}

/// Whether `bytes` start with the fatbin magic.
pub fn is_fatbin(bytes: &[u8]) -> bool {
    u32_at(bytes, 0) == Some(FATBIN_MAGIC)
}

/// The length of the fatbin that starts `prefix` (header size + fat size), from its first 16
/// bytes; `None` if fewer are given. Errors if the header is not a fatbin's.
pub fn fatbin_len(prefix: &[u8]) -> Result<Option<u64>> {
    if prefix.len() < usize::from(FATBIN_HEADER_SIZE) {
        return Ok(None);
    }
    let (hs, fat) = header(prefix)?;
    Ok(Some(hs.checked_add(fat).ok_or_else(|| {
        ImageError::malformed(WHAT, "header size + fat size overflows")
    })?))
}

fn header(b: &[u8]) -> Result<(u64, u64)> {
    let magic = u32_at(b, 0).ok_or_else(|| ImageError::truncated(WHAT, 0, 16, b.len()))?;
    if magic != FATBIN_MAGIC {
        return Err(ImageError::malformed(
            WHAT,
            format!("bad magic {magic:#010x}"),
        ));
    }
    let hs = u16_at(b, 6).ok_or_else(|| ImageError::truncated(WHAT, 0, 16, b.len()))?;
    let fat = u64_at(b, 8).ok_or_else(|| ImageError::truncated(WHAT, 0, 16, b.len()))?;
    if hs < FATBIN_HEADER_SIZE {
        return Err(ImageError::malformed(
            WHAT,
            format!("header size {hs} < 16"),
        ));
    }
    Ok((u64::from(hs), fat))
}

impl<'a> Fatbin<'a> {
    /// Parses the fatbin at the start of `bytes` (bytes after its end are ignored; see
    /// [`Fatbin::len`]). Entries are not decompressed.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<Self> {
        let (hs, fat) = header(bytes)?;
        let version = u16_at(bytes, 4).unwrap_or_default();
        if version != 1 {
            return Err(ImageError::malformed(
                WHAT,
                format!("unknown container version {version}"),
            ));
        }
        let total = hs
            .checked_add(fat)
            .ok_or_else(|| ImageError::malformed(WHAT, "header size + fat size overflows"))?;
        let all = slice(bytes, 0, total)
            .ok_or_else(|| ImageError::truncated(WHAT, 0, total, bytes.len()))?;
        let mut entries = Vec::new();
        let mut off = hs;
        while off < total {
            let rest = &all[off as usize..];
            if rest.iter().all(|&b| b == 0) {
                break; // zero padding after the last entry
            }
            if entries.len() >= limits.max_entries {
                return Err(ImageError::TooMany {
                    what: "entries in a fatbin",
                    limit: limits.max_entries as u64,
                });
            }
            let (entry, next) = parse_entry(all, off)?;
            entries.push(entry);
            off = next;
        }
        Ok(Fatbin {
            version,
            header_size: hs as u16,
            entries,
            bytes: all,
        })
    }

    /// The fatbin's bytes: its header and all its entries.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Its length in bytes (header size + fat size).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn ptx_entries(&self) -> impl Iterator<Item = &Entry<'a>> {
        self.entries.iter().filter(|e| e.kind == EntryKind::Ptx)
    }

    pub fn elf_entries(&self) -> impl Iterator<Item = &Entry<'a>> {
        self.entries.iter().filter(|e| e.kind == EntryKind::Elf)
    }

    /// The PTX entry to compile for a device of compute capability `device_sm`, accepting
    /// ISA versions up to `max_ptx`: the highest architecture that runs on the device, then
    /// the highest ISA version, then the generic variant over family- and arch-specific ones.
    /// Errors say why nothing fits: no PTX at all or none for this device
    /// ([`ImageError::NoBinaryForGpu`]), or only newer ISA versions
    /// ([`ImageError::UnsupportedPtxVersion`]).
    pub fn best_ptx(&self, device_sm: u32, max_ptx: PtxVersion) -> Result<&Entry<'a>> {
        let runs: Vec<&Entry<'a>> = self
            .ptx_entries()
            .filter(|e| e.arch.ptx_runs_on(device_sm))
            .collect();
        let best = runs
            .iter()
            .filter(|e| e.version <= max_ptx)
            .max_by_key(|e| (e.arch.sm, e.version, std::cmp::Reverse(e.arch.variant)));
        if let Some(e) = best {
            return Ok(e);
        }
        if let Some(e) = runs.iter().min_by_key(|e| e.version) {
            return Err(ImageError::UnsupportedPtxVersion {
                found: e.version.to_string(),
                max: max_ptx.to_string(),
            });
        }
        let archs: Vec<String> = self
            .ptx_entries()
            .map(|e| e.arch.to_string().replace("sm_", "compute_"))
            .collect();
        let sass: Vec<String> = self.elf_entries().map(|e| e.arch.to_string()).collect();
        Err(ImageError::NoBinaryForGpu(if archs.is_empty() {
            format!(
                "the fatbin has no PTX (SASS only: {}); rebuild with PTX, e.g. nvcc -gencode arch=compute_75,code=compute_75",
                if sass.is_empty() { "none".to_string() } else { sass.join(", ") }
            )
        } else {
            format!(
                "the fatbin's PTX is for {}, not for compute capability {}",
                archs.join(", "),
                crate::arch::cc(device_sm)
            )
        }))
    }

    /// Every PTX entry with an ISA version up to `max_ptx` whose architecture is at most
    /// `up_to_sm` (any variant), best first: highest architecture, highest version, generic
    /// before family- and arch-specific. For an executor that is not bound by a GPU's
    /// architecture (the CPU executor interprets any PTX it can parse) and tries each in turn:
    /// CuPy's CUB kernels, for one, carry PTX only for compute_100.
    pub fn ptx_candidates(&self, up_to_sm: u32, max_ptx: PtxVersion) -> Vec<&Entry<'a>> {
        let mut v: Vec<&Entry<'a>> = self
            .ptx_entries()
            .filter(|e| e.arch.sm <= up_to_sm && e.version <= max_ptx)
            .collect();
        v.sort_by_key(|e| {
            std::cmp::Reverse((e.arch.sm, e.version, std::cmp::Reverse(e.arch.variant)))
        });
        v
    }

    /// The ELF (SASS) entry that runs on a device of compute capability `device_sm`: the
    /// highest architecture that runs there, preferring arch-specific code for the exact
    /// device (what the driver picks).
    pub fn best_elf(&self, device_sm: u32) -> Option<&Entry<'a>> {
        self.elf_entries()
            .filter(|e| e.arch.sass_runs_on(device_sm))
            .max_by_key(|e| (e.arch.sm, e.arch.variant))
    }
}

/// Parses every fatbin in `bytes` one after the other, as a host object's `.nv_fatbin`
/// section holds them (each 8-byte aligned, zero padding between them).
pub fn parse_sequence<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Vec<Fatbin<'a>>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let skip = rest.iter().take_while(|&&b| b == 0).count();
        if skip == rest.len() {
            break;
        }
        off += skip;
        if out.len() >= limits.max_parts {
            return Err(ImageError::TooMany {
                what: "fatbins in a section",
                limit: limits.max_parts as u64,
            });
        }
        let f = Fatbin::parse(&bytes[off..], limits)?;
        off += f.len();
        out.push(f);
    }
    Ok(out)
}

fn parse_entry(all: &[u8], off: u64) -> Result<(Entry<'_>, u64)> {
    let h = |n: u64| ImageError::truncated(ENTRY, off, n, all.len());
    let kind = u16_at(all, off).ok_or_else(|| h(ENTRY_HEADER_MIN as u64))?;
    let hs = u32_at(all, off + 4).ok_or_else(|| h(ENTRY_HEADER_MIN as u64))?;
    if hs < ENTRY_HEADER_MIN {
        return Err(ImageError::malformed(
            ENTRY,
            format!("header size {hs} at offset {off} < 64"),
        ));
    }
    let hdr = slice(all, off, u64::from(hs)).ok_or_else(|| h(u64::from(hs)))?;
    let rd32 = |o: u64| u32_at(hdr, o).unwrap_or_default();
    let rd64 = |o: u64| u64_at(hdr, o).unwrap_or_default();
    let payload_size = rd64(0x08);
    let compressed_size = u64::from(rd32(0x10));
    let options_desc = u64::from(rd32(0x14));
    let minor = u16_at(hdr, 0x18).unwrap_or_default();
    let major = u16_at(hdr, 0x1a).unwrap_or_default();
    let sm = rd32(0x1c);
    let flags = rd64(0x28);
    let uncompressed_size = rd64(0x38);
    let payload_off = off
        .checked_add(u64::from(hs))
        .ok_or_else(|| ImageError::malformed(ENTRY, "offset overflows"))?;
    let payload = slice(all, payload_off, payload_size).ok_or_else(|| {
        ImageError::malformed(
            ENTRY,
            format!(
                "payload of {payload_size} bytes at offset {payload_off} runs past the fatbin's end ({} bytes)",
                all.len()
            ),
        )
    })?;
    let next = payload_off + payload_size; // in bounds: slice() succeeded
    let compression = match (flags & FLAG_LZ4 != 0, flags & FLAG_ZSTD != 0) {
        (false, false) => Compression::None,
        (true, false) => Compression::Lz4,
        (false, true) => Compression::Zstd,
        (true, true) => return Err(ImageError::malformed(ENTRY, "both LZ4 and ZSTD flags set")),
    };
    let stored = if compression == Compression::None {
        payload
    } else {
        if compressed_size == 0 || compressed_size > payload_size {
            return Err(ImageError::malformed(
                ENTRY,
                format!("compressed size {compressed_size} does not fit the payload of {payload_size} bytes"),
            ));
        }
        &payload[..compressed_size as usize]
    };
    let in_header = |o: u64, len: u64| -> Result<Option<&[u8]>> {
        if len == 0 {
            return Ok(None);
        }
        slice(hdr, o, len).map(Some).ok_or_else(|| {
            ImageError::malformed(
                ENTRY,
                format!("field of {len} bytes at {o} lies outside the {hs}-byte header"),
            )
        })
    };
    let name = in_header(u64::from(rd32(0x20)), u64::from(rd32(0x24)))?;
    let options = if options_desc == 0 {
        None
    } else {
        let o = u32_at(hdr, options_desc).map(u64::from);
        let l = u32_at(hdr, options_desc.saturating_add(4)).map(u64::from);
        match (o, l) {
            (Some(o), Some(l)) => in_header(o, l)?,
            _ => {
                return Err(ImageError::malformed(
                    ENTRY,
                    "options descriptor outside the header",
                ))
            }
        }
    };
    let variant = if flags & FLAG_ARCH_SPECIFIC != 0 {
        ArchVariant::Specific
    } else if flags & FLAG_FAMILY_SPECIFIC != 0 {
        ArchVariant::Family
    } else {
        ArchVariant::Generic
    };
    let kind = match kind {
        1 => EntryKind::Ptx,
        2 => EntryKind::Elf,
        k => EntryKind::Other(k),
    };
    Ok((
        Entry {
            kind,
            offset: off as usize,
            header_size: hs,
            version: PtxVersion::new(u32::from(major), u32::from(minor)),
            arch: Arch { sm, variant },
            flags,
            compression,
            uncompressed_size: if compression == Compression::None {
                0
            } else {
                uncompressed_size
            },
            name,
            options,
            stored,
        },
        next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fatbin, ptx_module, EntrySpec};

    fn l() -> Limits {
        Limits::default()
    }

    fn sample() -> Vec<u8> {
        let p = ptx_module("9.5", 75, "k");
        fatbin(&[
            EntrySpec::elf(75, &[0x7f; 40]),
            EntrySpec::ptx(75, &p).compressed(Compression::Zstd),
            EntrySpec::ptx(80, &p).compressed(Compression::Lz4),
        ])
    }

    #[test]
    fn synthetic_round_trip() {
        let b = sample();
        let f = Fatbin::parse(&b, &l()).unwrap();
        assert_eq!(f.entries.len(), 3);
        assert_eq!(f.len(), b.len());
        assert_eq!(f.entries[1].compression, Compression::Zstd);
        assert_eq!(f.entries[2].compression, Compression::Lz4);
        let want = ptx_module("9.5", 75, "k");
        for e in f.ptx_entries() {
            assert_eq!(&*e.contents(&l()).unwrap(), want.as_bytes());
        }
        assert_eq!(f.best_ptx(86, PtxVersion::new(9, 5)).unwrap().arch.sm, 80);
        assert_eq!(f.best_ptx(75, PtxVersion::new(9, 5)).unwrap().arch.sm, 75);
        // Zero padding after the fatbin and between fatbins of a section.
        let mut seq = b.clone();
        seq.extend_from_slice(&[0; 8]);
        seq.extend_from_slice(&b);
        seq.extend_from_slice(&[0; 3]);
        assert_eq!(parse_sequence(&seq, &l()).unwrap().len(), 2);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let good = sample();
        let patch = |off: usize, val: &[u8]| {
            let mut b = good.clone();
            b[off..off + val.len()].copy_from_slice(val);
            b
        };
        let e0 = 16; // first entry header
        for (what, b) in [
            ("magic", patch(0, &[0, 0, 0, 0])),
            ("version", patch(4, &2u16.to_le_bytes())),
            ("header size", patch(6, &8u16.to_le_bytes())),
            ("fat size", patch(8, &u64::MAX.to_le_bytes())),
            (
                "fat size past end",
                patch(8, &(good.len() as u64).to_le_bytes()),
            ),
            ("entry header size", patch(e0 + 4, &16u32.to_le_bytes())),
            (
                "entry header past end",
                patch(e0 + 4, &u32::MAX.to_le_bytes()),
            ),
            ("payload size", patch(e0 + 8, &u64::MAX.to_le_bytes())),
            (
                "payload size past end",
                patch(e0 + 8, &(good.len() as u64).to_le_bytes()),
            ),
            ("both compressions", patch(e0 + 0x29, &[0xa0])),
            ("compressed bigger than payload", {
                let mut b = patch(e0 + 0x29, &[0x80]);
                b[e0 + 0x10..e0 + 0x14].copy_from_slice(&1000u32.to_le_bytes());
                b
            }),
            (
                "name outside header",
                patch(e0 + 0x20, &[60, 0, 0, 0, 8, 0, 0, 0]),
            ),
            (
                "options outside header",
                patch(e0 + 0x14, &60u32.to_le_bytes()),
            ),
        ] {
            assert!(Fatbin::parse(&b, &l()).is_err(), "{what}");
        }
        for n in 0..good.len() {
            assert!(Fatbin::parse(&good[..n], &l()).is_err(), "truncated to {n}");
        }
        let few = Limits {
            max_entries: 2,
            ..l()
        };
        assert!(matches!(
            Fatbin::parse(&good, &few),
            Err(ImageError::TooMany { .. })
        ));
    }

    #[test]
    fn decompression_is_checked_against_the_header() {
        let good = sample();
        let f = Fatbin::parse(&good, &l()).unwrap();
        let z = f.entries[1].offset;
        // A declared size other than the stream's: refused.
        for size in [1u64, 10, 1 << 20] {
            let mut b = good.clone();
            b[z + 0x38..z + 0x40].copy_from_slice(&size.to_le_bytes());
            let f = Fatbin::parse(&b, &l()).unwrap();
            assert!(f.entries[1].contents(&l()).is_err(), "zstd {size}");
            assert!(f.entries[2].contents(&l()).is_ok());
        }
        // A declared size over the limit: refused before allocating.
        let mut b = good.clone();
        b[z + 0x38..z + 0x40].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let f = Fatbin::parse(&b, &l()).unwrap();
        assert!(matches!(
            f.entries[1].contents(&l()),
            Err(ImageError::TooLarge { .. })
        ));
    }

    #[test]
    fn selection_reasons() {
        let p = ptx_module("9.5", 75, "k");
        let b = fatbin(&[EntrySpec::elf(75, &[1; 8])]);
        let f = Fatbin::parse(&b, &l()).unwrap();
        let e = f.best_ptx(75, PtxVersion::new(9, 5)).unwrap_err();
        assert!(
            e.to_string().contains("no PTX") && e.to_string().contains("sm_75"),
            "{e}"
        );
        let b = fatbin(&[EntrySpec::ptx(86, &p)]);
        let f = Fatbin::parse(&b, &l()).unwrap();
        let e = f.best_ptx(75, PtxVersion::new(9, 5)).unwrap_err();
        assert!(
            e.to_string().contains("compute_86") && e.to_string().contains("7.5"),
            "{e}"
        );
        let mut new = EntrySpec::ptx(75, &p);
        new.version = (9, 9);
        let b = fatbin(&[new.clone(), EntrySpec::ptx(70, &p)]);
        let f = Fatbin::parse(&b, &l()).unwrap();
        // The older-architecture PTX in an accepted version wins over a too-new one.
        assert_eq!(f.best_ptx(75, PtxVersion::new(9, 5)).unwrap().arch.sm, 70);
        let b = fatbin(&[new]);
        let f = Fatbin::parse(&b, &l()).unwrap();
        assert!(matches!(
            f.best_ptx(75, PtxVersion::new(9, 5)),
            Err(ImageError::UnsupportedPtxVersion { .. })
        ));
        // Generic PTX is preferred to arch-specific PTX of the same architecture.
        let mut a = EntrySpec::ptx(90, &p);
        a.extra_flags = FLAG_ARCH_SPECIFIC;
        let b = fatbin(&[a, EntrySpec::ptx(90, &p)]);
        let f = Fatbin::parse(&b, &l()).unwrap();
        let e = f.best_ptx(90, PtxVersion::new(9, 5)).unwrap();
        assert_eq!(e.arch.variant, ArchVariant::Generic);
        let c = f.ptx_candidates(200, PtxVersion::new(9, 5));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].arch.variant, ArchVariant::Generic);
        assert!(f.ptx_candidates(89, PtxVersion::new(9, 5)).is_empty());
        // ... and SASS for the exact device prefers the arch-specific build.
        let mut a = EntrySpec::elf(90, &[1; 8]);
        a.extra_flags = FLAG_ARCH_SPECIFIC;
        let b = fatbin(&[EntrySpec::elf(90, &[1; 8]), a]);
        let f = Fatbin::parse(&b, &l()).unwrap();
        assert_eq!(f.best_elf(90).unwrap().arch.variant, ArchVariant::Specific);
    }
}
