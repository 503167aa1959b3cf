//! The device: state shared between the vfio-user message loop and the queue workers, the
//! backend probe that fills the `GPU_*` registers, the policy applied when a queue's worker
//! stops, and dispatch of region accesses by index.
//!
//! The message loop owns a [`Device`]; what workers also touch lives in [`Shared`] behind an
//! `Arc`. Register writes come back from [`crate::regs`] as actions, which are carried out
//! here; a worker reports why it stopped and the device decides what the queue then says
//! ([`Shared::worker_stopped`]). Nothing here waits on the network: the probe, resets and
//! queue workers run as tasks on the device's runtime and report through `STATUS`.

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netgpu_proto::abi::{self, codec};
use netgpu_proto::wire::ops::SessionLimits;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::config_space::{ConfigSpace, Effect, Ids, COMMAND_INTX_DISABLE};
use crate::doorbell::DoorbellPage;
use crate::interrupts::Interrupts;
use crate::memory::GuestMemory;
use crate::protocol::PCI_CONFIG_REGION;
use crate::queue::{QueueShared, StopReason};
use crate::regs::{self, Action, GpuInfo, RegisterSource};
use crate::session;
use crate::worker::{self, QueueEnv};

/// How long opening a backend session (connect, TLS, handshake) may take: a queue enabled
/// during a partition fails within this, as waiting commands do within the watchdog's
/// timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// After a failed probe the device reads FATAL and probes again after this, doubling up to
/// [`PROBE_RETRY_MAX`]: a backend that comes up (or is fixed) after the VM started is found
/// within seconds, without a reset.
const PROBE_RETRY_FIRST: Duration = Duration::from_millis(500);
const PROBE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Static configuration of one device.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    pub name: String,
    pub ids: Ids,
    pub backend: String,
    pub token: String,
    /// Memory quota reported in `MEMORY_QUOTA` and enforced across queues (0: none).
    pub memory_quota: u64,
    /// How long a queue worker keeps polling the fast doorbell page after its last command.
    pub poll: Duration,
    /// `--vgpu`: backend and token come from the vGPU's current placement in the pool.
    pub pool: Option<crate::pool::Follow>,
    /// How sessions reach the backend and notice when it is gone.
    pub transport: session::Transport,
}

impl DeviceConfig {
    /// Backend address and token for a session opened now: with `--vgpu`, the vGPU's
    /// current placement (so the probe after a reset and every new queue follow a move or
    /// failover), else the configured backend.
    /// With `--vgpu`, also the attempt to report back once the session opened or failed.
    pub fn endpoint(&self) -> (String, String, Option<crate::pool::Attempt>) {
        match &self.pool {
            Some(f) => {
                let (addr, token, attempt) = f.endpoint();
                (addr, token, Some(attempt))
            }
            None => (self.backend.clone(), self.token.clone(), None),
        }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            name: "netgpu0".into(),
            ids: Ids::default(),
            backend: "127.0.0.1:7070".into(),
            token: String::new(),
            memory_quota: 0,
            poll: Duration::from_micros(50),
            pool: None,
            transport: session::Transport {
                liveness: Some(session::Liveness::default()),
                ..session::Transport::default()
            },
        }
    }
}

/// What the device knows about its backend.
#[derive(Clone, Default)]
enum Session {
    /// Before the first probe, or after a reset started.
    #[default]
    Inactive,
    Connecting {
        generation: u64,
    },
    /// The backend answered: queues may be enabled (each opens a session of its own).
    Ready {
        info: GpuInfo,
    },
    /// The backend could not be reached or refused us. The probe of this generation is
    /// retried in the background (backoff up to [`PROBE_RETRY_MAX`]); READY follows when the
    /// backend answers, a reset starts over.
    Failed {
        generation: u64,
        reason: u32,
    },
}

/// State shared with the queue workers.
pub struct Shared {
    cfg: DeviceConfig,
    mem: Arc<GuestMemory>,
    irqs: Arc<Mutex<Interrupts>>,
    session: Mutex<Session>,
    /// Bumped on every reset; a probe of an older generation is discarded.
    generation: AtomicU64,
    driver_features: AtomicU64,
    event_vector: AtomicU32,
    queues: Vec<Arc<QueueShared>>,
    doorbells: Arc<DoorbellPage>,
    rt: Handle,
    /// Device memory held by all queues, against `cfg.memory_quota`.
    mem_used: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RegisterSource for Shared {
    fn status(&self) -> (u32, u32) {
        match &*lock(&self.session) {
            Session::Inactive => (abi::STATUS_RESETTING, 0),
            Session::Connecting { .. } => (abi::STATUS_CONNECTING, 0),
            Session::Ready { .. } => (abi::STATUS_READY, 0),
            Session::Failed { reason, .. } => (abi::STATUS_FATAL, *reason),
        }
    }

    fn driver_features(&self) -> u64 {
        self.driver_features.load(Ordering::Acquire)
    }

    fn event_vector(&self) -> u32 {
        self.event_vector.load(Ordering::Acquire)
    }

    fn take_intr_status(&self) -> u32 {
        std::mem::take(&mut lock(&self.irqs).intr_status)
    }

    fn gpu_info(&self) -> GpuInfo {
        match &*lock(&self.session) {
            Session::Ready { info, .. } => info.clone(),
            _ => GpuInfo::default(),
        }
    }

    fn memory_quota(&self) -> u64 {
        self.cfg.memory_quota
    }

    fn queue(&self, q: usize) -> Option<&QueueShared> {
        self.queues.get(q).map(|q| &**q)
    }
}

impl Shared {
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Guest memory (the `DMA_MAP`s).
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Interrupt delivery (`SET_IRQS`, BAR4).
    pub fn irqs(&self) -> MutexGuard<'_, Interrupts> {
        lock(&self.irqs)
    }

    /// The queue registers (tests and diagnostics).
    pub fn queue_state(&self, q: usize) -> Option<&QueueShared> {
        self.queues.get(q).map(|q| &**q)
    }

    /// Signals the device event vector (status changes).
    fn device_event(&self) {
        let v = self.event_vector.load(Ordering::Acquire);
        if v != abi::NO_VECTOR {
            lock(&self.irqs).signal(v, abi::INTR_DEVICE_EVENT);
        }
    }

    /// Carries out a register write (everything but a reset, which the [`Device`] does).
    fn apply(self: &Arc<Self>, action: Action) {
        match action {
            Action::Reset => {}
            Action::DriverFeatures(f) => self.driver_features.store(f, Ordering::Release),
            Action::EventVector(v) => self.event_vector.store(v, Ordering::Release),
            Action::EnableQueue(q) => self.enable_queue(q),
            Action::DisableQueue(q) => {
                if let Some(queue) = self.queues.get(q) {
                    queue.disable();
                }
            }
            Action::QueueReg { q, field, value } => {
                if let Some(queue) = self.queues.get(q) {
                    queue.write_reg(&self.cfg.name, field, value);
                }
            }
            Action::Doorbell { q, tail } => {
                if let Some(queue) = self.queues.get(q) {
                    queue.ring(tail);
                }
            }
        }
    }

    /// Validates queue `q`'s registers and starts its worker.
    fn enable_queue(self: &Arc<Self>, q: usize) {
        let Some(queue) = self.queues.get(q).cloned() else {
            return;
        };
        if queue.is_running() {
            return;
        }
        let ready = matches!(&*lock(&self.session), Session::Ready { .. });
        let regs = match queue.validate(&self.mem.snapshot()) {
            Ok(_) if !ready => Err(abi::QERR_BACKEND_LOST),
            other => other,
        };
        let regs = match regs {
            Ok(r) => r,
            Err(code) => {
                warn!(device = %self.cfg.name, queue = q, code, regs = ?queue.regs(), "refused to enable queue");
                queue.refuse(code);
                return;
            }
        };
        self.doorbells.clear(q as u32);
        let (ctl, epoch) = queue.start();
        debug!(device = %self.cfg.name, queue = q, size = regs.size, "queue enabled");
        let features = self.driver_features.load(Ordering::Acquire);
        let (addr, token, attempt) = self.cfg.endpoint();
        let env = QueueEnv {
            device: self.cfg.name.clone(),
            queue: Arc::clone(&queue),
            regs,
            ctl,
            mem: Arc::clone(&self.mem),
            irqs: Arc::clone(&self.irqs),
            doorbells: Arc::clone(&self.doorbells),
            fast_doorbells: features & abi::FEATURE_FAST_DOORBELLS != 0,
            out_of_order: features & abi::FEATURE_OUT_OF_ORDER != 0,
            session: session::Options {
                addr,
                token,
                client: format!("netgpu-vdev {} queue {q}", self.cfg.name),
                limits: self.limits(),
                timeout: CONNECT_TIMEOUT,
                transport: self.cfg.transport.clone(),
            },
            attempt,
            mem_used: Arc::clone(&self.mem_used),
            memory_limit: self.cfg.memory_quota,
            poll: self.cfg.poll,
        };
        let me = Arc::clone(self);
        self.rt.spawn(async move {
            // The worker runs as a task of its own, so even a bug that panics it ends here
            // as a reason, and the queue is not left reading ENABLED.
            let reason = match tokio::spawn(worker::run(env)).await {
                Ok(r) => r,
                Err(e) => StopReason::BackendLost(format!("queue worker failed: {e}")),
            };
            me.worker_stopped(&queue, epoch, reason);
        });
    }

    /// The device's policy when a queue's worker stops (it touches no guest memory by now):
    /// the failure belongs to that queue alone. A lost or misbehaving backend session, a
    /// ring fault or a bad doorbell puts the queue in ERROR with the matching code; the
    /// device stays READY and other queues go on, since each has a session of its own. A
    /// new enable of the queue opens a new session.
    pub fn worker_stopped(&self, queue: &QueueShared, epoch: u32, reason: StopReason) {
        // (A session that could not open was reported by the worker's `Attempt`.)
        if let (StopReason::BackendLost(_), Some(pool)) = (&reason, &self.cfg.pool) {
            pool.session_lost();
        }
        match &reason {
            StopReason::Stopped => {}
            other => {
                warn!(device = %self.cfg.name, queue = queue.index(), reason = ?other, "queue stopped on an error")
            }
        }
        queue.finish(epoch, &reason);
    }

    fn limits(&self) -> SessionLimits {
        SessionLimits {
            memory_quota: (self.cfg.memory_quota != 0).then_some(self.cfg.memory_quota),
            kernel_time_limit_ms: None,
        }
    }

    /// Starts probing the backend for `generation` (in the background): until it answers,
    /// STATUS reads CONNECTING, then FATAL with the reason of the last failure while the
    /// probe is retried; READY once it answers. A reset or a disconnect (a new generation)
    /// ends the retries.
    fn connect(self: &Arc<Self>, generation: u64) {
        *lock(&self.session) = Session::Connecting { generation };
        let me = Arc::clone(self);
        self.rt.spawn(async move {
            let mut delay = PROBE_RETRY_FIRST;
            let mut failures = 0u64;
            loop {
                let result = probe(&me.cfg, me.limits()).await;
                match me.probed(generation, result, &mut failures, delay) {
                    Probed::Stale | Probed::Ready => return,
                    Probed::Failed => {}
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PROBE_RETRY_MAX);
                if me.generation.load(Ordering::SeqCst) != generation {
                    return; // reset or disconnected while waiting: no probe for nobody
                }
            }
        });
    }

    /// Records the result of a probe of `generation` (under the session lock) and signals
    /// the device event when STATUS or FATAL_REASON changed.
    fn probed(
        &self,
        generation: u64,
        result: Result<GpuInfo, session::Error>,
        failures: &mut u64,
        retry_in: Duration,
    ) -> Probed {
        let mut s = lock(&self.session);
        let previous = match &*s {
            Session::Connecting { generation: g } if *g == generation => None,
            Session::Failed {
                generation: g,
                reason,
            } if *g == generation => Some(*reason),
            _ => return Probed::Stale, // reset again meanwhile
        };
        let (next, outcome) = match result {
            Ok(info) => {
                info!(device = %self.cfg.name, gpu = %info.name, failures = *failures, "backend ready");
                (Session::Ready { info }, Probed::Ready)
            }
            Err(e) => {
                *failures += 1;
                let reason = fatal_reason(&e);
                // The first failure, and every change of reason, is a warning; the same
                // failure again is logged at debug (retries can go on for hours).
                if previous == Some(reason) {
                    debug!(device = %self.cfg.name, failures = *failures, ?retry_in, "cannot open a backend session: {e}");
                    return Probed::Failed;
                }
                warn!(device = %self.cfg.name, ?retry_in, "cannot open a backend session: {e}; retrying until it answers (the device reads FATAL meanwhile)");
                (Session::Failed { generation, reason }, Probed::Failed)
            }
        };
        *s = next;
        drop(s);
        self.device_event();
        outcome
    }

    /// Resets the device: stops every queue (each closes its backend session, which frees
    /// every remote object), clears registers and probes the backend again.
    fn reset(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        debug!(device = %self.cfg.name, generation, "device reset");
        for (q, queue) in self.queues.iter().enumerate() {
            queue.reset();
            self.doorbells.clear(q as u32);
        }
        *lock(&self.session) = Session::Inactive;
        self.driver_features.store(0, Ordering::Release);
        self.event_vector.store(0, Ordering::Release);
        lock(&self.irqs).reset();
        self.connect(generation);
    }

    /// Tears everything down without reconnecting (VMM disconnect, shutdown).
    fn shutdown(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for queue in &self.queues {
            queue.reset();
        }
        *lock(&self.session) = Session::Inactive;
        self.mem.unmap_all();
        lock(&self.irqs).clear_fds();
    }
}

/// What became of a probe.
enum Probed {
    /// The device was reset (or disconnected) meanwhile: the result is discarded.
    Stale,
    Ready,
    /// STATUS reads FATAL; probe again later.
    Failed,
}

/// The `FATAL_REASON` for a failed probe.
fn fatal_reason(e: &session::Error) -> u32 {
    match e {
        session::Error::Refused(_) | session::Error::Tls { .. } => abi::FATAL_BACKEND_AUTH,
        session::Error::Protocol(_) => abi::FATAL_BACKEND_PROTOCOL,
        _ => abi::FATAL_BACKEND_UNREACHABLE,
    }
}

/// Asks the backend about its GPU in a session of its own, closed again at once (every
/// queue opens its own), over the same transport as the queues.
async fn probe(cfg: &DeviceConfig, limits: SessionLimits) -> Result<GpuInfo, session::Error> {
    let (addr, token, attempt) = cfg.endpoint();
    let opts = session::Options {
        addr,
        token,
        client: format!("netgpu-vdev {}", cfg.name),
        limits,
        timeout: CONNECT_TIMEOUT,
        transport: cfg.transport.clone(),
    };
    let d = session::query_device(&opts).await;
    match (&d, attempt) {
        (Ok(_), Some(a)) => a.opened(),
        (Err(_), Some(a)) => a.failed(),
        (_, None) => {}
    }
    let d = d?;
    Ok(GpuInfo {
        total_mem: d.total_mem,
        cc: (d.cc_major, d.cc_minor),
        sm_count: d.multiprocessors,
        driver_version: d.driver_version,
        executor: codec::executor_code(&d.executor),
        uuid: d.uuid,
        name: d.name,
    })
}

/// The device the message loop drives.
pub struct Device {
    shared: Arc<Shared>,
    config: ConfigSpace,
}

impl Device {
    pub fn new(cfg: DeviceConfig, rt: Handle) -> Result<Self, crate::doorbell::Error> {
        let ids = cfg.ids;
        let irqs = Interrupts::new(&cfg.name);
        let queues = (0..abi::MAX_QUEUES)
            .map(|q| Arc::new(QueueShared::new(q)))
            .collect();
        let shared = Arc::new(Shared {
            cfg,
            mem: Arc::new(GuestMemory::new()),
            irqs: Arc::new(Mutex::new(irqs)),
            session: Mutex::new(Session::Inactive),
            generation: AtomicU64::new(0),
            driver_features: AtomicU64::new(0),
            event_vector: AtomicU32::new(0),
            queues,
            doorbells: Arc::new(DoorbellPage::new()?),
            mem_used: Arc::new(AtomicU64::new(0)),
            rt,
        });
        Ok(Device {
            shared,
            config: ConfigSpace::new(ids),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts the first backend probe.
    pub fn start(&self) {
        let g = self.shared.generation.load(Ordering::SeqCst);
        self.shared.connect(g);
    }

    /// Full device reset (vfio-user `DEVICE_RESET`, FLR, or the `RESET` register).
    pub fn reset(&mut self) {
        self.config.reset();
        self.shared.irqs().set_intx_disabled(false);
        self.shared.reset();
    }

    /// The VMM went away: free everything; a new VMM starts from power-on state.
    pub fn disconnect(&mut self) {
        self.config.reset();
        self.shared.shutdown();
    }

    pub fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> bool {
        match region {
            PCI_CONFIG_REGION => self.config.read(offset, data),
            abi::REGS_BAR => regs::read(&*self.shared, offset, data),
            abi::DOORBELL_BAR => self.shared.doorbells.read(offset, data),
            abi::MSIX_BAR => self.shared.irqs().bar_read(offset, data),
            _ => return false,
        }
        true
    }

    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> bool {
        match region {
            PCI_CONFIG_REGION => {
                let effects = self.config.write(offset, data);
                let intx_off = self.config.command() & COMMAND_INTX_DISABLE != 0;
                self.shared.irqs().set_intx_disabled(intx_off);
                for e in effects {
                    match e {
                        Effect::Flr => {
                            debug!(device = %self.name(), "function level reset");
                            self.reset();
                        }
                        Effect::MsixControl { masked, .. } => {
                            self.shared.irqs().set_function_mask(masked);
                        }
                    }
                }
            }
            abi::REGS_BAR => {
                let features = self.shared.driver_features();
                for action in regs::write(self.name(), features, offset, data) {
                    match action {
                        Action::Reset => self.reset(),
                        other => self.shared.apply(other),
                    }
                }
            }
            abi::DOORBELL_BAR => {
                self.shared.doorbells.write(offset, data);
                // A trapped write to the page also wakes the queue.
                let q = offset / abi::fastdb::STRIDE;
                if let Some(queue) = self.shared.queues.get(q as usize) {
                    queue.wake();
                }
            }
            abi::MSIX_BAR => self.shared.irqs().bar_write(offset, data),
            _ => return false,
        }
        true
    }

    /// The doorbell page's fd for `GET_REGION_INFO` of BAR2.
    pub fn doorbell_fd(&self) -> std::os::fd::RawFd {
        self.shared.doorbells.fd()
    }

    pub fn set_intx_fd(&self, fd: Option<File>) {
        self.shared.irqs().set_intx(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::memfd;
    use netgpu_proto::abi::{queue as qreg, reg};

    /// A device on a runtime that never runs its tasks: no probe, no workers, no network.
    fn device() -> (Device, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let d = Device::new(DeviceConfig::default(), rt.handle().clone()).unwrap();
        (d, rt)
    }

    fn r32(d: &mut Device, off: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(d.region_read(abi::REGS_BAR, off, &mut b));
        u32::from_le_bytes(b)
    }

    fn w32(d: &mut Device, off: u64, v: u32) {
        assert!(d.region_write(abi::REGS_BAR, off, &v.to_le_bytes()));
    }

    fn qoff(q: u64, f: u64) -> u64 {
        reg::QUEUE_REGS_BASE + q * reg::QUEUE_REGS_STRIDE + f
    }

    fn ready(d: &Device) {
        *lock(&d.shared.session) = Session::Ready {
            info: GpuInfo {
                name: "gpu".into(),
                ..GpuInfo::default()
            },
        };
    }

    fn program(d: &mut Device, q: u64) {
        w32(d, qoff(q, qreg::SQ_BASE), 0x1000);
        w32(d, qoff(q, qreg::CQ_BASE), 0x2000);
        w32(d, qoff(q, qreg::SIZE), 8);
        w32(d, qoff(q, qreg::MSIX_VECTOR), 1);
    }

    #[test]
    fn a_queue_cannot_start_before_the_backend_answered() {
        let (mut d, _rt) = device();
        d.shared
            .memory()
            .map(0, 0x10_0000, 0, true, Some(memfd(0x10_0000)))
            .unwrap();
        program(&mut d, 2);
        w32(&mut d, qoff(2, qreg::ENABLE), 1);
        assert_eq!(r32(&mut d, qoff(2, qreg::STATUS)), abi::QSTATUS_ERROR);
        assert_eq!(r32(&mut d, qoff(2, qreg::ERROR)), abi::QERR_BACKEND_LOST);
        ready(&d);
        w32(&mut d, qoff(2, qreg::ENABLE), 0);
        w32(&mut d, qoff(2, qreg::ENABLE), 1);
        assert_eq!(r32(&mut d, qoff(2, qreg::STATUS)), abi::QSTATUS_ENABLED);
        assert_eq!(r32(&mut d, reg::GPU_NAME), u32::from_le_bytes(*b"gpu\0"));
    }

    #[test]
    fn a_failed_queue_stays_alone_and_the_device_stays_ready() {
        let (mut d, _rt) = device();
        d.shared
            .memory()
            .map(0, 0x10_0000, 0, true, Some(memfd(0x10_0000)))
            .unwrap();
        ready(&d);
        program(&mut d, 1);
        w32(&mut d, qoff(1, qreg::ENABLE), 1);
        // Queue 0 runs a worker (what enable_queue starts), which reports its session lost.
        let q0 = Arc::clone(&d.shared.queues[0]);
        let (_ctl, epoch) = q0.start();
        d.shared
            .worker_stopped(&q0, epoch, StopReason::BackendLost("gone".into()));
        assert_eq!(r32(&mut d, qoff(0, qreg::STATUS)), abi::QSTATUS_ERROR);
        assert_eq!(r32(&mut d, qoff(0, qreg::ERROR)), abi::QERR_BACKEND_LOST);
        assert_eq!(r32(&mut d, reg::STATUS), abi::STATUS_READY);
        assert_eq!(r32(&mut d, qoff(1, qreg::STATUS)), abi::QSTATUS_ENABLED);
    }

    #[test]
    fn failed_probes_read_fatal_until_one_succeeds_and_stale_ones_are_discarded() {
        let (mut d, _rt) = device();
        *lock(&d.shared.session) = Session::Connecting { generation: 4 };
        let mut n = 0;
        let down = || Err(session::Error::HandshakeTimeout("gpu1:7070".into()));
        let t = Duration::from_millis(1);
        assert!(matches!(
            d.shared.probed(4, down(), &mut n, t),
            Probed::Failed
        ));
        assert_eq!(r32(&mut d, reg::STATUS), abi::STATUS_FATAL);
        assert_eq!(
            r32(&mut d, reg::FATAL_REASON),
            abi::FATAL_BACKEND_UNREACHABLE
        );
        let refused = Err(session::Error::Tls {
            addr: "gpu1:7070".into(),
            explanation: "unknown CA".into(),
        });
        assert!(matches!(
            d.shared.probed(4, refused, &mut n, t),
            Probed::Failed
        ));
        assert_eq!(r32(&mut d, reg::FATAL_REASON), abi::FATAL_BACKEND_AUTH);
        assert_eq!(n, 2);
        // A probe of an older generation (a reset happened) changes nothing.
        let info = || {
            Ok(GpuInfo {
                name: "gpu".into(),
                ..GpuInfo::default()
            })
        };
        assert!(matches!(
            d.shared.probed(3, info(), &mut n, t),
            Probed::Stale
        ));
        assert_eq!(r32(&mut d, reg::STATUS), abi::STATUS_FATAL);
        assert!(matches!(
            d.shared.probed(4, info(), &mut n, t),
            Probed::Ready
        ));
        assert_eq!(r32(&mut d, reg::STATUS), abi::STATUS_READY);
        assert_eq!(r32(&mut d, reg::GPU_NAME), u32::from_le_bytes(*b"gpu\0"));
        // Once READY, a late result of the same generation is stale too.
        assert!(matches!(
            d.shared.probed(4, down(), &mut n, t),
            Probed::Stale
        ));
        assert_eq!(r32(&mut d, reg::STATUS), abi::STATUS_READY);
    }

    #[test]
    fn reset_returns_every_register_to_power_on_and_starts_a_probe() {
        let (mut d, _rt) = device();
        ready(&d);
        assert!(d.region_write(
            abi::REGS_BAR,
            reg::DRIVER_FEATURES,
            &abi::FEATURES_ALL.to_le_bytes()
        ));
        w32(&mut d, reg::EVENT_VECTOR, 9);
        program(&mut d, 5);
        assert_eq!(r32(&mut d, qoff(5, qreg::SIZE)), 8);
        w32(&mut d, reg::RESET, abi::RESET_VALUE);
        assert_eq!(r32(&mut d, reg::DRIVER_FEATURES), 0);
        assert_eq!(r32(&mut d, reg::EVENT_VECTOR), 0);
        assert_eq!(r32(&mut d, qoff(5, qreg::SIZE)), 0);
        assert_eq!(r32(&mut d, reg::STATUS), abi::STATUS_CONNECTING);
    }

    /// The vGPU's `connected` gauge with `--vgpu`.
    fn connected_gauge(vgpu: &str) -> i64 {
        netgpu_metrics::DataPath::global()
            .vgpu_connected
            .get_or_create(&netgpu_metrics::labels::Vgpu {
                vgpu: vgpu.into(),
                Hostname: String::new(),
            })
            .get()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vgpu_reads_connected_only_while_its_last_session_opened() {
        use netgpu_pool::api::Control;
        use netgpu_pool::model::{Gpu, Host, Pool, Vgpu};
        // A pool in a file store with one host whose backend is not running yet.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let ctl = Control::open(&url).await.unwrap();
        ctl.create_pool(Pool {
            name: "p".into(),
            ..Pool::default()
        })
        .await
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let host = Host {
            name: "gpu-a".into(),
            address: listen.to_string(),
            executor: "cpu".into(),
            gpus: vec![Gpu {
                index: 0,
                model: "netgpu CPU executor".into(),
                uuid: "GPU-a-0".into(),
                memory: 1 << 30,
            }],
            ..Host::default()
        };
        let lease = ctl
            .store()
            .grant_lease(Duration::from_secs(60))
            .await
            .unwrap();
        ctl.register_host(&host, lease).await.unwrap();
        let vgpu = "probe-metric";
        let v = ctl
            .create_vgpu(Vgpu {
                name: vgpu.into(),
                pool: "p".into(),
                memory: 64 << 20,
                tenant: "t1".into(),
                ..Vgpu::default()
            })
            .await
            .unwrap();
        let cfg = DeviceConfig {
            name: vgpu.into(),
            pool: Some(crate::pool::Follow::start(&url, vgpu).await.unwrap()),
            ..DeviceConfig::default()
        };
        let limits = SessionLimits::default();

        // Nothing listens: the probe fails and the vGPU is not connected (it read 1 here,
        // set when the endpoint was handed out).
        assert!(probe(&cfg, limits).await.is_err());
        assert_eq!(connected_gauge(vgpu), 0);

        // The backend comes up: the next probe opens a session.
        let mut backend = netgpu_backend::testing::InProcessBackend::start(
            "test cpu",
            netgpu_backend::testing::cpu_config(
                listen,
                bytesize::ByteSize::mib(64),
                bytesize::ByteSize::mib(128),
            ),
            vec![v.token.clone()],
        )
        .await
        .unwrap();
        probe(&cfg, limits).await.unwrap();
        assert_eq!(connected_gauge(vgpu), 1);

        // It goes away again: a failed probe reads 0 once more.
        backend.stop().await;
        assert!(probe(&cfg, limits).await.is_err());
        assert_eq!(connected_gauge(vgpu), 0);
    }
}
