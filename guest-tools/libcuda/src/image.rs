//! Module images as programs hand them to the driver: a pointer, and no length.
//!
//! `cuModuleLoadData`, `cuLibraryLoadData` and the runtime's registration pass a pointer to one
//! of: a fatbin wrapper (what nvcc embeds; version 2 is the `-rdc` form that also names the
//! per-unit fatbins), a fatbin, an ELF cubin, a netgpu link container (`cuLinkComplete`'s
//! output) or NUL-terminated PTX text. [`locate`] finds each image's length from its own
//! headers with `netgpu_image::probe` (the one parser of these formats, shared with the
//! backend), reading no byte past what they promise, and copies the whole image: the backend
//! picks what its executor runs. An `-rdc` program becomes one link container: the
//! device-linked fatbin and each unit's fatbin.
//!
//! Until the backend reads fatbins itself, [`best_ptx`] takes the PTX its CPU executor runs
//! out of a fatbin (`netgpu_image::select_ptx`).

use std::ffi::{c_char, CStr};

use netgpu_image::link::{self, LinkPart};
use netgpu_image::{PartKind, Probe, PtxVersion, Role, Target};
use netgpu_proto::cuda::CuResult;

/// Largest image accepted: a header claiming more is corrupt.
const MAX_IMAGE: u64 = 1 << 31;
/// Most per-unit fatbins an `-rdc` wrapper may list.
const MAX_PARTS: usize = 4096;
/// The newest PTX ISA the interim PTX fallback picks (what nvcc 13.5 writes).
const MAX_PTX: PtxVersion = PtxVersion::new(9, 5);

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

/// What the image at `p` is: its bytes, or a wrapper to follow.
enum Found {
    Bytes(Vec<u8>),
    Wrapper(netgpu_image::Wrapper),
}

/// Probes the image at `p` and copies it (not following a wrapper).
///
/// # Safety
/// `p` must point to an image of a kind `netgpu_image::probe` knows.
unsafe fn find(p: *const u8) -> Result<Found, CuResult> {
    if p.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    let mut have = 0usize;
    loop {
        // SAFETY: `have` bytes, each proved part of the image by the previous step.
        let prefix = unsafe { bytes(p, have as u64) }?;
        match netgpu_image::probe(prefix).map_err(|e| e.cu_result())? {
            Probe::NeedBytes(n) if n > have && (n as u64) <= MAX_IMAGE => have = n,
            Probe::NeedBytes(_) => return Err(CuResult::INVALID_IMAGE),
            Probe::Length(n) => {
                // SAFETY: the length the image's own headers declare.
                return Ok(Found::Bytes(unsafe { bytes(p, n) }?.to_vec()));
            }
            Probe::NulTerminated => {
                // SAFETY: PTX text is NUL-terminated (the API contract).
                let text = unsafe { CStr::from_ptr(p.cast::<c_char>()) }.to_bytes();
                return Ok(Found::Bytes(text.to_vec()));
            }
            Probe::Wrapper(w) => return Ok(Found::Wrapper(w)),
        }
    }
}

/// # Safety
/// As [`find`], and not a wrapper.
unsafe fn copy_one(p: *const u8) -> Result<Vec<u8>, CuResult> {
    // SAFETY: the caller's image.
    match unsafe { find(p) }? {
        Found::Bytes(b) => Ok(b),
        Found::Wrapper(_) => Err(CuResult::INVALID_IMAGE),
    }
}

/// Finds the image(s) at `p` and copies them.
///
/// # Safety
/// `p` must point to a fatbin wrapper, fatbin, ELF image, link container or NUL-terminated
/// PTX text, as the driver API requires of `cuModuleLoadData`'s image.
pub unsafe fn locate(p: *const u8) -> Result<Image, CuResult> {
    // SAFETY: the caller's image.
    let w = match unsafe { find(p) }? {
        Found::Bytes(b) => return Ok(Image::single(b)),
        Found::Wrapper(w) => w,
    };
    // SAFETY: the wrapper's fatbin.
    let main = unsafe { copy_one(w.data as usize as *const u8) }?;
    let Some(list) = w.unit_fatbins() else {
        return Ok(Image::single(main));
    };
    let list = list as usize as *const *const u8;
    let mut units = Vec::new();
    for i in 0..MAX_PARTS {
        // SAFETY: a NULL-terminated array of image pointers (the wrapper's contract).
        let part = unsafe { *list.add(i) };
        if part.is_null() {
            break;
        }
        // SAFETY: each entry is a fatbin (or a wrapper around one).
        let img = unsafe { locate(part) }?;
        units.extend(img.images().into_iter().map(<[u8]>::to_vec));
        if i + 1 == MAX_PARTS {
            return Err(CuResult::INVALID_IMAGE);
        }
    }
    if units.is_empty() {
        return Ok(Image::single(main));
    }
    // -rdc: one link container of the device-linked fatbin and each unit's fatbin.
    let names: Vec<String> = (0..units.len()).map(|i| format!("unit {i}")).collect();
    let mut parts = vec![LinkPart {
        kind: PartKind::Fatbin,
        role: Role::DeviceLinked,
        name: "device-linked",
        data: &main,
    }];
    for (u, name) in units.iter().zip(&names) {
        parts.push(LinkPart {
            kind: PartKind::Fatbin,
            role: Role::Input,
            name,
            data: u,
        });
    }
    link::encode(&parts)
        .map(Image::single)
        .map_err(|e| e.cu_result())
}

/// The PTX the CPU executor runs for a fatbin image, for a backend that takes only PTX
/// text: one module that needs no linking; `None` when there is none.
pub fn best_ptx(img: &Image, cc: u32) -> Option<Vec<u8>> {
    let target = Target {
        sm: cc,
        max_ptx: MAX_PTX,
    };
    let parts = img.images();
    match netgpu_image::select_ptx(&parts, &target, &netgpu_image::Limits::default()) {
        Ok(mut v) if v.len() == 1 && !v[0].relocatable => v.pop().map(|p| p.text.into_bytes()),
        _ => None,
    }
}

/// The compute capability (`major * 10 + minor`) the code a device of capability `cc` runs
/// from this image was compiled for: its PTX target, else its SASS's. This is what
/// `CU_FUNC_ATTRIBUTE_PTX_VERSION` reports (CUB picks its tuning by it, so it must name an
/// architecture the image has code for). Headers only: nothing is decompressed.
pub fn code_arch(img: &Image, cc: u32) -> Option<u32> {
    let limits = netgpu_image::Limits::default();
    let one = |b: &[u8]| -> Option<u32> {
        match netgpu_image::detect(b)? {
            netgpu_image::ImageKind::Ptx => {
                let text = netgpu_image::ptx::text(b).ok()?;
                Some(netgpu_image::ptx::info(text).ok()?.arch.sm)
            }
            netgpu_image::ImageKind::Fatbin => {
                let f = netgpu_image::Fatbin::parse(b, &limits).ok()?;
                match f.best_ptx(cc, MAX_PTX) {
                    Ok(e) => Some(e.arch.sm),
                    Err(_) => f.best_elf(cc).map(|e| e.arch.sm),
                }
            }
            netgpu_image::ImageKind::Cubin => netgpu_image::Cubin::parse(b).ok().map(|c| c.arch.sm),
            _ => None,
        }
    };
    img.images().into_iter().find_map(|b| {
        if link::is_link_container(b) {
            let parts = link::decode(b, &limits).ok()?;
            parts
                .iter()
                .filter(|p| p.role == Role::Input)
                .find_map(|p| one(p.data))
        } else {
            one(b)
        }
    })
}

/// Whether the image is binary (fatbin, cubin, link container), as opposed to PTX text.
pub fn is_binary(data: &[u8]) -> bool {
    !matches!(
        netgpu_image::detect(data),
        Some(netgpu_image::ImageKind::Ptx) | None
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netgpu_image::testing::{cubin, fatbin, ptx_module, EntrySpec};
    use netgpu_image::Compression;

    fn wrapper(version: u32, data: *const u8, list: *const *const u8) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&0x4662_43B1u32.to_le_bytes());
        w.extend_from_slice(&version.to_le_bytes());
        w.extend_from_slice(&(data as u64).to_le_bytes());
        w.extend_from_slice(&(list as u64).to_le_bytes());
        w
    }

    #[test]
    fn a_fatbin_is_found_whole_through_its_wrapper_and_its_ptx_comes_out() {
        let old = ptx_module("8.0", 75, "k");
        let new = ptx_module("8.0", 80, "k");
        let elf = cubin(75, "k", &[], 0, 8);
        let fb = fatbin(&[
            EntrySpec::elf(75, &elf),
            EntrySpec::ptx(75, &old),
            EntrySpec::ptx(80, &new).compressed(Compression::Lz4),
        ]);
        let mut padded = fb.clone();
        padded.extend_from_slice(&[0xee; 64]);
        let w = wrapper(1, padded.as_ptr(), std::ptr::null());
        // SAFETY: a wrapper pointing at a complete fatbin.
        let img = unsafe { locate(w.as_ptr()) }.unwrap();
        assert_eq!(img.data, fb, "exactly the fatbin, nothing after it");
        assert!(img.parts.is_empty() && is_binary(&img.data));
        let best = String::from_utf8(best_ptx(&img, 80).unwrap()).unwrap();
        assert_eq!(best.trim_end_matches('\0'), new.trim_end_matches('\0'));
        let best = String::from_utf8(best_ptx(&img, 75).unwrap()).unwrap();
        assert!(best.contains("sm_75"), "the PTX a 7.5 device runs: {best}");
        assert_eq!(code_arch(&img, 75), Some(75));
        assert_eq!(
            code_arch(&img, 86),
            Some(80),
            "the newest PTX that runs on 8.6"
        );
    }

    #[test]
    fn an_rdc_wrapper_becomes_one_link_container_of_the_linked_image_and_every_unit() {
        let (pa, pb) = (ptx_module("9.5", 75, "a"), ptx_module("9.5", 75, "b"));
        let a = fatbin(&[EntrySpec::ptx(75, &pa)]);
        let b = fatbin(&[EntrySpec::ptx(75, &pb)]);
        let elf = cubin(75, "a", &[], 0, 8);
        let linked = fatbin(&[EntrySpec::elf(75, &elf)]);
        let list: [*const u8; 3] = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        let w = wrapper(2, linked.as_ptr(), list.as_ptr());
        // SAFETY: as above, with a NULL-terminated unit list.
        let img = unsafe { locate(w.as_ptr()) }.unwrap();
        assert!(img.parts.is_empty());
        let parts = link::decode(&img.data, &netgpu_image::Limits::default()).unwrap();
        let got: Vec<_> = parts.iter().map(|p| (p.role, p.data.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (Role::DeviceLinked, linked.clone()),
                (Role::Input, a.clone()),
                (Role::Input, b.clone()),
            ]
        );
        // A link container, found again from its own header (cuModuleLoadData of it).
        // SAFETY: a complete container.
        assert_eq!(unsafe { locate(img.data.as_ptr()) }.unwrap().data, img.data);
    }

    #[test]
    fn ptx_text_and_elf_images_have_their_own_lengths() {
        let ptx = b".version 8.0\n.target sm_80\n\0garbage";
        // SAFETY: NUL-terminated text.
        let img = unsafe { locate(ptx.as_ptr()) }.unwrap();
        assert_eq!(img.data, b".version 8.0\n.target sm_80\n");
        assert!(!is_binary(&img.data));
        let elf = cubin(75, "k", &[(0, 8)], 0, 8);
        let mut padded = elf.clone();
        padded.extend_from_slice(&[0xcc; 100]);
        // SAFETY: a complete ELF image.
        let img = unsafe { locate(padded.as_ptr()) }.unwrap();
        assert_eq!(img.data, elf);
        assert!(is_binary(&img.data));
    }

    #[test]
    fn corrupt_headers_are_invalid_images_not_crashes() {
        let mut fb = fatbin(&[]);
        fb[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        // SAFETY: a fatbin header (claiming an impossible size).
        assert_eq!(unsafe { locate(fb.as_ptr()) }, Err(CuResult::INVALID_IMAGE));
        let bad = [0xfeu8; 16];
        // SAFETY: 16 readable bytes (an unknown magic stops at the first ones).
        assert!(unsafe { locate(bad.as_ptr()) }.is_err());
        assert_eq!(
            best_ptx(&Image::single(vec![0x50, 0xed, 0x55, 0xba]), 75),
            None
        );
    }
}
