//! Launch rate of the CPU engine without the wire: `cargo run --release -p netgpu-backend --example launch_rate`.
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
    let dims = LaunchDims {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
    };
    let n = 100_000;
    let t = Instant::now();
    for _ in 0..n {
        e.engine.launch(f, dims, Vec::new(), 0, 0).unwrap();
    }
    e.engine.flush();
    let queued = t.elapsed();
    e.ctx_synchronize(ctx).unwrap();
    let all = t.elapsed();
    println!(
        "{n} launches: queued in {queued:?}, done in {all:?}: {:.0}/s",
        n as f64 / all.as_secs_f64()
    );
    let m2 = netgpu_ptx::Module::load(EMPTY).unwrap();
    let k = m2.kernel("empty").unwrap();
    let mem = netgpu_ptx::HostMemory::new();
    let cfg = netgpu_ptx::LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
        threads: 2,
    };
    let t = Instant::now();
    for _ in 0..n {
        netgpu_ptx::launch(&m2, k, &cfg, &[], &[], &mem).unwrap();
    }
    println!(
        "bare interpreter: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
}
