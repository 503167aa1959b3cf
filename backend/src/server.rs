//! The listener: accepts connections, starts one session thread each, and shuts down
//! gracefully on request (SIGTERM/SIGINT in the daemon).
//!
//! Shutdown stops accepting, marks the backend as shutting down and shuts the read side of
//! every session's connection: each session cancels its work, sends its client a goodbye
//! frame (`CUDA_ERROR_DEVICE_UNAVAILABLE`, "backend shutting down"), frees its device memory
//! and ends. Sessions still busy after the grace period are abandoned to process exit.
//!
//! A session holds one of `max_sessions` slots from accept until its thread is done, however
//! it ends: the slot is a guard released on drop (also when a bug panics the session, which
//! is caught and logged), and the session's connection is closed then, so its client never
//! waits on a dead session.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::executor::Executor;
use crate::session;
use crate::tenant::{Defaults, TenantConfigError, Tenants};
use crate::tls_transport::TlsTransport;
use crate::transport::{Control, Transport};
use netgpu_tls::{policy, Security, ServerTls};
use rustls::pki_types::CertificateDer;

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
    /// The tenants served, and what each holds now.
    pub tenants: Tenants,
    /// TLS, or plain on loopback.
    pub security: Security<ServerTls>,
    pub shutting_down: AtomicBool,
    next_session: AtomicU64,
    sessions: Mutex<HashMap<u64, Open>>,
}

/// A client's certificate chain, its own certificate first.
type Chain = Arc<[CertificateDer<'static>]>;

/// An open session as the listener sees it.
struct Open {
    control: Arc<dyn Control>,
    /// The client's certificate chain (TLS with a client certificate), once the handshake
    /// is done: checked again whenever the CRLs change ([`Shared::end_revoked`]).
    chain: Option<Chain>,
}

/// How often the listener looks for changed CRLs to end the sessions of revoked clients.
const REVOCATION_CHECK: Duration = Duration::from_secs(1);

impl Shared {
    /// A backend in plain mode on loopback (tests, development): `tokens` belong to the
    /// tenant `default`, `[[tenants]]` come from the config. A tenant list that cannot be
    /// built (a duplicate, an unreadable token file) is logged and serves nobody; the daemon
    /// uses [`Shared::build`], which reports it.
    pub fn new(config: Config, tokens: Vec<String>, executor: Arc<dyn Executor>) -> Arc<Self> {
        match Self::build(
            config.clone(),
            tokens,
            executor.clone(),
            Security::PlainLoopback,
        ) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "invalid tenant configuration: no tenant is served");
                Self::assemble(
                    config,
                    Tenants::default(),
                    executor,
                    Security::PlainLoopback,
                )
            }
        }
    }

    /// The backend as configured: its tenants (with the top-level `tokens` as tenant
    /// `default`) and how connections are secured.
    pub fn build(
        config: Config,
        tokens: Vec<String>,
        executor: Arc<dyn Executor>,
        security: Security<ServerTls>,
    ) -> Result<Arc<Self>, TenantConfigError> {
        let tenants = Tenants::build(
            &config.tenants,
            tokens,
            Defaults {
                max_sessions: config.max_sessions,
            },
        )?;
        Ok(Self::assemble(config, tenants, executor, security))
    }

    fn assemble(
        config: Config,
        tenants: Tenants,
        executor: Arc<dyn Executor>,
        security: Security<ServerTls>,
    ) -> Arc<Self> {
        let max_data = u32::try_from(config.max_frame_data.as_u64()).unwrap_or(u32::MAX);
        Arc::new(Shared {
            config,
            executor,
            max_data,
            tenants,
            security,
            shutting_down: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Sessions currently open.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Takes a session slot for a new connection, or `None` at `max_sessions`.
    pub fn claim_slot(self: &Arc<Self>, control: Arc<dyn Control>) -> Option<Slot> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= self.config.max_sessions as usize {
            return None;
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        sessions.insert(
            id,
            Open {
                control: control.clone(),
                chain: None,
            },
        );
        Some(Slot {
            shared: self.clone(),
            id,
            control,
        })
    }

    /// Records the certificate chain session `id`'s client authenticated with.
    pub fn record_chain(&self, id: u64, chain: Chain) {
        if let Ok(mut s) = self.sessions.lock() {
            if let Some(o) = s.get_mut(&id) {
                o.chain = Some(chain);
            }
        }
    }

    /// Ends every session whose client certificate the CRLs configured now revoke (its
    /// connection is shut down: the session ends as if the client had gone, its work
    /// cancelled and its memory freed); returns how many. New connections of such a client
    /// are refused at the handshake already.
    pub fn end_revoked(&self) -> usize {
        let Security::Tls(tls) = &self.security else {
            return 0;
        };
        let open: Vec<(u64, Arc<dyn Control>, Chain)> = self
            .sessions
            .lock()
            .map(|s| {
                s.iter()
                    .filter_map(|(id, o)| Some((*id, o.control.clone(), o.chain.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut ended = 0;
        for (id, control, chain) in open {
            if tls.revoked(&chain) {
                let who = chain
                    .first()
                    .and_then(|c| netgpu_tls::identity::CertInfo::parse(c).ok())
                    .map(|i| format!("{} (serial {})", i.subject, i.serial))
                    .unwrap_or_default();
                warn!(session = id, client = %who, "client certificate revoked: ending its session");
                control.shutdown(Shutdown::Both);
                ended += 1;
            }
        }
        ended
    }

    /// Runs one session on the calling thread, holding `slot` until it is done.
    pub fn serve<T: Transport>(self: &Arc<Self>, transport: T, slot: Slot) {
        let id = slot.id;
        let shared = self.clone();
        let r = std::panic::catch_unwind(AssertUnwindSafe(move || {
            session::run(transport, shared, id)
        }));
        if r.is_err() {
            error!(
                session = id,
                "session panicked (a backend bug); its slot and connection are released"
            );
        }
        drop(slot);
    }
}

/// A session's claim on one of `max_sessions`; dropping it frees the slot and closes the
/// session's connection.
pub struct Slot {
    shared: Arc<Shared>,
    id: u64,
    control: Arc<dyn Control>,
}

impl Slot {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Free the slot before the client can see the connection close (it may reconnect at
        // once).
        if let Ok(mut s) = self.shared.sessions.lock() {
            s.remove(&self.id);
        }
        self.control.shutdown(Shutdown::Both);
    }
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
        let mut revocation = tokio::time::interval(REVOCATION_CHECK);
        revocation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut generation = match &shared.security {
            Security::Tls(tls) => tls.generation(),
            Security::PlainLoopback => 0,
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = revocation.tick() => {
                    // A changed CRL (or certificate) file is loaded here at the latest: the
                    // sessions of clients it revokes end.
                    if let Security::Tls(tls) = &shared.security {
                        let _ = tls.server_config();
                        let g = tls.generation();
                        if g != generation {
                            generation = g;
                            let s = shared.clone();
                            let _ = tokio::task::spawn_blocking(move || s.end_revoked()).await;
                        }
                    }
                }
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
        if let Err(e) = self.shared.config.net.apply(&stream) {
            warn!(%peer, error = %e, "cannot set socket options");
        }
        if matches!(self.shared.security, Security::PlainLoopback)
            && !policy::plain_peer_allowed(peer)
        {
            warn!(%peer, "plain connection from a non-loopback peer refused (insecure_plain_loopback serves loopback only; configure [tls])");
            return None;
        }
        let control = match stream.control() {
            Ok(c) => c,
            Err(e) => {
                warn!(%peer, error = %e, "cannot register connection");
                return None;
            }
        };
        let Some(slot) = self.shared.claim_slot(control) else {
            warn!(%peer, max = self.shared.config.max_sessions, "session limit reached, refusing connection");
            refuse_busy(stream);
            return None;
        };
        let shared = self.shared.clone();
        let builder = std::thread::Builder::new().name(format!("session-{}", slot.id()));
        let handshake = Duration::from_millis(shared.config.handshake_timeout_ms);
        let spawned = match shared.security.clone() {
            Security::PlainLoopback => builder.spawn(move || shared.serve(stream, slot)),
            Security::Tls(tls) => builder.spawn(move || {
                let t = TlsTransport {
                    tcp: stream,
                    tls,
                    timeout: handshake,
                };
                shared.serve(t, slot)
            }),
        };
        match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                // The closure (and with it the slot) was dropped: the slot is free again.
                warn!(%peer, error = %e, "cannot start session thread");
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
            .map(|s| s.values().map(|o| o.control.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        for s in &sessions {
            s.shutdown(Shutdown::Read);
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
