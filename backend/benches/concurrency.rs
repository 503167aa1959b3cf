//! Concurrency benchmark: what one session's waiting work costs its other requests, and
//! whether streams overlap, against limits measured in the same run.
//!
//! `cargo bench -p netgpu-backend --bench concurrency` prints:
//! - a small call's latency (`Null` and `MemAlloc` round trips, median) with the
//!   session idle and while another task of the same session waits in `StreamSynchronize` for
//!   a 1 s kernel (goal <= 2x);
//! - two 0.5 s kernels on two non-blocking streams against one of them alone (goal: both in
//!   <= 0.6 s, i.e. <= 1.2x one kernel).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use netgpu_client::Client;

mod common;
use common::{start_backend, TOKEN};

const SPIN: &str = ".version 7.0\n.target sm_50\n.address_size 64\n.visible .entry spin(.param .u64 ns)\n{\n.reg .u64 %t0, %t1, %d, %n;\n.reg .pred %p;\nld.param.u64 %n, [ns];\nmov.u64 %t0, %globaltimer;\nLOOP:\nmov.u64 %t1, %globaltimer;\nsub.u64 %d, %t1, %t0;\nsetp.lt.u64 %p, %d, %n;\n@%p bra LOOP;\nret;\n}\n";

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let backend = start_backend().await;
        let addr = backend.addr.to_string();
        println!(
            "netgpu concurrency benchmark (TCP loopback, CPU executor){}\n",
            if quick { " [quick]" } else { "" }
        );
        latency(&addr, quick).await;
        println!();
        overlap(&addr).await;
    });
}

struct Session {
    c: Client,
    ctx: u64,
    spin: u64,
}

async fn session(addr: &str) -> Session {
    let c = Client::connect(addr, TOKEN).await.unwrap();
    let ctx = c.ctx_create(0).await.unwrap();
    let m = c.module_load(ctx, SPIN.as_bytes()).await.unwrap();
    let spin = c.module_get_function(m, "spin").await.unwrap().handle;
    Session { c, ctx, spin }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median latency of `op` repeated for about `span` (at least 20 times).
async fn sample<F, Fut>(span: Duration, op: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < span || v.len() < 20 {
        let t = Instant::now();
        op().await;
        v.push(t.elapsed());
    }
    median(v)
}

async fn latency(addr: &str, quick: bool) {
    let s = session(addr).await;
    let stream = s.c.stream_create(s.ctx, 0).await.unwrap();
    let trials = if quick { 1 } else { 3 };
    println!(
        "{:<44} {:>10} {:>12} {:>8}",
        "small call, median round trip", "idle", "beside sync", "ratio"
    );
    type Op = (
        &'static str,
        fn(&Session) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>,
    );
    let ops: [Op; 3] = [
        ("Null", |s| {
            Box::pin(async move { s.c.null().await.unwrap() })
        }),
        ("MemGetInfo", |s| {
            Box::pin(async move {
                s.c.mem_get_info().await.unwrap();
            })
        }),
        // (MemFree would wait for the kernel, as cuMemFree synchronises: the allocations go
        // with the context at the end.)
        ("MemAlloc 4 KiB", |s| {
            Box::pin(async move {
                s.c.mem_alloc(s.ctx, 4096).await.unwrap();
            })
        }),
    ];
    for (name, op) in ops {
        let (mut idle, mut busy) = (Duration::MAX, Duration::MAX);
        for _ in 0..trials {
            idle = idle.min(sample(Duration::from_millis(300), || op(&s)).await);
            // Another task of the same session waits for a 1 s kernel meanwhile.
            s.c.launch_kernel(
                s.spin,
                [1, 1, 1],
                [1, 1, 1],
                0,
                stream,
                &1_000_000_000u64.to_le_bytes(),
            )
            .await
            .unwrap();
            let c2 = s.c.clone();
            let t = Instant::now();
            let sync = tokio::spawn(async move { c2.stream_synchronize(stream).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            busy = busy.min(sample(Duration::from_millis(700), || op(&s)).await);
            assert!(!sync.is_finished(), "the measurement ran beside the sync");
            sync.await.unwrap().unwrap();
            assert!(t.elapsed() >= Duration::from_millis(900));
        }
        println!(
            "{:<44} {:>8.1}us {:>10.1}us {:>7.2}x  (goal <= 2x)",
            name,
            idle.as_secs_f64() * 1e6,
            busy.as_secs_f64() * 1e6,
            busy.as_secs_f64() / idle.as_secs_f64()
        );
    }
}

async fn overlap(addr: &str) {
    let s = session(addr).await;
    let nb = 1; // CU_STREAM_NON_BLOCKING
    let a = s.c.stream_create(s.ctx, nb).await.unwrap();
    let b = s.c.stream_create(s.ctx, nb).await.unwrap();
    let half = 500_000_000u64.to_le_bytes();
    let t = Instant::now();
    s.c.launch_kernel(s.spin, [1, 1, 1], [1, 1, 1], 0, a, &half)
        .await
        .unwrap();
    s.c.ctx_synchronize(s.ctx).await.unwrap();
    let one = t.elapsed();
    let t = Instant::now();
    s.c.launch_kernel(s.spin, [1, 1, 1], [1, 1, 1], 0, a, &half)
        .await
        .unwrap();
    s.c.launch_kernel(s.spin, [1, 1, 1], [1, 1, 1], 0, b, &half)
        .await
        .unwrap();
    s.c.ctx_synchronize(s.ctx).await.unwrap();
    let two = t.elapsed();
    println!(
        "{:<44} {:>10} {:>12} {:>8}",
        "0.5 s kernels", "one", "two streams", "ratio"
    );
    println!(
        "{:<44} {:>9.3}s {:>11.3}s {:>7.2}x  (goal: two in <= 0.6 s)",
        "one kernel vs one on each of two streams",
        one.as_secs_f64(),
        two.as_secs_f64(),
        two.as_secs_f64() / one.as_secs_f64()
    );
}
