//! Launch rate of the CPU engine without the wire, of one-block and of multi-block empty kernels
//! (`<<<8,32>>>`: inline on the dispatcher when the stream is idle; `<<<64,256>>>`: above that
//! bound, on a stream's pool thread with the interpreter's worker pool):
//! `cargo run --release -p netgpu-backend --example launch_rate`.
#![allow(clippy::unwrap_used)]
use std::time::Instant;

use netgpu_backend::executor::blocking::Blocking;
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::executor::LaunchDims;

const EMPTY: &str =
    ".version 7.0\n.target sm_50\n.address_size 64\n.visible .entry empty()\n{\n\tret;\n}\n";

fn main() {
    let exec = CpuExecutor::new("rate", 1 << 30, 0);
    let mut e = Blocking::open(&exec, 1 << 28).unwrap();
    let ctx = e.ctx_create(0).unwrap();
    let m = e.module_load(ctx, EMPTY.as_bytes()).unwrap();
    let f = e.module_get_function(m, "empty").unwrap().handle;
    for (grid, block, n) in [(1u32, 1u32, 100_000u32), (8, 32, 20_000), (64, 256, 5_000)] {
        let dims = LaunchDims {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_mem_bytes: 0,
        };
        let t = Instant::now();
        for _ in 0..n {
            e.engine.launch(f, dims, &[], 0, 0).unwrap();
        }
        e.engine.flush();
        let queued = t.elapsed();
        e.ctx_synchronize(ctx).unwrap();
        let all = t.elapsed();
        println!(
            "{n} launches <<<{grid},{block}>>>: queued in {queued:?}, done in {all:?}: {:.0}/s",
            f64::from(n) / all.as_secs_f64()
        );
    }
    let m2 = netgpu_ptx::Module::load(EMPTY).unwrap();
    let k = m2.kernel("empty").unwrap();
    let mem = netgpu_ptx::HostMemory::new();
    for (grid, block, n) in [(1u32, 1u32, 100_000u32), (8, 32, 20_000)] {
        let cfg = netgpu_ptx::LaunchConfig {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_mem_bytes: 0,
            threads: 2,
        };
        let t = Instant::now();
        for _ in 0..n {
            netgpu_ptx::launch(&m2, k, &cfg, &[], &[], &mem).unwrap();
        }
        println!(
            "bare interpreter <<<{grid},{block}>>>: {:.0}/s",
            f64::from(n) / t.elapsed().as_secs_f64()
        );
    }
}
