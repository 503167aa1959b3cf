//! Device printf formatting with arbitrary format strings and argument bytes (a kernel's
//! format string is guest input): output is bounded, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_ptx::printf::{format, Args, MAX_CALL_OUTPUT};

struct Bytes<'a>(&'a [u8], usize);

impl Args for Bytes<'_> {
    fn next(&mut self, size: usize) -> Option<u64> {
        self.1 = self.1.checked_next_multiple_of(size)?;
        let b = self.0.get(self.1..self.1.checked_add(size)?)?;
        self.1 += size;
        let mut v = [0u8; 8];
        v[..size].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    }
    fn string(&mut self, addr: u64) -> Option<Vec<u8>> {
        (addr % 3 != 0).then(|| vec![b'x'; (addr % 100) as usize])
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (fmt, args) = data.split_at(split);
    let (out, n) = format(fmt, &mut Bytes(args, 0));
    assert!(out.len() <= MAX_CALL_OUTPUT);
    assert!(n >= -1);
});
