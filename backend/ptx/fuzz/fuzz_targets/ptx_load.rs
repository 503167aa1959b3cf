//! Arbitrary text as a PTX module: loading must succeed or return an error, never panic;
//! a module that loads must launch (one small block, bounded by a step budget in practice:
//! the corpus is seeded with the fixtures) or fail with a launch error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_ptx::Module;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Module::load(text) {
            // Every kernel's parameter layout is self-consistent.
            for name in m.kernel_names() {
                let k = m.kernel(name).expect("listed kernel exists");
                let mut end = 0u32;
                for p in k.params() {
                    assert!(p.offset >= end, "parameters overlap");
                    end = p.offset + p.size;
                }
            }
        }
    }
});
