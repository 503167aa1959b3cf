//! Arbitrary text as a PTX module: loading must succeed or return an error, never panic;
//! a module that loads must launch its kernels (bounded) or fail with a launch error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_ptx::Module;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Module::load(text) {
            common::exercise(&m, data.len() % 2 == 0);
        }
    }
});
