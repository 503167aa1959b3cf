//! Launch control figures: how soon a running kernel stops once cancelled or past its
//! deadline (the backend's guarantee to a session going away), against the time slice the
//! design promises, and the cost of a launch (an empty kernel, against a bare thread spawn,
//! the cost a worker pool already pays).
//!
//! `cargo bench -p netgpu-ptx --bench launch`

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
    let flag = mem.alloc(4);
    let params = flag.to_le_bytes();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
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
                let r = launch_with(
                    &m,
                    m.kernel("spin").unwrap(),
                    &cfg,
                    &params,
                    &[],
                    &mem,
                    &opts,
                );
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
        let r = launch_with(
            &m,
            m.kernel("spin").unwrap(),
            &cfg,
            &params,
            &[],
            &mem,
            &opts,
        );
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
    let r = launch_with(
        &m,
        m.kernel("spin").unwrap(),
        &one,
        &params,
        &[],
        &mem,
        &opts,
    );
    let per_inst = t.elapsed().as_secs_f64() / r.instructions as f64;
    println!(
        "one 8192-instruction slice     {:>7.3} ms ({:.0} M thread-inst/s on one thread)",
        per_inst * 8192.0 * 1e3,
        1e-6 / per_inst
    );

    let small = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        shared_mem_bytes: 0,
        threads: 1,
    };
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        launch_with(
            &m,
            m.kernel("empty").unwrap(),
            &small,
            &[],
            &[],
            &mem,
            &LaunchOptions::default(),
        )
        .result
        .unwrap();
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n);
    let t = Instant::now();
    for _ in 0..2000 {
        std::thread::spawn(|| {}).join().unwrap();
    }
    let spawn = t.elapsed().as_secs_f64() / 2000.0;
    println!(
        "empty launch (1 block of 32)   {:>7.2} us, {:.2}x a thread spawn+join ({:.2} us)",
        per * 1e6,
        per / spawn,
        spawn * 1e6
    );
}
