//! The fatbin wrapper nvcc emits into a host program's `.nvFatBinSegment` section and
//! cudart hands to `__cudaRegisterFatBinary` (and from there to `cuLibraryLoadData`/
//! `cuModuleLoadData`):
//!
//! ```text
//! u32 magic 0x466243B1, u32 version, u64 data, u64 filename_or_fatbins
//! ```
//!
//! Version 1: `data` points to a fatbin. Version 2 (`-rdc=true` programs): `data` points to
//! the device-linked fatbin (SASS only) and `filename_or_fatbins` to a NULL-terminated array
//! of pointers to each translation unit's fatbin (relocatable ELF and PTX). The pointers are
//! addresses in the process that holds the wrapper, so only the guest library can follow
//! them; the backend never receives a wrapper.

use crate::bytes::{u32_at, u64_at};
use crate::error::{ImageError, Result};

pub const WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// Size of a wrapper in bytes.
pub const WRAPPER_SIZE: usize = 24;

/// A parsed fatbin wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrapper {
    pub version: u32,
    /// Address of the fatbin (version 2: the device-linked fatbin).
    pub data: u64,
    /// Version 1: a file name pointer or 0 (unused); version 2: the address of the
    /// NULL-terminated array of per-translation-unit fatbin pointers (0: none).
    pub filename_or_fatbins: u64,
}

/// Whether `bytes` start with the wrapper magic.
pub fn is_wrapper(bytes: &[u8]) -> bool {
    u32_at(bytes, 0) == Some(WRAPPER_MAGIC)
}

impl Wrapper {
    /// Parses the 24 wrapper bytes at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Wrapper> {
        let t = || ImageError::truncated("fatbin wrapper", 0, WRAPPER_SIZE as u64, bytes.len());
        let magic = u32_at(bytes, 0).ok_or_else(t)?;
        if magic != WRAPPER_MAGIC {
            return Err(ImageError::malformed(
                "fatbin wrapper",
                format!("bad magic {magic:#010x}"),
            ));
        }
        let w = Wrapper {
            version: u32_at(bytes, 4).ok_or_else(t)?,
            data: u64_at(bytes, 8).ok_or_else(t)?,
            filename_or_fatbins: u64_at(bytes, 16).ok_or_else(t)?,
        };
        if !(1..=2).contains(&w.version) {
            return Err(ImageError::malformed(
                "fatbin wrapper",
                format!("unknown version {}", w.version),
            ));
        }
        if w.data == 0 {
            return Err(ImageError::malformed(
                "fatbin wrapper",
                "null fatbin pointer",
            ));
        }
        Ok(w)
    }

    /// For a version 2 wrapper, the address of the NULL-terminated array of the translation
    /// units' fatbins (the inputs the device-linked image was made from).
    pub fn unit_fatbins(&self) -> Option<u64> {
        (self.version == 2 && self.filename_or_fatbins != 0).then_some(self.filename_or_fatbins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(version: u32, data: u64, aux: u64) -> Vec<u8> {
        let mut b = WRAPPER_MAGIC.to_le_bytes().to_vec();
        b.extend(version.to_le_bytes());
        b.extend(data.to_le_bytes());
        b.extend(aux.to_le_bytes());
        b
    }

    #[test]
    fn versions() {
        let w = Wrapper::parse(&bytes(1, 0x1000, 0)).unwrap();
        assert_eq!((w.version, w.data, w.unit_fatbins()), (1, 0x1000, None));
        let w = Wrapper::parse(&bytes(2, 0x1000, 0x2000)).unwrap();
        assert_eq!(w.unit_fatbins(), Some(0x2000));
        assert!(Wrapper::parse(&bytes(3, 0x1000, 0)).is_err());
        assert!(Wrapper::parse(&bytes(1, 0, 0)).is_err());
        assert!(Wrapper::parse(&bytes(1, 1, 0)[..20]).is_err());
    }
}
