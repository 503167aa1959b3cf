//! What kind of module image a client sent, by its first bytes (until netgpu-image parses
//! containers, this is all either executor needs to know: the CUDA driver takes every kind as
//! it is; the CPU executor runs PTX text).

/// The kinds of module image `ModuleLoad` carries.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageKind<'a> {
    /// PTX text (up to its first NUL, if any).
    Ptx(&'a str),
    /// An ELF file: a cubin (relocatable with `-rdc=true`).
    Elf,
    /// A fatbin (`0xBA55ED50`).
    Fatbin,
    /// A fatbin wrapper (`0x466243B1`): its pointers are the guest's; never valid here.
    Wrapper,
    /// An `ar` archive (a device library for the linker).
    Archive,
    Invalid,
}

pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
pub const WRAPPER_MAGIC: u32 = 0x4662_43B1;

pub fn classify(image: &[u8]) -> ImageKind<'_> {
    if image.starts_with(b"\x7fELF") {
        return ImageKind::Elf;
    }
    if image.starts_with(&FATBIN_MAGIC.to_le_bytes()) {
        return ImageKind::Fatbin;
    }
    if image.starts_with(&WRAPPER_MAGIC.to_le_bytes()) {
        return ImageKind::Wrapper;
    }
    if image.starts_with(b"!<arch>\n") {
        return ImageKind::Archive;
    }
    let end = image.iter().position(|&b| b == 0).unwrap_or(image.len());
    match std::str::from_utf8(&image[..end]) {
        Ok(t) if !t.trim().is_empty() => ImageKind::Ptx(t),
        _ => ImageKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_classified_by_their_magic() {
        assert_eq!(classify(b".version 8.0\0"), ImageKind::Ptx(".version 8.0"));
        assert_eq!(classify(b"\x7fELF\x02\x01"), ImageKind::Elf);
        assert_eq!(classify(&FATBIN_MAGIC.to_le_bytes()), ImageKind::Fatbin);
        assert_eq!(classify(&WRAPPER_MAGIC.to_le_bytes()), ImageKind::Wrapper);
        assert_eq!(classify(b"!<arch>\nlib"), ImageKind::Archive);
        assert_eq!(classify(&[0xff, 0xfe, 0]), ImageKind::Invalid);
        assert_eq!(classify(b"\0"), ImageKind::Invalid);
        assert_eq!(classify(b""), ImageKind::Invalid);
    }
}
