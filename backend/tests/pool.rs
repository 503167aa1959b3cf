//! Three real netgpu-backend processes in a pool on a real etcd on loopback (and on the file
//! store): they register with their GPUs, ten vGPUs are placed and admitted with their own
//! tokens and quotas, the backend enforces each quota, and when one backend is killed its
//! vGPUs are re-placed on the others and admitted there.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netgpu_client::Client;
use netgpu_pool::api::Control;
use netgpu_pool::controller::{self, Controller};
use netgpu_pool::model::{Pool, Vgpu};
use netgpu_pool::testkit::{Etcd, TempDir};

const GIB: u64 = 1 << 30;

struct Backend {
    child: Child,
    addr: String,
    metrics: String,
    _dir: TempDir,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_backend(store: &str, name: &str) -> Backend {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, mport) = (free(), free());
    let dir = TempDir::new("pool-backend").unwrap();
    let cfg = dir.0.join("backend.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ninsecure_plain_loopback = true\nexecutor = \"cpu\"\nsession_memory_quota = \"8GiB\"\n\
             [cpu]\ntotal_memory = \"6GiB\"\nthreads = 1\n\
             [pool]\nstore = \"{store}\"\nname = \"{name}\"\nzone = \"z1\"\nlease_ttl_s = 2\n\
             [metrics]\nlisten = \"127.0.0.1:{mport}\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_netgpu-backend"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("log")).unwrap())
        .spawn()
        .unwrap();
    Backend {
        child,
        addr: format!("127.0.0.1:{port}"),
        metrics: format!("127.0.0.1:{mport}"),
        _dir: dir,
    }
}

async fn http_get(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            return out;
        }
        assert!(Instant::now() < deadline, "no metrics endpoint on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects with the vGPU's token to the host it is placed on, retrying while that backend
/// has not yet learned of the placement.
async fn session_for(c: &Control, v: &str) -> (Client, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rec = c.vgpu(v).await.unwrap();
        let p = rec.placement.unwrap();
        let addr = c.host(&p.host).await.unwrap().host.address;
        match Client::connect(&addr, &rec.token).await {
            Ok(cl) => return (cl, p.host),
            Err(e) => assert!(Instant::now() < deadline, "{v} on {}: {e}", p.host),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn three_backends(store: String) {
    let mut backends: Vec<Backend> = (0..3)
        .map(|i| start_backend(&store, &format!("gpu-{i}")))
        .collect();
    let c = Control::open(&store).await.unwrap();
    wait_for(20, "three hosts up", || async {
        c.hosts()
            .await
            .map(|h| h.iter().filter(|h| h.up).count() == 3)
            .unwrap_or(false)
    })
    .await;
    for h in c.hosts().await.unwrap() {
        assert_eq!(h.host.executor, "cpu");
        assert_eq!(h.host.gpus[0].memory, 6 * GIB);
        assert_eq!(
            h.host.address,
            backends[h.host.name[4..].parse::<usize>().unwrap()].addr
        );
    }
    // Each backend serves Prometheus metrics with DCGM-style GPU labels.
    let body = http_get(&backends[0].metrics).await;
    assert!(
        body.contains(r#"netgpu_gpu_memory_total_bytes{gpu="0",UUID="GPU-"#)
            && body.contains(r#"Hostname="gpu-0"} 6442450944"#),
        "{body}"
    );
    assert!(body.contains("netgpu_gpu_sessions{"), "{body}");
    c.create_pool(Pool {
        name: "p".into(),
        failover_grace_s: 1,
        ..Pool::default()
    })
    .await
    .unwrap();
    for i in 0..10 {
        c.create_vgpu(Vgpu {
            name: format!("vm{i}"),
            pool: "p".into(),
            memory: GIB,
            tenant: "t".into(),
            ..Vgpu::default()
        })
        .await
        .unwrap();
    }
    // 10 x 1 GiB on three 6 GiB GPUs: spread 4/3/3.
    let mut counts: Vec<usize> = c
        .hosts()
        .await
        .unwrap()
        .iter()
        .map(|h| h.host.allocations.len())
        .collect();
    counts.sort();
    assert_eq!(counts, [3, 3, 4]);
    // Each vGPU is admitted on its host with its own quota, which the backend enforces.
    let (cl, host) = session_for(&c, "vm0").await;
    let (_free, total) = cl.mem_get_info().await.unwrap();
    assert_eq!(total, GIB, "the session's quota is the vGPU's");
    let ctx = cl.ctx_create(0).await.unwrap();
    cl.mem_alloc(ctx, GIB / 2).await.unwrap();
    assert!(cl.mem_alloc(ctx, GIB).await.is_err(), "past the quota");
    // Its series carry the grant's vGPU and tenant (not a name the client chose).
    let body = http_get(&backends[host[4..].parse::<usize>().unwrap()].metrics).await;
    assert!(
        body.contains(r#"netgpu_session_memory_quota_bytes{gpu="0",UUID="GPU-"#)
            && body.contains(&format!(
                r#"Hostname="{host}",vgpu="vm0",tenant="t",session="#
            )),
        "{body}"
    );
    assert!(
        body.contains(r#"netgpu_operation_duration_seconds_count{vgpu="vm0",op="MemAlloc"} 2"#)
            && body.contains(
                r#"netgpu_operation_errors_total{vgpu="vm0",op="MemAlloc",error="CUDA_ERROR_OUT_OF_MEMORY"} 1"#
            ),
        "{body}"
    );
    drop(cl);
    // Its token means nothing on another host, nor does a made-up one.
    let token = c.vgpu("vm0").await.unwrap().token;
    for h in c.hosts().await.unwrap() {
        if h.host.name != host {
            assert!(Client::connect(&h.host.address, &token).await.is_err());
        }
        assert!(Client::connect(&h.host.address, "guess").await.is_err());
    }
    // Failover: a controller runs; the host with vm0 dies (SIGKILL: no goodbye, no revoke).
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ctl = Controller::new(
        c.clone(),
        controller::Config {
            interval: Duration::from_millis(200),
            leader_ttl: Duration::from_secs(5),
            id: "test".into(),
            keep_events: 1000,
        },
    );
    let task = tokio::spawn(ctl.run(async move {
        let _ = stop_rx.await;
    }));
    let victims: Vec<String> = c
        .host(&host)
        .await
        .unwrap()
        .host
        .allocations
        .keys()
        .cloned()
        .collect();
    let idx: usize = host[4..].parse().unwrap();
    let _ = backends[idx].child.kill();
    let _ = backends[idx].child.wait();
    let t0 = Instant::now();
    wait_for(30, "the dead host's vGPUs re-placed", || async {
        c.vgpus()
            .await
            .unwrap()
            .iter()
            .all(|v| v.placement.as_ref().unwrap().host != host)
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "not before lease TTL + grace: {took:?}"
    );
    for v in &victims {
        let rec = c.vgpu(v).await.unwrap();
        assert_eq!(rec.placement.as_ref().unwrap().generation, 2);
        // Admitted on the new host with the same token.
        let (cl, on) = session_for(&c, v).await;
        assert_ne!(on, host);
        assert_eq!(cl.mem_get_info().await.unwrap().1, GIB);
    }
    for h in c.hosts().await.unwrap() {
        assert!(
            h.host.allocated_total() <= 6 * GIB,
            "{} overcommitted",
            h.host.name
        );
        if h.host.name == host {
            assert!(h.host.allocations.is_empty());
        }
    }
    let _ = stop_tx.send(());
    task.await.unwrap();
    drop(backends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_backends_on_etcd() {
    let etcd = Etcd::start().unwrap();
    three_backends(etcd.url.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_backends_on_the_file_store() {
    let dir = TempDir::new("pool-file").unwrap();
    three_backends(dir.url()).await;
}
