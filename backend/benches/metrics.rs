//! What the session metrics (`[metrics] listen`, backend/src/session/metrics.rs) cost a
//! session's operations, against the same backend with them off, in the same run.
//!
//! `cargo bench -p netgpu-backend --bench metrics` prints, metrics off then on (they cannot be
//! turned off again in a process, so off is measured first, alternating is not possible):
//! - a `Null` round trip (median of sequential calls): the latency each call pays;
//! - `Null` throughput with 64 calls in flight on one session: the dispatcher's per-request
//!   cost, where the metrics' mutex and histogram show most.
//!
//! Each figure is the best of `--trials N` (default 5) runs. Goal: on/off <= 1.05.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use netgpu_client::Client;

mod common;
use common::{start_backend, TOKEN};

/// (median sequential round trip, calls per second with 64 in flight), best of `trials`.
async fn measure(addr: &str, trials: usize) -> (Duration, f64) {
    let c = Arc::new(Client::connect(addr, TOKEN).await.unwrap());
    let (mut best_rt, mut best_rate) = (Duration::MAX, 0f64);
    for _ in 0..trials {
        let mut v = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let t = Instant::now();
            c.null().await.unwrap();
            v.push(t.elapsed());
        }
        v.sort();
        best_rt = best_rt.min(v[v.len() / 2]);
        let per_task = 500;
        let t = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        c.null().await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        best_rate = best_rate.max((64 * per_task) as f64 / t.elapsed().as_secs_f64());
    }
    (best_rt, best_rate)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let backend = start_backend().await;
        let addr = backend.addr.to_string();
        println!("netgpu session metrics cost (TCP loopback, CPU executor, best of {trials})\n");
        let (rt_off, rate_off) = measure(&addr, trials).await;
        netgpu_backend::session::metrics::enable(netgpu_metrics::labels::Gpu::default());
        let (rt_on, rate_on) = measure(&addr, trials).await;
        println!(
            "{:<40} {:>12} {:>12} {:>8}",
            "", "metrics off", "metrics on", "on/off"
        );
        println!(
            "{:<40} {:>9.1} us {:>9.1} us {:>8.3}",
            "Null round trip, median",
            rt_off.as_secs_f64() * 1e6,
            rt_on.as_secs_f64() * 1e6,
            rt_on.as_secs_f64() / rt_off.as_secs_f64()
        );
        println!(
            "{:<40} {:>10.0}/s {:>10.0}/s {:>8.3}",
            "Null, 64 in flight (time per call)",
            rate_off,
            rate_on,
            rate_off / rate_on
        );
    });
}
