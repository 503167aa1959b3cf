//! Host object files and libraries given to the JIT linker (`CU_JIT_INPUT_OBJECT`,
//! `CU_JIT_INPUT_LIBRARY`): their device code is the fatbins nvcc put in the `.nv_fatbin`
//! section (and `__nv_relfatbin` for `-rdc` code), one after the other.

use crate::error::{ImageError, Result};
use crate::fatbin::{parse_sequence, Fatbin};
use crate::limits::Limits;
use object::read::archive::ArchiveFile;
use object::{Object, ObjectSection};

/// Sections of a host ELF file that hold fatbins.
pub const FATBIN_SECTIONS: [&str; 2] = [".nv_fatbin", "__nv_relfatbin"];

/// The fatbins embedded in a host ELF object or executable (none if it has no device code).
pub fn object_fatbins<'a>(elf: &'a [u8], limits: &Limits) -> Result<Vec<Fatbin<'a>>> {
    let file = object::File::parse(elf)
        .map_err(|e| ImageError::malformed("host object", format!("bad ELF: {e}")))?;
    let mut out = Vec::new();
    for name in FATBIN_SECTIONS {
        if let Some(s) = file.section_by_name(name) {
            let data = s
                .data()
                .map_err(|e| ImageError::malformed("host object", format!("{name}: {e}")))?;
            out.extend(parse_sequence(data, limits)?);
            if out.len() > limits.max_parts {
                return Err(ImageError::TooMany {
                    what: "fatbins in a host object",
                    limit: limits.max_parts as u64,
                });
            }
        }
    }
    Ok(out)
}

/// The members of an `ar` archive, as (name, bytes).
pub fn library_members<'a>(ar: &'a [u8], limits: &Limits) -> Result<Vec<(String, &'a [u8])>> {
    let bad = |e: object::Error| ImageError::malformed("library", format!("bad archive: {e}"));
    let file = ArchiveFile::parse(ar).map_err(bad)?;
    let mut out = Vec::new();
    for m in file.members() {
        let m = m.map_err(bad)?;
        if out.len() >= limits.max_parts {
            return Err(ImageError::TooMany {
                what: "members in a library",
                limit: limits.max_parts as u64,
            });
        }
        let name = String::from_utf8_lossy(m.name()).into_owned();
        out.push((name, m.data(ar).map_err(bad)?));
    }
    Ok(out)
}

/// Whether `bytes` start like an `ar` archive.
pub fn is_library(bytes: &[u8]) -> bool {
    bytes.starts_with(b"!<arch>\n") || bytes.starts_with(b"!<thin>\n")
}
