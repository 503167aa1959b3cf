//! A backend with the CPU executor on 127.0.0.1, started in-process for tests.
#![allow(dead_code)]

pub mod kernels;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use netgpu_backend::config::{Config, ExecutorKind};
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::server::{Server, Shared};
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-token-0123456789";

pub struct TestBackend {
    pub addr: SocketAddr,
    pub executor: Arc<CpuExecutor>,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    pub async fn start() -> TestBackend {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBackend {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            executor: ExecutorKind::Cpu,
            session_memory_quota: ByteSize::mib(64),
            shutdown_grace_ms: 5_000,
            ..Config::default()
        };
        config.cpu.total_memory = ByteSize::mib(256);
        config.cpu.threads = 2;
        tweak(&mut config);
        let executor = Arc::new(CpuExecutor::new(
            "test cpu",
            config.cpu.total_memory.as_u64(),
            2,
        ));
        let shared = Shared::new(config, vec![TOKEN.to_string()], executor.clone());
        let server = Server::bind(shared.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestBackend {
            addr,
            executor,
            shared,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub async fn client(&self) -> netgpu_client::Client {
        netgpu_client::Client::connect(&self.addr(), TOKEN)
            .await
            .unwrap()
    }

    /// Stops the backend as SIGTERM would, waiting for it to finish.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Waits until the executor holds no device memory (sessions clean up on their threads).
    pub async fn wait_memory_freed(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.executor.memory_used() != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.executor.memory_used()
    }
}

impl TestBackend {
    /// Waits until at most `n` sessions are open; returns the count.
    pub async fn wait_sessions(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.shared.session_count() > n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.session_count()
    }

    /// Waits until no pool thread of the executor runs work; returns how many still do.
    pub async fn wait_idle(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.executor.busy_threads() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.executor.busy_threads()
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
