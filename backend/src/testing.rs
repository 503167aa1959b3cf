//! A backend served in-process with the CPU executor, for the tests and benchmarks of this
//! crate and the crates around it (netgpu-client, vdev, the fault tests): what `main` does to
//! start a server, without the process, and the waits those tests share. Built for this
//! crate's own tests and with the `testing` feature.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use netgpu_tls::{Security, ServerTls};
use tokio::sync::oneshot;

use crate::config::{Config, ExecutorKind};
use crate::executor::cpu::CpuExecutor;
use crate::server::{Server, ServerError, Shared};

/// A CPU-executor configuration on `listen`: `session_quota` per session, `total` device
/// memory on two worker threads, a 5 s shutdown grace.
pub fn cpu_config(listen: SocketAddr, session_quota: ByteSize, total: ByteSize) -> Config {
    let mut config = Config {
        listen,
        executor: ExecutorKind::Cpu,
        session_memory_quota: session_quota,
        shutdown_grace_ms: 5_000,
        ..Config::default()
    };
    config.cpu.total_memory = total;
    config.cpu.threads = 2;
    config
}

/// A running in-process backend.
pub struct InProcessBackend {
    pub addr: SocketAddr,
    pub executor: Arc<CpuExecutor>,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl InProcessBackend {
    /// Serves `config` (its CPU executor named `name`, sized by `config.cpu`: 0 threads is one
    /// per core) with `tokens` on the current tokio runtime, until stopped or dropped.
    pub async fn start(
        name: &str,
        config: Config,
        tokens: Vec<String>,
    ) -> Result<InProcessBackend, ServerError> {
        let executor = Arc::new(CpuExecutor::new(
            name,
            config.cpu.total_memory.as_u64(),
            config.cpu.threads as usize,
        ));
        let shared = Shared::new(config, tokens, executor.clone());
        Self::serve(shared, executor).await
    }

    /// [`InProcessBackend::start`] behind the backend's own mutual-TLS listener: the
    /// tenants are `config.tenants` (their tokens and quotas), clients must present a
    /// certificate from `tls`'s client CA.
    ///
    /// # Panics
    /// On a tenant configuration the backend refuses (a test's own mistake).
    pub async fn start_tls(
        name: &str,
        config: Config,
        tls: ServerTls,
    ) -> Result<InProcessBackend, ServerError> {
        let executor = Arc::new(CpuExecutor::new(
            name,
            config.cpu.total_memory.as_u64(),
            config.cpu.threads as usize,
        ));
        let shared = Shared::build(
            config,
            Vec::new(),
            executor.clone(),
            Security::Tls(Arc::new(tls)),
        )
        .expect("the test's tenant configuration");
        Self::serve(shared, executor).await
    }

    async fn serve(
        shared: Arc<Shared>,
        executor: Arc<CpuExecutor>,
    ) -> Result<InProcessBackend, ServerError> {
        let server = Server::bind(shared.clone()).await?;
        let addr = server.local_addr().map_err(|source| ServerError::Bind {
            addr: shared.config.listen,
            source,
        })?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Ok(InProcessBackend {
            addr,
            executor,
            shared,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Stops it as SIGTERM would (every session shut down gracefully) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Waits (up to `within`) until no session is open and no device memory is held;
    /// returns what is left: (sessions, bytes).
    pub async fn wait_idle(&self, within: Duration) -> (usize, u64) {
        let deadline = Instant::now() + within;
        loop {
            let left = (self.shared.session_count(), self.executor.memory_used());
            if left == (0, 0) || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (up to 10 s) until the executor holds no device memory; returns what it holds.
    pub async fn wait_memory_freed(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.executor.memory_used() != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.executor.memory_used()
    }

    /// Waits (up to `within`) until at most `n` sessions are open; returns the count.
    pub async fn wait_sessions(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.shared.session_count() > n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.session_count()
    }

    /// Waits (up to `within`) until no pool thread of the executor runs work; returns how
    /// many still do.
    pub async fn wait_threads_idle(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.executor.busy_threads() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.executor.busy_threads()
    }
}

impl Drop for InProcessBackend {
    fn drop(&mut self) {
        // Dropping the sender ends the server's wait; the task finishes on its runtime.
        self.stop.take();
    }
}
