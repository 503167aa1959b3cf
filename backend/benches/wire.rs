//! Wire-path benchmark: the backend over TCP loopback against the raw TCP limits measured in
//! the same run.
//!
//! `cargo bench -p netgpu-backend --bench wire` prints, side by side:
//! - the round trip of a raw 24-byte ping-pong vs the protocol's `Null` request;
//! - raw TCP transfers (request, bulk bytes, 1-byte answer) vs host-to-device and
//!   device-to-host copies of 4 KiB, 1 MiB and 64 MiB;
//! - stream-ordered launches per second of an empty kernel, one block of one thread and
//!   `<<<64,256>>>` (above the dispatcher's inline bound: a stream's pool thread runs it with
//!   the interpreter's worker pool) (`-- --launches`: only those).
//!
//! `-- --rtt`: only the round trips (for profiling the request path).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use netgpu_backend::config::{Config, ExecutorKind};
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::server::{Server, Shared};

const TOKEN: &str = "bench";

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--launches`: only the launch rate (for profiling the launch path).
    let launches_only = std::env::args().any(|a| a == "--launches");
    // `--rtt`: only the round trips (for profiling the request path).
    let rtt_only = std::env::args().any(|a| a == "--rtt");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(start_backend());
    println!(
        "netgpu wire benchmark (TCP loopback, CPU executor){}",
        if quick { " [quick]" } else { "" }
    );
    println!();

    if launches_only {
        for _ in 0..3 {
            if let Some(rate) = on_rt(&rt, launches(addr.clone(), 1_000_000, 1, 1)) {
                println!("async empty-kernel launches {rate:.0}/s");
            }
            if let Some(rate) = on_rt(&rt, launches(addr.clone(), 5_000, 64, 256)) {
                println!("async empty-kernel launches <<<64,256>>> {rate:.0}/s");
            }
        }
        return;
    }
    // The machine is shared (builds, other benches): each figure is the best of several
    // alternating trials, raw and netgpu interleaved so both see the same conditions.
    let trials = if quick { 2 } else { 5 };
    let n_rtt = if quick { 2_000 } else { 10_000 };
    let (mut raw_rtt, mut null_rtt) = (Duration::MAX, Duration::MAX);
    for _ in 0..trials {
        raw_rtt = raw_rtt.min(raw_round_trip(n_rtt));
        null_rtt = null_rtt.min(on_rt(&rt, null_round_trip(addr.clone(), n_rtt)));
    }
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "round trip", "raw TCP", "netgpu", "ratio"
    );
    println!(
        "{:<34} {:>10.1}us {:>10.1}us {:>7.2}x  (goal <= 1.3x)",
        "24-byte ping-pong vs Null",
        us(raw_rtt),
        us(null_rtt),
        null_rtt.as_secs_f64() / raw_rtt.as_secs_f64()
    );
    if rtt_only {
        return;
    }
    println!();

    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "throughput", "raw TCP", "netgpu", "ratio"
    );
    for &(size, iters) in &[
        (4usize << 10, if quick { 2_000 } else { 10_000 }),
        (1 << 20, if quick { 50 } else { 300 }),
        (64 << 20, if quick { 3 } else { 8 }),
    ] {
        let (mut raw_up, mut raw_down, mut htod, mut dtoh) = (0f64, 0f64, 0f64, 0f64);
        for _ in 0..trials {
            raw_up = raw_up.max(raw_transfer(size, iters, true));
            raw_down = raw_down.max(raw_transfer(size, iters, false));
            let (u, d) = on_rt(&rt, copies(addr.clone(), size, iters));
            htod = htod.max(u);
            dtoh = dtoh.max(d);
        }
        let label = ByteSize::b(size as u64).to_string();
        println!(
            "{:<34} {:>8.0}MB/s {:>8.0}MB/s {:>7.2}x",
            format!("host-to-device {label}"),
            raw_up,
            htod,
            htod / raw_up
        );
        println!(
            "{:<34} {:>8.0}MB/s {:>8.0}MB/s {:>7.2}x",
            format!("device-to-host {label}"),
            raw_down,
            dtoh,
            dtoh / raw_down
        );
    }
    println!("  (goal at 64 MiB: >= 0.9x)");
    println!();
    match on_rt(
        &rt,
        launches(addr.clone(), if quick { 20_000 } else { 200_000 }, 1, 1),
    ) {
        Some(rate) => println!(
            "{:<34} {:>12.0}/s  (issue 11: no worse than 2.1 M/s)",
            "async empty-kernel launches", rate
        ),
        None => println!(
            "{:<34} {:>12}",
            "async empty-kernel launches", "n/a (no PTX executor)"
        ),
    }
    let n = if quick { 500 } else { 5_000 };
    if let Some(rate) = on_rt(&rt, launches(addr.clone(), n, 64, 256)) {
        println!(
            "{:<34} {:>12.0}/s  (multi-block: the worker pool)",
            "  <<<64,256>>>", rate
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn start_backend() -> String {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        executor: ExecutorKind::Cpu,
        session_memory_quota: ByteSize::gib(1),
        ..Config::default()
    };
    config.cpu.total_memory = ByteSize::gib(2);
    let exec = Arc::new(CpuExecutor::new(
        "bench",
        config.cpu.total_memory.as_u64(),
        0,
    ));
    let shared = Shared::new(config, vec![TOKEN.into()], exec);
    let server = Server::bind(shared).await.unwrap();
    let addr = server.local_addr().unwrap().to_string();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// Raw TCP: a blocking echo of 24-byte messages between two threads.
fn raw_round_trip(n: usize) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 24];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b).unwrap();
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [0u8; 24];
    for _ in 0..n / 10 {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    let t = Instant::now();
    for _ in 0..n {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    let d = t.elapsed() / n as u32;
    drop(c);
    srv.join().unwrap();
    d
}

/// Raw TCP: per iteration a 24-byte request, `size` bulk bytes one way, a 24-byte answer.
fn raw_transfer(size: usize, iters: usize, upload: bool) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; size];
        let mut hdr = [0u8; 24];
        while s.read_exact(&mut hdr).is_ok() {
            if upload {
                s.read_exact(&mut buf).unwrap();
                s.write_all(&hdr).unwrap();
            } else {
                s.write_all(&hdr).unwrap();
                s.write_all(&buf).unwrap();
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = vec![1u8; size];
    let mut hdr = [0u8; 24];
    let mut run = |n: usize| {
        for _ in 0..n {
            if upload {
                c.write_all(&hdr).unwrap();
                c.write_all(&buf).unwrap();
                c.read_exact(&mut hdr).unwrap();
            } else {
                c.write_all(&hdr).unwrap();
                c.read_exact(&mut hdr).unwrap();
                c.read_exact(&mut buf).unwrap();
            }
        }
    };
    run(iters.div_ceil(10));
    let t = Instant::now();
    run(iters);
    let rate = (size * iters) as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(c);
    srv.join().unwrap();
    rate
}

/// Runs a measurement as a task on the runtime's worker, as vdev's queue workers run.
fn on_rt<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async { tokio::spawn(f).await.unwrap() })
}

async fn null_round_trip(addr: String, n: usize) -> Duration {
    let c = netgpu_client::Client::connect(&addr, TOKEN).await.unwrap();
    for _ in 0..n / 10 {
        c.null().await.unwrap();
    }
    let t = Instant::now();
    for _ in 0..n {
        c.null().await.unwrap();
    }
    t.elapsed() / n as u32
}

async fn copies(addr: String, size: usize, iters: usize) -> (f64, f64) {
    let c = netgpu_client::Client::connect(&addr, TOKEN).await.unwrap();
    let ctx = c.ctx_create(0).await.unwrap();
    let p = c.mem_alloc(ctx, size as u64).await.unwrap();
    let data = vec![7u8; size];
    for _ in 0..iters.div_ceil(10) {
        c.memcpy_htod(ctx, p, &data, 0).await.unwrap();
    }
    let t = Instant::now();
    for _ in 0..iters {
        c.memcpy_htod(ctx, p, &data, 0).await.unwrap();
    }
    let up = (size * iters) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let mut buf = Vec::new();
    for _ in 0..iters.div_ceil(10) {
        buf = c
            .memcpy_dtoh_into(ctx, p, size as u64, 0, buf)
            .await
            .unwrap();
    }
    let t = Instant::now();
    for _ in 0..iters {
        buf = c
            .memcpy_dtoh_into(ctx, p, size as u64, 0, buf)
            .await
            .unwrap();
        assert_eq!(buf.len(), size);
    }
    let down = (size * iters) as f64 / t.elapsed().as_secs_f64() / 1e6;
    c.ctx_destroy(ctx).await.unwrap();
    (up, down)
}

const EMPTY_KERNEL: &str =
    ".version 7.0\n.target sm_50\n.address_size 64\n.visible .entry empty()\n{\n\tret;\n}\n";

/// Launches per second of `n` empty `<<<grid, block>>>` launches on the null stream.
async fn launches(addr: String, n: usize, grid: u32, block: u32) -> Option<f64> {
    let c = netgpu_client::Client::connect(&addr, TOKEN).await.unwrap();
    let ctx = c.ctx_create(0).await.unwrap();
    let m = c.module_load(ctx, EMPTY_KERNEL.as_bytes()).await.ok()?;
    let f = c.module_get_function(m, "empty").await.ok()?;
    let t = Instant::now();
    for _ in 0..n {
        c.launch_kernel(f.handle, [grid, 1, 1], [block, 1, 1], 0, 0, &[])
            .await
            .unwrap();
    }
    c.ctx_synchronize(ctx).await.ok()?;
    Some(n as f64 / t.elapsed().as_secs_f64())
}
