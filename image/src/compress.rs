//! Decompression of fatbin entries: LZ4 block format (`-compress-mode=speed`, flag `0x2000`)
//! with `lz4_flex`, Zstandard (nvcc 13's default, flag `0x8000`) with `ruzstd`.
//!
//! Both crates are pure Rust, so a hostile payload is parsed by memory-safe code (the C `zstd`
//! library would be faster, but entries are kilobytes to a few MiB and decompressed once per
//! module load, and a C build would add a compiler to every build of the backend).
//! The output buffer is the size the entry header declares, checked against the [`Budget`]
//! before it is allocated; a stream that produces more (a decompression bomb) or less than
//! that is refused.

use crate::error::{ImageError, Result};
use crate::limits::Budget;

/// How a fatbin entry's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    /// LZ4 block format (no frame), fatbin entry flag `0x2000`.
    Lz4,
    /// One or more Zstandard frames, fatbin entry flag `0x8000`.
    Zstd,
}

const WHAT: &str = "fatbin entry";

/// Decompresses `input` to exactly `size` bytes.
pub(crate) fn decompress(
    kind: Compression,
    input: &[u8],
    size: u64,
    budget: &Budget,
) -> Result<Vec<u8>> {
    budget.take("decompressed fatbin entry", size)?;
    let len = usize::try_from(size).map_err(|_| ImageError::TooLarge {
        what: "decompressed fatbin entry",
        size,
        limit: usize::MAX as u64,
    })?;
    let mut out = vec![0u8; len];
    let written = match kind {
        Compression::None => {
            let n = input.len().min(len);
            out[..n].copy_from_slice(&input[..n]);
            n
        }
        Compression::Lz4 => lz4_flex::block::decompress_into(input, &mut out).map_err(|e| {
            ImageError::Decompress {
                what: WHAT,
                detail: format!("LZ4: {e} (header declares {size} bytes)"),
            }
        })?,
        Compression::Zstd => zstd(input, &mut out, size)?,
    };
    if written != len {
        return Err(ImageError::Decompress {
            what: WHAT,
            detail: format!("decompresses to {written} bytes, the header declares {size}"),
        });
    }
    Ok(out)
}

fn zstd(input: &[u8], out: &mut [u8], size: u64) -> Result<usize> {
    let mut dec = ruzstd::decoding::FrameDecoder::new();
    dec.decode_all(input, out).map_err(|e| {
        let detail = match e {
            ruzstd::decoding::errors::FrameDecoderError::TargetTooSmall => {
                format!("Zstandard: decompresses to more than the {size} bytes the header declares")
            }
            e => format!("Zstandard: {e}"),
        };
        ImageError::Decompress { what: WHAT, detail }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn lz4_round_trip_and_bomb() {
        let text = b".version 9.5\n.target sm_75\n".repeat(100);
        let packed = lz4_flex::block::compress(&text);
        let budget = Budget::new(&Limits::default());
        let out = decompress(Compression::Lz4, &packed, text.len() as u64, &budget).unwrap();
        assert_eq!(out, text);
        // Declared smaller than the stream: refused, not overrun.
        let e = decompress(Compression::Lz4, &packed, 10, &budget).unwrap_err();
        assert!(matches!(e, ImageError::Decompress { .. }), "{e}");
        // Declared larger than the stream: refused too.
        let e = decompress(Compression::Lz4, &packed, text.len() as u64 + 1, &budget).unwrap_err();
        assert!(matches!(e, ImageError::Decompress { .. }), "{e}");
    }

    #[test]
    fn declared_size_is_capped_before_allocation() {
        let limits = Limits {
            max_entry_bytes: 1000,
            max_total_bytes: 1500,
            ..Limits::default()
        };
        let budget = Budget::new(&limits);
        let e = decompress(Compression::Zstd, &[], 1 << 40, &budget).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
        let packed = lz4_flex::block::compress(&[7u8; 900]);
        decompress(Compression::Lz4, &packed, 900, &budget).unwrap();
        // The second 900 bytes exceed the request's total.
        let e = decompress(Compression::Lz4, &packed, 900, &budget).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { limit: 600, .. }), "{e}");
    }

    #[test]
    fn zstd_garbage_is_an_error() {
        let budget = Budget::new(&Limits::default());
        let e = decompress(Compression::Zstd, b"(\xb5/\xfd garbage", 100, &budget).unwrap_err();
        assert!(matches!(e, ImageError::Decompress { .. }), "{e}");
    }
}
