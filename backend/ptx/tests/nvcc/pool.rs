//! Multi-block launches on the persistent worker pool: a launch completes while every pool
//! thread is busy with another launch (cooperative ones too), concurrent launches neither
//! deadlock nor see each other's block state, and cancellation, deadlines and a trap stop
//! every worker of a launch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netgpu_ptx::{LaunchError, Module, WorkerPool};

use crate::util::*;

/// `spin`: every thread waits until the word at `flag` is non-zero. `stall`: every block
/// counts itself in at `count`, then block `bad` waits until `want` blocks are in and traps;
/// the other blocks wait for `flag`, which nobody sets.
const KERNELS: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry spin(.param .u64 flag)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [flag];
$L_loop:
    ld.volatile.global.u32 %r1, [%rd1];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra $L_loop;
    ret;
}
.visible .entry stall(.param .u64 flag, .param .u64 count, .param .u32 bad, .param .u32 want)
{
    .reg .b64 %rd<3>;
    .reg .b32 %r<8>;
    .reg .pred %p<4>;
    ld.param.u64 %rd1, [flag];
    ld.param.u64 %rd2, [count];
    ld.param.u32 %r5, [bad];
    ld.param.u32 %r6, [want];
    mov.u32 %r1, %tid.x;
    setp.ne.u32 %p1, %r1, 0;
    @%p1 bra $L_counted;
    atom.global.add.u32 %r2, [%rd2], 1;
$L_counted:
    mov.u32 %r3, %ctaid.x;
    setp.ne.u32 %p2, %r3, %r5;
    @%p2 bra $L_spin;
$L_wait:
    ld.volatile.global.u32 %r4, [%rd2];
    setp.lt.u32 %p3, %r4, %r6;
    @%p3 bra $L_wait;
    trap;
$L_spin:
    ld.volatile.global.u32 %r4, [%rd1];
    setp.eq.u32 %p3, %r4, 0;
    @%p3 bra $L_spin;
    ret;
}
"#;

/// Runs `f` on another thread; fails the test if it has not returned after a minute (a
/// hang guard, not a speed check).
fn within_a_minute<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the launch did not return")
    })
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `c = a + b` over `n` floats in blocks of 256, on `pool`; checks the result.
fn vector_add(gpu: &Gpu, pool: Option<&WorkerPool>, threads: usize, n: usize, seed: u64) {
    let m = module("../vector_add.ptx");
    let mut r = Rng(seed);
    let a: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let b: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let (da, db, dc) = (gpu.upload(&a), gpu.upload(&b), gpu.zeros(n * 4));
    let mut l = Launch::new(&m, "vector_add", n.div_ceil(256) as u32, 256);
    l.threads = threads;
    l.opts.pool = pool;
    l.run(gpu, &[&u64b(da), &u64b(db), &u64b(dc), &i32b(n as i32)])
        .unwrap();
    let c: Vec<f32> = gpu.download(dc, n);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
}

#[test]
fn a_launch_completes_while_every_pool_thread_is_busy_with_another_launch() {
    let m = Module::load(KERNELS).unwrap();
    let pool = WorkerPool::new();
    let gpu = Gpu::new();
    let flag = gpu.zeros(4);
    std::thread::scope(|s| {
        // Launch A: three workers (the caller and two pool threads) spin until released.
        let a = s.spawn(|| {
            let mut l = Launch::new(&m, "spin", 64, 32);
            l.threads = 3;
            l.opts.pool = Some(&pool);
            l.opts.deadline = Some(Instant::now() + Duration::from_secs(60));
            l.run(&gpu, &[&u64b(flag)])
        });
        wait_until("launch A to hold both pool threads", || pool.busy() == 2);
        assert_eq!(pool.threads(), 2);
        // Launch B on another thread of the same pool: its caller runs every block.
        within_a_minute(|| vector_add(&gpu, Some(&pool), 3, 64 * 1024, 11));
        // A cooperative launch with grid-wide barriers: its caller claims every share.
        within_a_minute(|| grid_sum(&gpu, Some(&pool), 3));
        assert_eq!(pool.busy(), 2, "launch A still holds the pool");
        assert!(gpu.mem.write(flag, &1u32.to_le_bytes()));
        assert_eq!(a.join().unwrap(), Ok(()));
    });
    assert_eq!(pool.busy(), 0);
    assert_eq!(pool.threads(), 2, "the pool grew to one launch's need");
}

/// `grid_sum` of coop_groups.cu over 6 blocks with grid.sync(); checks every output.
fn grid_sum(gpu: &Gpu, pool: Option<&WorkerPool>, workers: usize) {
    let m = module("coop_groups.ptx");
    let (blocks, threads, n) = (6usize, 128usize, 4096usize);
    let mut r = Rng(5);
    let x: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
    let want: i32 = x.iter().sum();
    let dx = gpu.upload(&x);
    let partials = gpu.zeros(blocks * 4);
    let total = gpu.zeros(4);
    let out = gpu.zeros(blocks * threads * 4);
    let mut l = Launch::new(&m, "grid_sum", blocks as u32, threads as u32);
    l.threads = workers;
    l.opts.cooperative = true;
    l.opts.sm_count = 2;
    l.opts.pool = pool;
    l.opts.deadline = Some(Instant::now() + Duration::from_secs(60));
    l.run(
        gpu,
        &[
            &u64b(dx),
            &u64b(partials),
            &u64b(total),
            &u64b(out),
            &i32b(n as i32),
        ],
    )
    .unwrap();
    let got: Vec<i32> = gpu.download(out, blocks * threads);
    assert!(got.iter().all(|&g| g == want), "{:?}", &got[..4]);
}

#[test]
fn launches_from_several_threads_at_once_on_the_process_pool_all_complete_correctly() {
    let gpu = Gpu::new();
    within_a_minute(|| {
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let gpu = &gpu;
                s.spawn(move || {
                    for i in 0..20 {
                        vector_add(gpu, None, 4, 8 * 256 + 17, t * 100 + i);
                        if i % 5 == 0 {
                            grid_sum(gpu, None, 3);
                        }
                    }
                });
            }
        })
    });
    // The process's pool grows to the largest `workers - 1` of a launch of this binary
    // (tests ask for at most 4 workers, or one per core), not to the launches at once.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = WorkerPool::global();
    assert!(pool.threads() < cores.max(4), "{pool:?}");
}

#[test]
fn concurrent_launches_never_see_each_others_block_state() {
    // `dirty` fills registers, shared and local memory; `peek` stores what it finds in its
    // own. Run at once on two threads of one pool, with pool threads moving between them.
    let m = Module::load(crate::control::LEFTOVERS).unwrap();
    let pool = WorkerPool::new();
    let gpu = Gpu::new();
    let stop = AtomicBool::new(false);
    within_a_minute(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let mut d = Launch::new(&m, "dirty", 16, 256);
                    d.threads = 3;
                    d.opts.pool = Some(&pool);
                    d.run(&gpu, &[]).unwrap();
                }
            });
            for i in 0..200 {
                let block = [256, 64, 32][i % 3];
                let out = gpu.zeros(block as usize * 16);
                let mut p = Launch::new(&m, "peek", 8, block);
                p.threads = 3;
                p.opts.pool = Some(&pool);
                p.run(&gpu, &[&u64b(out)]).unwrap();
                let seen = gpu.download::<u32>(out, block as usize * 4);
                assert!(
                    seen.iter().all(|&v| v == 0),
                    "launch {i}: peek<<<8,{block}>>> saw {:x?}",
                    seen.iter().find(|&&v| v != 0)
                );
            }
            stop.store(true, Ordering::Relaxed);
        })
    });
}

#[test]
fn a_trap_in_one_block_stops_every_worker_of_the_launch() {
    let m = Module::load(KERNELS).unwrap();
    let pool = WorkerPool::new();
    let gpu = Gpu::new();
    let flag = gpu.zeros(4);
    // Block 0 runs on the calling thread, blocks 1 and 2 on pool threads (each worker takes
    // one block first); the trapping block waits until all three are running.
    for bad in [0u32, 1, 2] {
        let count = gpu.zeros(4);
        let mut l = Launch::new(&m, "stall", 64, 32);
        l.threads = 3;
        l.opts.pool = Some(&pool);
        l.opts.deadline = Some(Instant::now() + Duration::from_secs(60));
        let e = within_a_minute(|| {
            l.run(
                &gpu,
                &[
                    &u64b(flag),
                    &u64b(count),
                    &bad.to_le_bytes(),
                    &3u32.to_le_bytes(),
                ],
            )
        })
        .unwrap_err();
        assert!(
            matches!(e, LaunchError::Trap { block: [b, 0, 0], .. } if b == bad),
            "block {bad}: {e:?}"
        );
        assert_eq!(pool.busy(), 0, "every worker stopped");
    }
}

#[test]
fn cancellation_and_the_deadline_stop_every_worker_of_a_launch() {
    let m = Module::load(KERNELS).unwrap();
    let pool = WorkerPool::new();
    let gpu = Gpu::new();
    let flag = gpu.zeros(4);
    for cooperative in [false, true] {
        let cancel = AtomicBool::new(false);
        let r = within_a_minute(|| {
            std::thread::scope(|s| {
                let h = s.spawn(|| {
                    let mut l = Launch::new(&m, "spin", 8, 64);
                    l.threads = 3;
                    l.opts.pool = Some(&pool);
                    l.opts.cooperative = cooperative;
                    l.opts.cancel = Some(&cancel);
                    l.run(&gpu, &[&u64b(flag)])
                });
                if cooperative {
                    // Its shares go to the pool threads or, after a while, to the caller.
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    wait_until("both pool threads to run the launch", || pool.busy() == 2);
                }
                cancel.store(true, Ordering::Relaxed);
                h.join().unwrap()
            })
        });
        assert_eq!(r, Err(LaunchError::Cancelled), "cooperative {cooperative}");
        assert_eq!(pool.busy(), 0, "every worker stopped");

        let mut l = Launch::new(&m, "spin", 8, 64);
        l.threads = 3;
        l.opts.pool = Some(&pool);
        l.opts.cooperative = cooperative;
        l.opts.deadline = Some(Instant::now() + Duration::from_millis(50));
        let r = within_a_minute(|| l.run(&gpu, &[&u64b(flag)]));
        assert_eq!(r, Err(LaunchError::Timeout), "cooperative {cooperative}");
        assert_eq!(pool.busy(), 0, "every worker stopped");
    }
}
