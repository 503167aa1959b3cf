//! How long an in-memory image is, from its first bytes: `cuModuleLoadData` and
//! `cuLibraryLoadData` get a pointer without a length, and the guest library must copy
//! exactly the image to send it, reading no byte past what its headers promise.
//!
//! ```ignore
//! let mut have = 0;
//! loop {
//!     match probe(unsafe { std::slice::from_raw_parts(ptr, have) })? {
//!         Probe::NeedBytes(n) => have = n,          // read more, call again
//!         Probe::Length(n) => break n,              // the image is `n` bytes
//!         Probe::NulTerminated => break strlen(ptr) + 1, // PTX text
//!         Probe::Wrapper(w) => ...,                 // follow w.data (and w.unit_fatbins())
//!     }
//! }
//! ```
//!
//! Each step asks only for bytes the previous ones proved are part of the image: 1 byte to
//! tell text from binary, then the format's fixed header (4/16/24/32/64 bytes), then for
//! an ELF file its section header table. The length of an ELF file is the end of its
//! furthest header table or section; of a fatbin its header size plus fat size; of a link
//! container the total its header declares.

use crate::bytes::{u16_at, u32_at, u64_at};
use crate::error::{ImageError, Result};
use crate::fatbin::{fatbin_len, FATBIN_MAGIC};
use crate::link::{is_link_container, link_len, LINK_MAGIC};
use crate::wrapper::{Wrapper, WRAPPER_MAGIC, WRAPPER_SIZE};

/// The answer of [`probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Call again with at least this many bytes from the image's start.
    NeedBytes(usize),
    /// The image is exactly this many bytes.
    Length(u64),
    /// Text (PTX): the image runs to its NUL terminator.
    NulTerminated,
    /// A fatbin wrapper: the image is the fatbin at `data` (and, for a version 2 wrapper,
    /// the translation units' fatbins listed at `unit_fatbins()`); probe those.
    Wrapper(Wrapper),
}

const ELF_HEADER: usize = 64;
const SHT_NOBITS: u32 = 8;

/// Decides what `prefix` (the first bytes of an image) needs next; see the module docs.
pub fn probe(prefix: &[u8]) -> Result<Probe> {
    let Some(&first) = prefix.first() else {
        return Ok(Probe::NeedBytes(1));
    };
    let magic_len = match first {
        0xB1 | 0x50 => 4, // wrapper, fatbin
        0x7F => 4,        // ELF
        0xAB => LINK_MAGIC.len(),
        b if b.is_ascii_whitespace() || b.is_ascii_graphic() => return Ok(Probe::NulTerminated),
        _ => return Err(unknown(prefix)),
    };
    if prefix.len() < magic_len {
        return Ok(Probe::NeedBytes(magic_len));
    }
    let magic = u32_at(prefix, 0).unwrap_or_default();
    if magic == WRAPPER_MAGIC {
        if prefix.len() < WRAPPER_SIZE {
            return Ok(Probe::NeedBytes(WRAPPER_SIZE));
        }
        return Wrapper::parse(prefix).map(Probe::Wrapper);
    }
    if magic == FATBIN_MAGIC {
        return Ok(match fatbin_len(prefix)? {
            Some(n) => Probe::Length(n),
            None => Probe::NeedBytes(16),
        });
    }
    if is_link_container(prefix) {
        return Ok(match link_len(prefix)? {
            Some(n) => Probe::Length(n),
            None => Probe::NeedBytes(32),
        });
    }
    if prefix.starts_with(b"\x7fELF") {
        return elf_len(prefix);
    }
    if first == 0x50 {
        // 'P' but not a fatbin: text after all.
        return Ok(Probe::NulTerminated);
    }
    Err(unknown(prefix))
}

fn unknown(prefix: &[u8]) -> ImageError {
    ImageError::UnknownFormat(crate::bytes::hex_prefix(prefix))
}

fn elf_len(b: &[u8]) -> Result<Probe> {
    if b.len() < ELF_HEADER {
        return Ok(Probe::NeedBytes(ELF_HEADER));
    }
    if !(b[4] == 2 && b[5] == 1) {
        return Err(ImageError::malformed(
            "ELF image",
            "not a 64-bit little-endian ELF file",
        ));
    }
    let over = || ImageError::malformed("ELF image", "header table extent overflows");
    let rd16 = |o| u64::from(u16_at(b, o).unwrap_or_default());
    let phoff = u64_at(b, 0x20).unwrap_or_default();
    let shoff = u64_at(b, 0x28).unwrap_or_default();
    let (phentsize, phnum) = (rd16(0x36), rd16(0x38));
    let (shentsize, mut shnum) = (rd16(0x3a), rd16(0x3c));
    let ph_end = if phnum == 0 {
        0
    } else {
        phentsize
            .checked_mul(phnum)
            .and_then(|n| n.checked_add(phoff))
            .ok_or_else(over)?
    };
    let mut end = (ELF_HEADER as u64).max(ph_end);
    if shoff != 0 {
        if shentsize < 64 {
            return Err(ImageError::malformed(
                "ELF image",
                format!("section header size {shentsize} < 64"),
            ));
        }
        if shnum == 0 {
            // More than 0xff00 sections: the count is in section 0's sh_size.
            let need = shoff.checked_add(64).ok_or_else(over)?;
            if (b.len() as u64) < need {
                return Ok(Probe::NeedBytes(usize::try_from(need).map_err(|_| over())?));
            }
            shnum = u64_at(b, shoff + 0x20).unwrap_or_default();
        }
        let sh_end = shentsize
            .checked_mul(shnum)
            .and_then(|n| n.checked_add(shoff))
            .ok_or_else(over)?;
        if (b.len() as u64) < sh_end {
            return Ok(Probe::NeedBytes(
                usize::try_from(sh_end).map_err(|_| over())?,
            ));
        }
        end = end.max(sh_end);
        for i in 0..shnum {
            let h = shoff + i * shentsize; // < sh_end, checked above
            let kind = u32_at(b, h + 4).unwrap_or_default();
            if kind == SHT_NOBITS {
                continue;
            }
            let off = u64_at(b, h + 0x18).unwrap_or_default();
            let size = u64_at(b, h + 0x20).unwrap_or_default();
            end = end.max(off.checked_add(size).ok_or_else(over)?);
        }
    }
    Ok(Probe::Length(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_small_prefixes() {
        assert_eq!(probe(&[]).unwrap(), Probe::NeedBytes(1));
        assert_eq!(probe(b"\n").unwrap(), Probe::NulTerminated);
        assert_eq!(probe(b"//").unwrap(), Probe::NulTerminated);
        assert_eq!(probe(b".version 9.5").unwrap(), Probe::NulTerminated);
        assert_eq!(probe(b"P").unwrap(), Probe::NeedBytes(4));
        assert_eq!(probe(b"Ptx?").unwrap(), Probe::NulTerminated);
        assert_eq!(probe(&[0x7f]).unwrap(), Probe::NeedBytes(4));
        assert_eq!(
            probe(&[0xb1, 0x43, 0x62, 0x46]).unwrap(),
            Probe::NeedBytes(24)
        );
        assert_eq!(probe(&[0xab]).unwrap(), Probe::NeedBytes(8));
        assert!(probe(&[0]).is_err());
        assert!(probe(&[0xb1, 0, 0, 0]).is_err());
        assert!(probe(b"\x7fXYZ").is_err());
    }

    #[test]
    fn fatbin_header() {
        let mut h = FATBIN_MAGIC.to_le_bytes().to_vec();
        h.extend(1u16.to_le_bytes());
        h.extend(16u16.to_le_bytes());
        assert_eq!(probe(&h).unwrap(), Probe::NeedBytes(16));
        h.extend(1000u64.to_le_bytes());
        assert_eq!(probe(&h).unwrap(), Probe::Length(1016));
        h[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(probe(&h).is_err());
    }

    #[test]
    fn elf_headers() {
        let mut h = vec![0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[0x12] = 190;
        assert_eq!(probe(&h[..10]).unwrap(), Probe::NeedBytes(64));
        assert_eq!(probe(&h).unwrap(), Probe::Length(64));
        // Two section headers at 64: section 1 spans 128+100 bytes.
        h[0x28] = 64;
        h[0x3a] = 64;
        h[0x3c] = 2;
        assert_eq!(probe(&h).unwrap(), Probe::NeedBytes(192));
        h.resize(192, 0);
        h[128 + 4] = 1; // PROGBITS
        h[128 + 0x18] = 200;
        h[128 + 0x20] = 100;
        assert_eq!(probe(&h).unwrap(), Probe::Length(300));
        h[128 + 4] = SHT_NOBITS as u8; // NOBITS takes no file space
        assert_eq!(probe(&h).unwrap(), Probe::Length(192));
        h[128 + 4] = 1;
        h[128 + 0x18..128 + 0x20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(probe(&h).is_err());
        h[0x3c] = 0xff;
        h[0x3d] = 0xff;
        h[0x28..0x30].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
        assert!(probe(&h).is_err());
    }
}
