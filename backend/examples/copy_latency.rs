//! Round-trip latency of small synchronous copies over loopback TCP (CPU executor), for
//! profiling the copy path: `cargo run --release -p netgpu-backend --example copy_latency`.
#![allow(clippy::unwrap_used)]
use std::sync::Arc;
use std::time::Instant;

use bytesize::ByteSize;
use netgpu_backend::config::{Config, ExecutorKind};
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::server::{Server, Shared};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            executor: ExecutorKind::Cpu,
            session_memory_quota: ByteSize::gib(1),
            ..Config::default()
        };
        let exec = Arc::new(CpuExecutor::new("lat", 1 << 31, 0));
        let shared = Shared::new(config, vec!["t".into()], exec);
        let server = Server::bind(shared).await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(server.run(std::future::pending()));
        // On a runtime worker, as vdev's queue workers run.
        tokio::spawn(measure(addr)).await.unwrap();
    });
}

async fn measure(addr: String) {
    {
        let c = netgpu_client::Client::connect(&addr, "t").await.unwrap();
        let ctx = c.ctx_create(0).await.unwrap();
        let p = c.mem_alloc(ctx, 1 << 20).await.unwrap();
        for size in [4096usize, 65536] {
            let data = vec![1u8; size];
            let only = std::env::var("ONLY").unwrap_or_default();
            for (name, n) in [("htod", 20_000), ("dtoh", 20_000), ("null", 20_000)] {
                if !only.is_empty() && only != name {
                    continue;
                }
                let t = Instant::now();
                let mut buf = Vec::new();
                for _ in 0..n {
                    match name {
                        "htod" => c.memcpy_htod(ctx, p, &data, 0).await.unwrap(),
                        "dtoh" => {
                            buf = c
                                .memcpy_dtoh_into(ctx, p, size as u64, 0, buf)
                                .await
                                .unwrap()
                        }
                        _ => c.null().await.unwrap(),
                    }
                }
                println!(
                    "{name} {size}: {:.1} us",
                    t.elapsed().as_secs_f64() * 1e6 / n as f64
                );
            }
        }
    }
}
