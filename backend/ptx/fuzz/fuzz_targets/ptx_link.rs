//! Several PTX modules (the input split at NUL bytes, up to four) linked into one program:
//! linking must succeed or return an error, never panic; a program that links must launch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_ptx::Module;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&str> = data
        .split(|&b| b == 0)
        .take(4)
        .filter_map(|p| std::str::from_utf8(p).ok())
        .collect();
    if parts.is_empty() {
        return;
    }
    if let Ok(m) = Module::link(&parts) {
        common::exercise(&m, false);
    }
});
