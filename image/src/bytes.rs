//! Bounds-checked little-endian reads. Every read of image bytes in this crate goes through
//! these helpers, so an offset or length from a hostile header can only produce `None`,
//! never an out-of-bounds index or an arithmetic overflow.

/// `len` bytes at `off`, if they are all inside `b`.
pub(crate) fn slice(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    let end = start.checked_add(len)?;
    b.get(start..end)
}

fn array<const N: usize>(b: &[u8], off: u64) -> Option<[u8; N]> {
    slice(b, off, N as u64)?.try_into().ok()
}

pub(crate) fn u8_at(b: &[u8], off: u64) -> Option<u8> {
    array::<1>(b, off).map(|a| a[0])
}

pub(crate) fn u16_at(b: &[u8], off: u64) -> Option<u16> {
    array(b, off).map(u16::from_le_bytes)
}

pub(crate) fn u32_at(b: &[u8], off: u64) -> Option<u32> {
    array(b, off).map(u32::from_le_bytes)
}

pub(crate) fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    array(b, off).map(u64::from_le_bytes)
}

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(x.checked_add(mask)? & !mask)
}

/// The first bytes of `b` as hex, for error messages.
pub(crate) fn hex_prefix(b: &[u8]) -> String {
    let mut s = String::new();
    for x in b.iter().take(8) {
        s.push_str(&format!("{x:02x}"));
    }
    if s.is_empty() {
        s.push_str("(empty)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u32_at(&b, 0), Some(0x0403_0201));
        assert_eq!(u32_at(&b, 4), Some(0x0807_0605));
        assert_eq!(u32_at(&b, 5), None);
        assert_eq!(u64_at(&b, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(u64_at(&b, 1), None);
        assert_eq!(u16_at(&b, u64::MAX), None);
        assert_eq!(slice(&b, u64::MAX, 2), None);
        assert_eq!(slice(&b, 2, u64::MAX), None);
        assert_eq!(slice(&b, 8, 0), Some(&[][..]));
        assert_eq!(align_up(13, 8), Some(16));
        assert_eq!(align_up(u64::MAX, 8), None);
    }
}
