//! Module images as programs hand them to the driver: a pointer, and no length.
//!
//! `cuModuleLoadData`, `cuLibraryLoadData` and the runtime's registration pass a pointer to one
//! of: a fatbin wrapper (`0x466243B1`, what nvcc embeds; version 2 is the `-rdc` form that also
//! names the per-unit fatbins), a fatbin (`0xBA55ED50`), an ELF cubin, or NUL-terminated PTX
//! text. The length of each comes from its own headers. The whole image travels to the backend,
//! which picks what its executor runs ([`locate`]).
//!
//! Until the backend reads fatbins itself, [`best_ptx`] takes the PTX out of a fatbin (entries
//! compressed with zstd or LZ4 are decompressed) so the CPU executor can run it.

use std::ffi::{c_char, CStr};

use netgpu_proto::cuda::CuResult;

pub const WRAPPER_MAGIC: u32 = 0x4662_43B1;
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
/// Largest image accepted: a header claiming more is corrupt.
const MAX_IMAGE: u64 = 1 << 31;
/// Most per-unit fatbins an `-rdc` wrapper may list.
const MAX_PARTS: usize = 4096;

/// One or more images to load as one module (several: `ModuleLoad.parts`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub data: Vec<u8>,
    /// Byte length of each image in `data`; empty for a single image.
    pub parts: Vec<u32>,
}

impl Image {
    pub fn single(data: Vec<u8>) -> Image {
        Image {
            data,
            parts: Vec::new(),
        }
    }

    /// Each image in turn.
    pub fn images(&self) -> Vec<&[u8]> {
        if self.parts.is_empty() {
            return vec![&self.data];
        }
        let mut out = Vec::with_capacity(self.parts.len());
        let mut off = 0usize;
        for &n in &self.parts {
            let end = off.saturating_add(n as usize).min(self.data.len());
            out.push(&self.data[off..end]);
            off = end;
        }
        out
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads `n` bytes at `p`.
///
/// # Safety
/// `p` must be valid for reading `n` bytes.
unsafe fn bytes<'a>(p: *const u8, n: u64) -> Result<&'a [u8], CuResult> {
    if p.is_null() || n > MAX_IMAGE {
        return Err(CuResult::INVALID_IMAGE);
    }
    // SAFETY: the caller's guarantee.
    Ok(unsafe { std::slice::from_raw_parts(p, n as usize) })
}

/// The length of the ELF image at `p`: the furthest of its headers and sections.
///
/// # Safety
/// `p` must point to a complete ELF image.
unsafe fn elf_len(p: *const u8) -> Result<u64, CuResult> {
    // SAFETY: an ELF64 header is 64 bytes (the caller's image).
    let h = unsafe { bytes(p, 64) }?;
    if h[4] != 2 || h[5] != 1 {
        // Only 64-bit little-endian cubins exist.
        return Err(CuResult::INVALID_IMAGE);
    }
    let bad = CuResult::INVALID_IMAGE;
    let phoff = le64(h, 0x20).ok_or(bad)?;
    let shoff = le64(h, 0x28).ok_or(bad)?;
    let phentsize = u64::from(le16(h, 0x36).ok_or(bad)?);
    let phnum = u64::from(le16(h, 0x38).ok_or(bad)?);
    let shentsize = u64::from(le16(h, 0x3a).ok_or(bad)?);
    let shnum = u64::from(le16(h, 0x3c).ok_or(bad)?);
    let end_of = |off: u64, n: u64, size: u64| off.checked_add(n.checked_mul(size)?);
    let mut len = 64u64
        .max(end_of(phoff, phnum, phentsize).ok_or(bad)?)
        .max(end_of(shoff, shnum, shentsize).ok_or(bad)?);
    if len > MAX_IMAGE || (shnum > 0 && shentsize < 64) {
        return Err(bad);
    }
    if shnum > 0 {
        // SAFETY: the section header table lies inside the image (bounds from its header).
        let sh = unsafe { bytes(p.add(shoff as usize), shnum * shentsize) }?;
        for i in 0..shnum as usize {
            let s = &sh[i * shentsize as usize..];
            let kind = le32(s, 4).ok_or(bad)?;
            let (off, size) = (le64(s, 0x18).ok_or(bad)?, le64(s, 0x20).ok_or(bad)?);
            if kind != 8 {
                // Not SHT_NOBITS: the section's bytes are in the file.
                len = len.max(off.checked_add(size).ok_or(bad)?);
            }
        }
    }
    if phnum > 0 {
        // SAFETY: the program header table lies inside the image (bounds from its header).
        let ph = unsafe { bytes(p.add(phoff as usize), phnum * phentsize) }?;
        for i in 0..phnum as usize {
            let s = ph.get(i * phentsize as usize..).ok_or(bad)?;
            let (off, size) = (le64(s, 0x08).ok_or(bad)?, le64(s, 0x20).ok_or(bad)?);
            len = len.max(off.checked_add(size).ok_or(bad)?);
        }
    }
    if len > MAX_IMAGE {
        return Err(bad);
    }
    Ok(len)
}

/// The length of the fatbin at `p` (its 16-byte header plus the size it declares).
///
/// # Safety
/// `p` must point to a fatbin header.
unsafe fn fatbin_len(p: *const u8) -> Result<u64, CuResult> {
    // SAFETY: a fatbin header is 16 bytes.
    let h = unsafe { bytes(p, 16) }?;
    let header = u64::from(le16(h, 6).ok_or(CuResult::INVALID_IMAGE)?);
    let size = le64(h, 8).ok_or(CuResult::INVALID_IMAGE)?;
    header
        .checked_add(size)
        .filter(|n| *n <= MAX_IMAGE && header >= 16)
        .ok_or(CuResult::INVALID_IMAGE)
}

/// Copies the one image at `p` (fatbin, ELF or PTX; not a wrapper).
///
/// # Safety
/// `p` must point to a complete image of one of those kinds.
unsafe fn copy_one(p: *const u8) -> Result<Vec<u8>, CuResult> {
    if p.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: every image is at least 4 bytes long (a PTX text ends in a NUL before that, but
    // reading 4 bytes of it stays inside its allocation only if it is longer: check the NUL).
    let head = unsafe { bytes(p, 1) }?;
    if head[0] == 0 {
        return Err(CuResult::INVALID_IMAGE);
    }
    // SAFETY: a PTX text is NUL-terminated; a binary image starts with its 4-byte magic.
    let text = unsafe { CStr::from_ptr(p.cast::<c_char>()) }.to_bytes();
    if text.len() < 4 {
        return looks_like_ptx(text)
            .then(|| text.to_vec())
            .ok_or(CuResult::INVALID_IMAGE);
    }
    // SAFETY: at least 4 bytes precede the first NUL.
    let magic = unsafe { bytes(p, 4) }?;
    let len = if magic == ELF_MAGIC {
        // SAFETY: an ELF image (the caller's guarantee).
        unsafe { elf_len(p) }?
    } else if le32(magic, 0) == Some(FATBIN_MAGIC) {
        // SAFETY: a fatbin (the caller's guarantee).
        unsafe { fatbin_len(p) }?
    } else if le32(magic, 0) == Some(WRAPPER_MAGIC) {
        return Err(CuResult::INVALID_IMAGE);
    } else {
        return Ok(text.to_vec());
    };
    // SAFETY: `len` bytes, as the image's own headers declare.
    Ok(unsafe { bytes(p, len) }?.to_vec())
}

fn looks_like_ptx(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|b| b.is_ascii())
}

/// Finds the image(s) at `p` and copies them.
///
/// # Safety
/// `p` must point to a fatbin wrapper, fatbin, ELF image or NUL-terminated PTX text, as the
/// driver API requires of `cuModuleLoadData`'s image.
pub unsafe fn locate(p: *const u8) -> Result<Image, CuResult> {
    if p.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: every image kind is at least 4 bytes, or a shorter NUL-terminated text.
    let first = unsafe { bytes(p, 1) }?;
    if first[0] != 0x50 && first[0] != 0xB1 {
        // Neither fatbin nor wrapper magic starts with anything else.
        // SAFETY: the caller's image.
        return unsafe { copy_one(p) }.map(Image::single);
    }
    // SAFETY: both magic kinds are followed by at least 16 bytes of header.
    let head = unsafe { bytes(p, 4) }?;
    if le32(head, 0) != Some(WRAPPER_MAGIC) {
        // SAFETY: the caller's image.
        return unsafe { copy_one(p) }.map(Image::single);
    }
    // SAFETY: a wrapper is 24 bytes: magic, version, data, filename_or_fatbins.
    let w = unsafe { bytes(p, 24) }?;
    let version = le32(w, 4).ok_or(CuResult::INVALID_IMAGE)?;
    let data = le64(w, 8).ok_or(CuResult::INVALID_IMAGE)? as usize as *const u8;
    let extra = le64(w, 16).ok_or(CuResult::INVALID_IMAGE)? as usize as *const *const u8;
    // SAFETY: the wrapper's fatbin.
    let main = unsafe { copy_one(data) }?;
    // SAFETY: in a version-2 wrapper, a NULL-terminated array of image pointers.
    if version != 2 || extra.is_null() || unsafe { (*extra).is_null() } {
        return Ok(Image::single(main));
    }
    // -rdc: the linked fatbin, then each unit's fatbin (NULL-terminated list).
    let mut img = Image {
        parts: vec![main.len() as u32],
        data: main,
    };
    for i in 0..MAX_PARTS {
        // SAFETY: a NULL-terminated array of image pointers (the wrapper's contract).
        let part = unsafe { *extra.add(i) };
        if part.is_null() {
            return Ok(img);
        }
        // SAFETY: each entry is a fatbin (or a wrapper around one).
        let bytes = unsafe { locate(part) }?;
        for b in bytes.images() {
            img.parts
                .push(u32::try_from(b.len()).map_err(|_| CuResult::INVALID_IMAGE)?);
            img.data.extend_from_slice(b);
        }
    }
    Err(CuResult::INVALID_IMAGE)
}

/// A PTX entry of a fatbin.
struct PtxEntry {
    sm: u32,
    text: Vec<u8>,
}

const ENTRY_PTX: u16 = 1;
const FLAG_LZ4: u64 = 0x2000;
const FLAG_ZSTD: u64 = 0x8000;

fn fatbin_ptx(fatbin: &[u8]) -> Vec<PtxEntry> {
    let mut out = Vec::new();
    let (Some(hsize), Some(size)) = (le16(fatbin, 6), le64(fatbin, 8)) else {
        return out;
    };
    let end = (hsize as u64).saturating_add(size).min(fatbin.len() as u64) as usize;
    let mut at = hsize as usize;
    while at + 64 <= end {
        let e = &fatbin[at..end];
        let (Some(kind), Some(ehsize), Some(payload)) = (le16(e, 0), le32(e, 4), le64(e, 8)) else {
            break;
        };
        // A u32 (the next four bytes hold something else).
        let compressed = u64::from(le32(e, 0x10).unwrap_or(0));
        let sm = le32(e, 0x1c).unwrap_or(0);
        let flags = le64(e, 0x28).unwrap_or(0);
        let uncompressed = le64(e, 0x38).unwrap_or(0);
        let body_at = ehsize as usize;
        let Some(next) = (at as u64)
            .checked_add(u64::from(ehsize))
            .and_then(|v| v.checked_add(payload))
        else {
            break;
        };
        if kind == ENTRY_PTX && payload > 0 {
            let stored = if compressed > 0 { compressed } else { payload };
            if let Some(body) = e.get(body_at..body_at.saturating_add(stored as usize)) {
                let text = if flags & FLAG_ZSTD != 0 {
                    unzstd(body, uncompressed)
                } else if flags & FLAG_LZ4 != 0 {
                    lz4_flex::block::decompress(body, uncompressed as usize).ok()
                } else {
                    Some(body.to_vec())
                };
                if let Some(mut t) = text {
                    if let Some(nul) = t.iter().position(|b| *b == 0) {
                        t.truncate(nul);
                    }
                    out.push(PtxEntry { sm, text: t });
                }
            }
        }
        if next as usize <= at || next > end as u64 {
            break;
        }
        at = next as usize;
    }
    out
}

fn unzstd(body: &[u8], limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut d = ruzstd::decoding::StreamingDecoder::new(body).ok()?;
    let mut out = Vec::new();
    (&mut d)
        .take(limit.min(MAX_IMAGE))
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The newest PTX of a single-image fatbin (or the text itself for PTX), for an executor
/// that runs only PTX; `None` when there is none.
pub fn best_ptx(img: &Image) -> Option<Vec<u8>> {
    if !img.parts.is_empty() {
        return None;
    }
    let d = &img.data;
    if le32(d, 0) == Some(FATBIN_MAGIC) {
        return fatbin_ptx(d)
            .into_iter()
            .max_by_key(|e| e.sm)
            .map(|e| e.text);
    }
    None
}

/// Whether the image is binary (fatbin, cubin), as opposed to PTX text.
pub fn is_binary(data: &[u8]) -> bool {
    data.starts_with(&ELF_MAGIC) || le32(data, 0) == Some(FATBIN_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: u16, sm: u32, flags: u64, body: &[u8], uncompressed: u64) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[0..2].copy_from_slice(&kind.to_le_bytes());
        e[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
        e[4..8].copy_from_slice(&64u32.to_le_bytes());
        let padded = body.len().div_ceil(8) * 8;
        e[8..16].copy_from_slice(&(padded as u64).to_le_bytes());
        if flags & (FLAG_LZ4 | FLAG_ZSTD) != 0 {
            e[0x10..0x14].copy_from_slice(&(body.len() as u32).to_le_bytes());
            e[0x14..0x18].copy_from_slice(&0x40u32.to_le_bytes());
        }
        e[0x1c..0x20].copy_from_slice(&sm.to_le_bytes());
        e[0x28..0x30].copy_from_slice(&(flags | 0x11).to_le_bytes());
        e[0x38..0x40].copy_from_slice(&uncompressed.to_le_bytes());
        e.extend_from_slice(body);
        e.resize(64 + padded, 0);
        e
    }

    fn fatbin(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut f = Vec::new();
        f.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f.extend_from_slice(&(body.len() as u64).to_le_bytes());
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn a_fatbin_is_found_whole_through_its_wrapper_and_its_newest_ptx_comes_out() {
        let ptx = b".version 9.5\n.target sm_75\n";
        let lz = lz4_flex::block::compress(b".version 8.0\n.target sm_90\n");
        let fb = fatbin(&[
            entry(2, 75, 0, &[0xaa; 40], 0),
            entry(ENTRY_PTX, 75, 0, ptx, ptx.len() as u64),
            entry(ENTRY_PTX, 90, FLAG_LZ4, &lz, 27),
        ]);
        let mut padded = fb.clone();
        padded.extend_from_slice(&[0xee; 64]);
        let mut wrapper = Vec::new();
        wrapper.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
        wrapper.extend_from_slice(&1u32.to_le_bytes());
        wrapper.extend_from_slice(&(padded.as_ptr() as u64).to_le_bytes());
        wrapper.extend_from_slice(&0u64.to_le_bytes());
        // SAFETY: a wrapper pointing at a complete fatbin.
        let img = unsafe { locate(wrapper.as_ptr()) }.unwrap();
        assert_eq!(img.data, fb, "exactly the fatbin, nothing after it");
        assert!(img.parts.is_empty());
        assert_eq!(
            best_ptx(&img).unwrap(),
            b".version 8.0\n.target sm_90\n".to_vec()
        );
    }

    #[test]
    fn an_rdc_wrapper_sends_the_linked_image_and_every_unit() {
        let a = fatbin(&[entry(ENTRY_PTX, 75, 0, b".version 9.5", 12)]);
        let b = fatbin(&[entry(2, 75, 0, &[1; 16], 0)]);
        let linked = fatbin(&[entry(2, 75, 0, &[2; 24], 0)]);
        let list: [*const u8; 3] = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        let mut wrapper = Vec::new();
        wrapper.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
        wrapper.extend_from_slice(&2u32.to_le_bytes());
        wrapper.extend_from_slice(&(linked.as_ptr() as u64).to_le_bytes());
        wrapper.extend_from_slice(&(list.as_ptr() as u64).to_le_bytes());
        // SAFETY: as above, with a NULL-terminated unit list.
        let img = unsafe { locate(wrapper.as_ptr()) }.unwrap();
        assert_eq!(
            img.parts,
            vec![linked.len() as u32, a.len() as u32, b.len() as u32]
        );
        assert_eq!(img.images(), vec![&linked[..], &a[..], &b[..]]);
        assert_eq!(
            best_ptx(&img),
            None,
            "several parts need the backend's linker"
        );
    }

    #[test]
    fn ptx_text_and_elf_images_have_their_own_lengths() {
        let ptx = b".version 8.0\n.target sm_80\n\0garbage";
        // SAFETY: NUL-terminated text.
        let img = unsafe { locate(ptx.as_ptr()) }.unwrap();
        assert_eq!(img.data, b".version 8.0\n.target sm_80\n");
        // A minimal ELF64: header, one section whose bytes end at 0x300, the section table at
        // 0x100 (2 entries of 64 bytes).
        let mut elf = vec![0u8; 0x400];
        elf[..4].copy_from_slice(&ELF_MAGIC);
        elf[4] = 2;
        elf[5] = 1;
        elf[0x28..0x30].copy_from_slice(&0x100u64.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
        let s1 = 0x100 + 64;
        elf[s1 + 4..s1 + 8].copy_from_slice(&1u32.to_le_bytes());
        elf[s1 + 0x18..s1 + 0x20].copy_from_slice(&0x200u64.to_le_bytes());
        elf[s1 + 0x20..s1 + 0x28].copy_from_slice(&0x100u64.to_le_bytes());
        // SAFETY: a complete ELF image.
        let img = unsafe { locate(elf.as_ptr()) }.unwrap();
        assert_eq!(img.data.len(), 0x300);
        assert!(is_binary(&img.data));
    }

    #[test]
    fn corrupt_headers_are_invalid_images_not_crashes() {
        let mut fb = fatbin(&[]);
        fb[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        // SAFETY: a fatbin header (claiming an impossible size).
        assert_eq!(unsafe { locate(fb.as_ptr()) }, Err(CuResult::INVALID_IMAGE));
        // A truncated entry list yields no PTX rather than reading past the image.
        let mut fb = fatbin(&[entry(ENTRY_PTX, 75, FLAG_ZSTD, &[1, 2, 3], 100)]);
        fb.truncate(40);
        assert_eq!(best_ptx(&Image::single(fb)), None);
    }
}
