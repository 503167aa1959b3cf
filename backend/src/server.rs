//! The listener: accepts connections, starts one session thread each, and shuts down
//! gracefully on request (SIGTERM/SIGINT in the daemon).
//!
//! Shutdown stops accepting, marks the backend as shutting down and shuts the read side of
//! every session's socket: each session finishes the operation it is running, sends its
//! client a goodbye frame (`CUDA_ERROR_DEVICE_UNAVAILABLE`, "backend shutting down"), frees
//! its device memory and ends. Sessions still busy after the grace period are abandoned to
//! process exit.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::executor::Executor;
use crate::session;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("accept failed")]
    Accept(#[source] std::io::Error),
}

/// State shared by the listener and every session.
pub struct Shared {
    pub config: Config,
    pub executor: Arc<dyn Executor>,
    pub max_data: u32,
    tokens: Vec<String>,
    pub shutting_down: AtomicBool,
    next_session: AtomicU64,
    sessions: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    pub fn new(config: Config, tokens: Vec<String>, executor: Arc<dyn Executor>) -> Arc<Self> {
        let max_data = u32::try_from(config.max_frame_data.as_u64()).unwrap_or(u32::MAX);
        Arc::new(Shared {
            config,
            executor,
            max_data,
            tokens,
            shutting_down: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Constant-time comparison against every accepted token.
    pub fn token_ok(&self, token: &str) -> bool {
        let mut ok = false;
        for t in &self.tokens {
            ok |= constant_time_eq(t.as_bytes(), token.as_bytes());
        }
        ok | crate::pool::admits(token)
    }

    /// Sessions currently open.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A bound, not yet serving, backend.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    pub async fn bind(shared: Arc<Shared>) -> Result<Server, ServerError> {
        let addr = shared.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` completes, then shuts every session down gracefully.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let shared = self.shared.clone();
        let mut threads = Vec::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            // Out of fds and similar: log, back off, keep serving.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    threads.retain(|t: &std::thread::JoinHandle<()>| !t.is_finished());
                    if let Some(t) = self.start_session(stream, peer) {
                        threads.push(t);
                    }
                }
            }
        }
        drop(self.listener);
        shutdown_sessions(&shared, threads).await;
        Ok(())
    }

    fn start_session(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<std::thread::JoinHandle<()>> {
        let stream = match stream
            .into_std()
            .and_then(|s| s.set_nonblocking(false).map(|_| s))
        {
            Ok(s) => s,
            Err(e) => {
                warn!(%peer, error = %e, "cannot set up connection");
                return None;
            }
        };
        let shared = self.shared.clone();
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        {
            let Ok(mut sessions) = shared.sessions.lock() else {
                return None;
            };
            if sessions.len() >= shared.config.max_sessions as usize {
                warn!(%peer, max = shared.config.max_sessions, "session limit reached, refusing connection");
                drop(sessions);
                refuse_busy(stream);
                return None;
            }
            match stream.try_clone() {
                Ok(s) => {
                    sessions.insert(id, s);
                }
                Err(e) => {
                    warn!(%peer, error = %e, "cannot register connection");
                    return None;
                }
            }
        }
        let builder = std::thread::Builder::new().name(format!("session-{id}"));
        let spawned = builder.spawn(move || {
            session::run(stream, shared.clone(), id);
            if let Ok(mut s) = shared.sessions.lock() {
                s.remove(&id);
            }
        });
        match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(%peer, error = %e, "cannot start session thread");
                if let Ok(mut s) = self.shared.sessions.lock() {
                    s.remove(&id);
                }
                None
            }
        }
    }
}

fn refuse_busy(stream: TcpStream) {
    use netgpu_proto::cuda::CuResult;
    use netgpu_proto::wire::{frame::FrameHeader, ops};
    use std::io::Write;
    let body = ops::encode(&ops::Reply::Error(
        "backend is at its session limit; try later or raise max_sessions".into(),
    ))
    .unwrap_or_default();
    let mut s = &stream;
    let _ = s.write_all(&FrameHeader::goodbye(CuResult::OUT_OF_MEMORY, body.len() as u32).encode());
    let _ = s.write_all(&body);
}

async fn shutdown_sessions(shared: &Arc<Shared>, threads: Vec<std::thread::JoinHandle<()>>) {
    shared.shutting_down.store(true, Ordering::Release);
    let n = {
        let sessions = shared
            .sessions
            .lock()
            .map(|s| {
                s.values()
                    .filter_map(|s| s.try_clone().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for s in &sessions {
            let _ = s.shutdown(Shutdown::Read);
        }
        sessions.len()
    };
    if n > 0 {
        info!(sessions = n, "shutting down sessions");
    }
    let deadline = Instant::now() + Duration::from_millis(shared.config.shutdown_grace_ms);
    while threads.iter().any(|t| !t.is_finished()) {
        if Instant::now() >= deadline {
            warn!("sessions still busy after the shutdown grace period; exiting anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    info!("all sessions closed");
}
