//! The netgpu link container: what the guest library's `cuLinkComplete` returns (as the
//! "cubin" a program then passes to `cuModuleLoadData`) and what it sends for a device-linked
//! `-rdc` program. It carries the linker's inputs unlinked, so each executor links them its
//! own way: the CUDA executor with the GPU driver's linker, the CPU executor by loading the
//! PTX modules together. Format version 1 (all integers little-endian):
//!
//! ```text
//! header (32 bytes)
//!   0   [u8; 8] magic  AB 4E 47 4C 4E 4B 0D 0A  ("\xABNGLNK\r\n")
//!   8   u16 format version (1)
//!   10  u16 header size (32; a reader skips what it does not know)
//!   12  u32 number of parts
//!   16  u64 total length of the container in bytes
//!   24  u32 part entry size (40)
//!   28  u32 flags (0)
//! part table at `header size`: one entry per part
//!   0   u32 kind: 1 PTX, 2 cubin, 3 fatbin, 4 host object, 5 library (ar), 6 link container
//!   4   u32 flags: bit 0 DEVICE_LINKED (see `Role`)
//!   8   u64 offset of the data from the container's start
//!   16  u64 length of the data
//!   24  u64 offset of the name (UTF-8, no NUL; for messages)
//!   32  u32 length of the name (at most 4096)
//!   36  u32 reserved (0)
//! names and data follow the table, each data block 8-byte aligned.
//! ```
//!
//! The magic's first byte is not ASCII, so a container is never taken for PTX text, and
//! differs from the ELF, fatbin and wrapper magics.

use crate::bytes::{align_up, slice, u16_at, u32_at, u64_at};
use crate::error::{ImageError, Result};
use crate::limits::Limits;

pub const LINK_MAGIC: [u8; 8] = *b"\xABNGLNK\r\n";
pub const LINK_VERSION: u16 = 1;
pub const LINK_HEADER_SIZE: u16 = 32;
pub const LINK_ENTRY_SIZE: u32 = 40;
/// Part flag: the part is a device-linked image of all the `Input` parts.
pub const PART_DEVICE_LINKED: u32 = 1;
/// The longest part name.
pub const MAX_NAME: usize = 4096;

const WHAT: &str = "link container";

/// What a part holds (the `CUjitInputType` a program passed, resolved to a format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartKind {
    Ptx = 1,
    Cubin = 2,
    Fatbin = 3,
    /// A host object file (ELF) whose `.nv_fatbin`/`__nv_relfatbin` sections hold fatbins.
    Object = 4,
    /// An `ar` archive of host objects (`libfoo.a`).
    Library = 5,
    /// Another link container (a `cuLinkComplete` result passed back to `cuLinkAddData`).
    Link = 6,
}

impl PartKind {
    pub fn from_u32(v: u32) -> Option<PartKind> {
        Some(match v {
            1 => PartKind::Ptx,
            2 => PartKind::Cubin,
            3 => PartKind::Fatbin,
            4 => PartKind::Object,
            5 => PartKind::Library,
            6 => PartKind::Link,
            _ => return None,
        })
    }

    /// The kind for a `CUjitInputType` of `cuLinkAddData` (`CU_JIT_INPUT_CUBIN` 0, `_PTX` 1,
    /// `_FATBINARY` 2, `_OBJECT` 3, `_LIBRARY` 4); `None` for NVVM IR (5, link-time
    /// optimisation), which netgpu does not take. A cubin that is really a link container
    /// (one returned by `cuLinkComplete`) should be passed as [`PartKind::Link`]:
    /// [`crate::detect`] tells them apart.
    pub fn from_jit_input_type(t: u32) -> Option<PartKind> {
        Some(match t {
            0 => PartKind::Cubin,
            1 => PartKind::Ptx,
            2 => PartKind::Fatbin,
            3 => PartKind::Object,
            4 => PartKind::Library,
            _ => return None,
        })
    }
}

/// How a part relates to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// An input to be linked with the other inputs.
    Input,
    /// The device-linked image of all the inputs (the `data` fatbin of a version 2 wrapper):
    /// an executor that can run it may load it instead of linking the inputs.
    DeviceLinked,
}

/// One part of a link container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkPart<'a> {
    pub kind: PartKind,
    pub role: Role,
    /// A name for messages (the name given to `cuLinkAddData`, a file name, "unit 2", ...).
    pub name: &'a str,
    pub data: &'a [u8],
}

/// Whether `bytes` start with the link container magic.
pub fn is_link_container(bytes: &[u8]) -> bool {
    bytes.starts_with(&LINK_MAGIC)
}

/// The total length a container header declares (from its first 32 bytes; `None` if fewer).
pub fn link_len(prefix: &[u8]) -> Result<Option<u64>> {
    if prefix.len() < usize::from(LINK_HEADER_SIZE) {
        return Ok(None);
    }
    let h = header(prefix)?;
    Ok(Some(h.total))
}

/// Builds a container from parts, in order.
pub fn encode(parts: &[LinkPart<'_>]) -> Result<Vec<u8>> {
    let count = u32::try_from(parts.len()).map_err(|_| ImageError::TooMany {
        what: "parts in a link container",
        limit: u64::from(u32::MAX),
    })?;
    let table_end = u64::from(LINK_HEADER_SIZE) + u64::from(LINK_ENTRY_SIZE) * u64::from(count);
    let mut names = Vec::new();
    let mut name_offs = Vec::new();
    for p in parts {
        let name = &p.name.as_bytes()[..floor_char_boundary(p.name, MAX_NAME)];
        name_offs.push((table_end + names.len() as u64, name.len() as u32));
        names.extend_from_slice(name);
    }
    let mut off = align_up(table_end + names.len() as u64, 8).unwrap_or(u64::MAX);
    let mut data_offs = Vec::new();
    for p in parts {
        data_offs.push(off);
        off = align_up(off + p.data.len() as u64, 8).unwrap_or(u64::MAX);
    }
    let total = data_offs.last().map_or(off, |&last| {
        last + parts.last().map_or(0, |p| p.data.len() as u64)
    });
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&LINK_MAGIC);
    out.extend_from_slice(&LINK_VERSION.to_le_bytes());
    out.extend_from_slice(&LINK_HEADER_SIZE.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&LINK_ENTRY_SIZE.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for ((p, &(noff, nlen)), &doff) in parts.iter().zip(&name_offs).zip(&data_offs) {
        out.extend_from_slice(&(p.kind as u32).to_le_bytes());
        let flags = match p.role {
            Role::Input => 0,
            Role::DeviceLinked => PART_DEVICE_LINKED,
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&doff.to_le_bytes());
        out.extend_from_slice(&(p.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&noff.to_le_bytes());
        out.extend_from_slice(&nlen.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out.extend_from_slice(&names);
    for (p, &doff) in parts.iter().zip(&data_offs) {
        out.resize(doff as usize, 0);
        out.extend_from_slice(p.data);
    }
    debug_assert_eq!(out.len() as u64, total);
    Ok(out)
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

struct Header {
    header_size: u64,
    count: u32,
    total: u64,
    entry_size: u64,
}

fn header(b: &[u8]) -> Result<Header> {
    let t = || ImageError::truncated(WHAT, 0, u64::from(LINK_HEADER_SIZE), b.len());
    if !is_link_container(b) {
        return Err(ImageError::malformed(WHAT, "bad magic"));
    }
    let version = u16_at(b, 8).ok_or_else(t)?;
    if version != LINK_VERSION {
        return Err(ImageError::malformed(
            WHAT,
            format!("format version {version}; this netgpu reads version {LINK_VERSION} (update the backend or the guest library so they match)"),
        ));
    }
    let header_size = u64::from(u16_at(b, 10).ok_or_else(t)?);
    let count = u32_at(b, 12).ok_or_else(t)?;
    let total = u64_at(b, 16).ok_or_else(t)?;
    let entry_size = u64::from(u32_at(b, 24).ok_or_else(t)?);
    let flags = u32_at(b, 28).ok_or_else(t)?;
    if header_size < u64::from(LINK_HEADER_SIZE) || entry_size < u64::from(LINK_ENTRY_SIZE) {
        return Err(ImageError::malformed(
            WHAT,
            format!("header size {header_size} or entry size {entry_size} too small"),
        ));
    }
    if flags != 0 {
        return Err(ImageError::malformed(
            WHAT,
            format!("unknown flags {flags:#x}"),
        ));
    }
    let table_end = entry_size
        .checked_mul(u64::from(count))
        .and_then(|t| t.checked_add(header_size))
        .ok_or_else(|| ImageError::malformed(WHAT, "part table size overflows"))?;
    if table_end > total {
        return Err(ImageError::malformed(
            WHAT,
            format!("part table ends at {table_end}, past the total length {total}"),
        ));
    }
    Ok(Header {
        header_size,
        count,
        total,
        entry_size,
    })
}

/// Reads a container: its parts in order, borrowing from `bytes` (which may be longer than
/// the container).
pub fn decode<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Vec<LinkPart<'a>>> {
    let h = header(bytes)?;
    let all = slice(bytes, 0, h.total)
        .ok_or_else(|| ImageError::truncated(WHAT, 0, h.total, bytes.len()))?;
    if h.count as usize > limits.max_parts {
        return Err(ImageError::TooMany {
            what: "parts in a link container",
            limit: limits.max_parts as u64,
        });
    }
    let table_end = h.header_size + h.entry_size * u64::from(h.count); // checked in header()
    let mut parts = Vec::with_capacity(h.count as usize);
    for i in 0..u64::from(h.count) {
        let e = h.header_size + i * h.entry_size;
        let rd32 = |o| u32_at(all, e + o).unwrap_or_default();
        let rd64 = |o| u64_at(all, e + o).unwrap_or_default();
        let kind = PartKind::from_u32(rd32(0)).ok_or_else(|| {
            ImageError::malformed(WHAT, format!("part {i}: unknown kind {}", rd32(0)))
        })?;
        let flags = rd32(4);
        if flags & !PART_DEVICE_LINKED != 0 {
            return Err(ImageError::malformed(
                WHAT,
                format!("part {i}: unknown flags {flags:#x}"),
            ));
        }
        let region = |off: u64, len: u64, what: &str| -> Result<&'a [u8]> {
            if off < table_end {
                return Err(ImageError::malformed(
                    WHAT,
                    format!("part {i}: {what} at {off} overlaps the header"),
                ));
            }
            slice(all, off, len).ok_or_else(|| {
                ImageError::malformed(WHAT, format!("part {i}: {what} of {len} bytes at {off} runs past the container's {} bytes", h.total))
            })
        };
        let data = region(rd64(8), rd64(16), "data")?;
        let name_len = u64::from(rd32(32));
        if name_len > MAX_NAME as u64 {
            return Err(ImageError::malformed(
                WHAT,
                format!("part {i}: name of {name_len} bytes"),
            ));
        }
        let name = std::str::from_utf8(region(rd64(24), name_len, "name")?)
            .map_err(|_| ImageError::malformed(WHAT, format!("part {i}: name is not UTF-8")))?;
        parts.push(LinkPart {
            kind,
            role: if flags & PART_DEVICE_LINKED != 0 {
                Role::DeviceLinked
            } else {
                Role::Input
            },
            name,
            data,
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let parts = [
            LinkPart {
                kind: PartKind::Ptx,
                role: Role::Input,
                name: "a.ptx",
                data: b".version 9.5\n.target sm_75\n",
            },
            LinkPart {
                kind: PartKind::Fatbin,
                role: Role::DeviceLinked,
                name: "",
                data: &[1, 2, 3],
            },
            LinkPart {
                kind: PartKind::Cubin,
                role: Role::Input,
                name: "ünï",
                data: &[],
            },
        ];
        let bytes = encode(&parts).unwrap();
        assert_eq!(link_len(&bytes).unwrap(), Some(bytes.len() as u64));
        let back = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(back, parts);
        // Trailing bytes after the container are not part of it.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"trailing");
        assert_eq!(decode(&longer, &Limits::default()).unwrap(), parts);
        // Every data block is 8-byte aligned.
        let p = decode(&bytes, &Limits::default()).unwrap();
        for part in &p {
            assert_eq!(
                (part.data.as_ptr() as usize - bytes.as_ptr() as usize) % 8,
                0
            );
        }
        assert_eq!(
            decode(&encode(&[]).unwrap(), &Limits::default()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let name = "é".repeat(3000);
        let bytes = encode(&[LinkPart {
            kind: PartKind::Ptx,
            role: Role::Input,
            name: &name,
            data: b"x",
        }])
        .unwrap();
        let p = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(p[0].name.len(), MAX_NAME);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let good = encode(&[LinkPart {
            kind: PartKind::Ptx,
            role: Role::Input,
            name: "n",
            data: b"abc",
        }])
        .unwrap();
        let l = Limits::default();
        let patch = |off: usize, val: &[u8]| {
            let mut b = good.clone();
            b[off..off + val.len()].copy_from_slice(val);
            b
        };
        for (what, b) in [
            ("version", patch(8, &2u16.to_le_bytes())),
            ("count", patch(12, &u32::MAX.to_le_bytes())),
            ("total", patch(16, &u64::MAX.to_le_bytes())),
            ("short total", patch(16, &40u64.to_le_bytes())),
            ("entry size", patch(24, &8u32.to_le_bytes())),
            ("huge entry size", patch(24, &u32::MAX.to_le_bytes())),
            ("flags", patch(28, &1u32.to_le_bytes())),
            ("kind", patch(32, &99u32.to_le_bytes())),
            ("part flags", patch(36, &6u32.to_le_bytes())),
            ("data offset", patch(40, &u64::MAX.to_le_bytes())),
            ("data in header", patch(40, &0u64.to_le_bytes())),
            ("data len", patch(48, &(u64::MAX - 3).to_le_bytes())),
            ("name len", patch(64, &5000u32.to_le_bytes())),
            ("name utf8", patch(72, &[0xff])),
        ] {
            assert!(decode(&b, &l).is_err(), "{what}");
        }
        assert!(decode(&good[..good.len() - 1], &l).is_err());
        let tight = Limits { max_parts: 0, ..l };
        assert!(matches!(
            decode(&good, &tight),
            Err(ImageError::TooMany { .. })
        ));
    }
}
