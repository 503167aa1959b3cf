//! Launch control figures: how soon a running kernel stops once cancelled or past its
//! deadline (the backend's guarantee to a session going away), against the time slice the
//! design promises, and the cost of a launch: an empty kernel of one block and multi-block
//! ones (which run on the worker pool), against a bare thread spawn (what a launch paid per
//! extra worker before the pool), and a 64K-element vector add against the same loop in
//! Rust on one thread.
//!
//! `cargo bench -p netgpu-ptx --bench launch` (`-- --launches`: only the launch costs).

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netgpu_ptx::{launch_with, HostMemory, LaunchConfig, LaunchError, LaunchOptions, Module};

const SPIN: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry spin(.param .u64 p)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [p];
$L_loop:
    ld.volatile.global.u32 %r1, [%rd1];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra $L_loop;
    ret;
}
.visible .entry empty()
{
    ret;
}
"#;

fn main() {
    let m = Module::load(SPIN).unwrap();
    let mem = HostMemory::new();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    if !std::env::args().any(|a| a == "--launches") {
        control(&m, &mem, threads);
    }
    launches(&m, &mem, threads);
}

/// Median per-launch time of `rounds` rounds of `n` launches of `kernel`.
fn per_launch(
    m: &Module,
    kernel: &str,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &HostMemory,
    n: u32,
) -> f64 {
    let k = m.kernel(kernel).unwrap();
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                launch_with(m, k, cfg, params, &[], mem, &LaunchOptions::default())
                    .result
                    .unwrap();
            }
            t.elapsed().as_secs_f64() / f64::from(n)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn launches(m: &Module, mem: &HostMemory, threads: usize) {
    let t = Instant::now();
    for _ in 0..2000 {
        std::thread::spawn(|| {}).join().unwrap();
    }
    let spawn = t.elapsed().as_secs_f64() / 2000.0;
    println!(
        "launch cost, {threads} worker threads (median of 5 rounds); a thread spawn+join {:.2} us",
        spawn * 1e6
    );
    for (grid, block, n) in [(1u32, 32u32, 20_000u32), (8, 32, 5000), (64, 128, 500)] {
        let cfg = LaunchConfig {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_mem_bytes: 0,
            threads: if grid == 1 { 1 } else { 0 },
        };
        let per = per_launch(m, "empty", &cfg, &[], mem, n);
        println!(
            "empty launch <<<{grid},{block}>>>{:>w$}{:>9.2} us, {:>6.2}x a thread spawn+join",
            "",
            per * 1e6,
            per / spawn,
            w = 12 - format!("{grid}{block}").len(),
        );
    }
    // vector_add of tests/kernels/vector_add.cu over 4K and 64K floats in blocks of 256.
    let v = Module::load(include_str!("../../../tests/kernels/vector_add.ptx")).unwrap();
    for (n, workers, launches) in [(4096usize, 0usize, 200u32), (65536, 0, 20), (65536, 1, 20)] {
        vector_add(&v, mem, n, workers, launches, threads);
    }
}

/// Times `c = a + b` over `n` floats (blocks of 256) with `workers` workers (0: one per
/// core) against the same loop in Rust on one thread, and checks the result.
fn vector_add(v: &Module, mem: &HostMemory, n: usize, workers: usize, launches: u32, cores: usize) {
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (2 * i) as f32).collect();
    let bytes = |x: &[f32]| x.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let (da, db, dc) = (mem.alloc(n * 4), mem.alloc(n * 4), mem.alloc(n * 4));
    assert!(mem.write(da, &bytes(&a)) && mem.write(db, &bytes(&b)));
    let mut params = Vec::new();
    for p in [da, db, dc] {
        params.extend_from_slice(&p.to_le_bytes());
    }
    params.extend_from_slice(&(n as i32).to_le_bytes());
    params.extend_from_slice(&[0; 4]);
    let grid = n.div_ceil(256) as u32;
    let cfg = LaunchConfig {
        grid: [grid, 1, 1],
        block: [256, 1, 1],
        shared_mem_bytes: 0,
        threads: workers,
    };
    let per = per_launch(v, "vector_add", &cfg, &params, mem, launches);
    let c = mem.read(dc, n * 4).unwrap();
    assert!(c
        .chunks(4)
        .enumerate()
        .all(|(i, f)| f32::from_le_bytes(f.try_into().unwrap()) == (3 * i) as f32));
    let t = Instant::now();
    let mut out = vec![0f32; n];
    for _ in 0..100 {
        for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(&b)) {
            *o = std::hint::black_box(*x) + y;
        }
        std::hint::black_box(&mut out);
    }
    let native = t.elapsed().as_secs_f64() / 100.0;
    println!(
        "vector_add {:>2}K <<<{grid},256>>> {} worker(s) {:>9.2} us, {:>6.0}x the Rust loop on one thread ({:.1} us)",
        n / 1024,
        if workers == 0 { cores } else { workers },
        per * 1e6,
        per / native,
        native * 1e6
    );
}

fn control(m: &Module, mem: &HostMemory, threads: usize) {
    let flag = mem.alloc(4);
    let params = flag.to_le_bytes();
    let cfg = LaunchConfig {
        grid: [256, 1, 1],
        block: [1024, 1, 1],
        shared_mem_bytes: 0,
        threads: 0,
    };
    println!("launch control, {threads} worker threads, blocks of 1024 threads spinning");

    let mut stops = Vec::new();
    for _ in 0..5 {
        let cancel = AtomicBool::new(false);
        let stopped = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let opts = LaunchOptions {
                    cancel: Some(&cancel),
                    ..LaunchOptions::default()
                };
                let r = launch_with(m, m.kernel("spin").unwrap(), &cfg, &params, &[], mem, &opts);
                assert_eq!(r.result, Err(LaunchError::Cancelled));
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(100));
            let at = Instant::now();
            cancel.store(true, Ordering::Relaxed);
            h.join().unwrap() - at
        });
        stops.push(stopped);
    }
    stops.sort();
    println!(
        "cancel -> launch returns       median {:>7.2} ms, max {:>7.2} ms",
        stops[2].as_secs_f64() * 1e3,
        stops[4].as_secs_f64() * 1e3
    );

    let mut overs = Vec::new();
    for _ in 0..5 {
        let deadline = Instant::now() + Duration::from_millis(100);
        let opts = LaunchOptions {
            deadline: Some(deadline),
            ..LaunchOptions::default()
        };
        let r = launch_with(m, m.kernel("spin").unwrap(), &cfg, &params, &[], mem, &opts);
        assert_eq!(r.result, Err(LaunchError::Timeout));
        overs.push(Instant::now() - deadline);
    }
    overs.sort();
    println!(
        "deadline -> launch returns     median {:>7.2} ms, max {:>7.2} ms",
        overs[2].as_secs_f64() * 1e3,
        overs[4].as_secs_f64() * 1e3
    );

    // The slice the design promises: one thread slice of this loop, timed in this run.
    let one = LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
        threads: 1,
    };
    let t = Instant::now();
    let opts = LaunchOptions {
        instruction_limit: Some(1 << 24),
        ..LaunchOptions::default()
    };
    let r = launch_with(m, m.kernel("spin").unwrap(), &one, &params, &[], mem, &opts);
    let per_inst = t.elapsed().as_secs_f64() / r.instructions as f64;
    println!(
        "one 8192-instruction slice     {:>7.3} ms ({:.0} M thread-inst/s on one thread)",
        per_inst * 8192.0 * 1e3,
        1e-6 / per_inst
    );
}
