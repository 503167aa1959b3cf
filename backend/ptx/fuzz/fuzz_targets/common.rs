//! What every PTX fuzz target does with a module that loads: check its parameter layouts,
//! then launch each kernel (bounded by an instruction limit and a deadline) with pointer
//! parameters aimed at a scratch buffer, so kernels do real work. Loading and launching
//! must return a result, never panic or hang.

use std::time::{Duration, Instant};

use netgpu_ptx::{launch_with, HostMemory, LaunchConfig, LaunchOptions, Module};

/// Globals larger than this together are not allocated (the kernel is not launched).
const MAX_GLOBALS: u64 = 4 << 20;

pub fn exercise(m: &Module, cooperative: bool) {
    let mut names: Vec<&str> = m.kernel_names().collect();
    names.sort();
    for name in names.into_iter().take(2) {
        let k = m.kernel(name).expect("listed kernel exists");
        // Every kernel's parameter layout is self-consistent.
        let mut end = 0u64;
        for p in k.params() {
            assert!(u64::from(p.offset) >= end, "parameters overlap");
            end = u64::from(p.offset) + u64::from(p.size);
        }
        assert!(end <= u64::from(k.param_size));
        assert!(k.param_size <= 32_764);
        let total: u64 = m.globals().iter().map(|g| g.size).sum();
        if total > MAX_GLOBALS {
            continue;
        }
        let mem = HostMemory::new();
        let scratch = mem.alloc(64 << 10);
        let addrs: Vec<u64> = m
            .globals()
            .iter()
            .map(|g| mem.alloc(g.size.max(1) as usize))
            .collect();
        for (i, a) in addrs.iter().enumerate() {
            let img = m.init_image(i, &addrs).expect("globals match");
            assert!(mem.write(*a, &img), "initial image fits its global");
        }
        let mut params = vec![0u8; k.param_size as usize];
        for p in k.params() {
            let at = p.offset as usize;
            match p.size {
                8 => params[at..at + 8].copy_from_slice(&scratch.to_le_bytes()),
                4 => params[at..at + 4].copy_from_slice(&64u32.to_le_bytes()),
                _ => {}
            }
        }
        let a = k.attributes();
        let block = match a.reqntid {
            Some(r) if r.iter().map(|&d| u64::from(d)).product::<u64>() <= 64 => r,
            Some(_) => continue,
            None => [a.max_threads_per_block.min(32), 1, 1],
        };
        let cfg = LaunchConfig {
            grid: [2, 1, 1],
            block,
            shared_mem_bytes: 256,
            threads: 1,
        };
        let opts = LaunchOptions {
            cooperative,
            deadline: Some(Instant::now() + Duration::from_secs(2)),
            instruction_limit: Some(10_000),
            console_limit: 4096,
            sm_count: 1,
            ..LaunchOptions::default()
        };
        let out = launch_with(m, k, &cfg, &params, &addrs, &mem, &opts);
        assert!(out.console.len() <= 4096);
    }
}
