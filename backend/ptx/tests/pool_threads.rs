//! The process's worker pool does not leak threads and its threads sleep when idle (a
//! binary of its own: it counts the process's threads).

#![allow(clippy::unwrap_used)]

use netgpu_ptx::{launch_with, HostMemory, LaunchConfig, LaunchOptions, Module, WorkerPool};

const EMPTY: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry empty()
{
    ret;
}
"#;

/// (thread id, state letter, user + system clock ticks) of the process's pool threads.
fn pool_threads() -> Vec<(String, char, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with("ptx-worker-") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // After "(comm)": state, then fields 4.. ; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let state = f[0].chars().next().unwrap();
        let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        out.push((dir.display().to_string(), state, ticks));
    }
    out
}

#[test]
fn the_process_pool_keeps_a_bounded_set_of_threads_that_sleep_when_idle() {
    let m = Module::load(EMPTY).unwrap();
    let mem = HostMemory::new();
    let k = m.kernel("empty").unwrap();
    let launches = |workers: usize, n: usize| {
        let cfg = LaunchConfig {
            grid: [64, 1, 1],
            block: [32, 1, 1],
            shared_mem_bytes: 0,
            threads: workers,
        };
        for _ in 0..n {
            launch_with(&m, k, &cfg, &[], &[], &mem, &LaunchOptions::default())
                .result
                .unwrap();
        }
    };
    // Three threads launching at once, many times: the pool grows to one launch's need.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| launches(4, 300));
        }
    });
    let pool = WorkerPool::global();
    assert_eq!(pool.threads(), 3, "{pool:?}");
    let first = pool_threads();
    assert_eq!(first.len(), 3, "{first:?}");
    launches(4, 300);
    launches(2, 300);
    assert_eq!(pool_threads().len(), 3, "no thread per launch");

    // Idle: parked (state S), no CPU time used while nothing is launched.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = pool_threads();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let after = pool_threads();
    assert_eq!(pool.busy(), 0);
    for ((id, _, t0), (id1, state, t1)) in before.iter().zip(&after) {
        assert_eq!(id, id1);
        assert_eq!(*state, 'S', "idle pool thread {id} is {state}");
        // One clock tick (10 ms of 400) of slack for accounting; a spinning thread takes ~40.
        assert!(t1 - t0 <= 1, "idle pool thread {id} used {} ticks", t1 - t0);
    }
}
