//! Device state: the pieces shared between the vfio-user message loop and the queue
//! workers, the backend session lifecycle, and dispatch of region accesses by index.
//!
//! The message loop owns a [`Device`]; everything a queue worker also touches lives in
//! [`Shared`] behind an `Arc`. The backend session is a [`Session`] enum. Nothing here waits
//! on the network: connecting, resetting and tearing down run as tasks on the device's
//! runtime, and registers report their progress (`STATUS`).

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netgpu_client::{Client, ClientError};
use netgpu_proto::abi;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::config_space::{ConfigSpace, Effect, Ids};
use crate::doorbell::DoorbellPage;
use crate::interrupts::Interrupts;
use crate::memory::GuestMemory;
use crate::queue::QueueShared;

/// Static configuration of one device.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    pub name: String,
    pub ids: Ids,
    pub backend: String,
    pub token: String,
    /// Memory quota reported in `MEMORY_QUOTA` (0: none).
    pub memory_quota: u64,
    /// How long a queue worker keeps polling the fast doorbell page after its last command.
    pub poll: Duration,
    /// `--vgpu`: backend and token come from the vGPU's current placement in the pool.
    pub pool: Option<crate::pool::Follow>,
}

impl DeviceConfig {
    /// Backend address and token for a session opened now.
    pub fn endpoint(&self) -> (String, String) {
        match &self.pool {
            Some(f) => f.endpoint(),
            None => (self.backend.clone(), self.token.clone()),
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
        }
    }
}

/// What the remote GPU reported at connect time (BAR0 `GPU_*` registers).
#[derive(Clone, Debug, Default)]
pub struct GpuInfo {
    pub total_mem: u64,
    pub cc: (u32, u32),
    pub sm_count: u32,
    pub driver_version: u32,
    pub executor: u32,
    pub uuid: [u8; 16],
    pub name: String,
}

/// The backend session lifecycle.
#[derive(Clone, Default)]
pub enum Session {
    /// No session (before the first connect, or after a reset tore it down).
    #[default]
    Inactive,
    Connecting {
        generation: u64,
    },
    Ready {
        generation: u64,
        client: Client,
        info: GpuInfo,
    },
    Failed {
        generation: u64,
        reason: u32,
    },
}

/// State shared with the queue workers.
pub struct Shared {
    pub cfg: DeviceConfig,
    pub mem: GuestMemory,
    pub irqs: Mutex<Interrupts>,
    pub session: Mutex<Session>,
    /// Bumped on every reset; work of an older generation is discarded.
    pub generation: AtomicU64,
    pub driver_features: AtomicU64,
    pub event_vector: AtomicU32,
    pub queues: Vec<Arc<QueueShared>>,
    pub doorbells: DoorbellPage,
    pub rt: Handle,
    /// Device memory held by all queues, against `cfg.memory_quota`.
    pub mem_used: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn irqs(&self) -> MutexGuard<'_, Interrupts> {
        lock(&self.irqs)
    }

    pub fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    /// The client of the current session, if it is ready.
    pub fn client(&self) -> Option<Client> {
        match &*self.session() {
            Session::Ready { client, .. } => Some(client.clone()),
            _ => None,
        }
    }

    pub fn status(&self) -> (u32, u32) {
        match &*self.session() {
            Session::Inactive => (abi::STATUS_RESETTING, 0),
            Session::Connecting { .. } => (abi::STATUS_CONNECTING, 0),
            Session::Ready { .. } => (abi::STATUS_READY, 0),
            Session::Failed { reason, .. } => (abi::STATUS_FATAL, *reason),
        }
    }

    pub fn gpu_info(&self) -> GpuInfo {
        match &*self.session() {
            Session::Ready { info, .. } => info.clone(),
            _ => GpuInfo::default(),
        }
    }

    /// Signals the device event vector (status changes).
    pub fn device_event(&self) {
        let v = self.event_vector.load(Ordering::Relaxed);
        if v != abi::NO_VECTOR {
            self.irqs().signal(v, 1 << 31);
        }
    }

    /// Marks the session failed (from a queue worker that lost the backend).
    pub fn session_lost(self: &Arc<Self>, generation: u64) {
        {
            let mut s = self.session();
            match &*s {
                Session::Ready { generation: g, .. } if *g == generation => {
                    warn!(device = %self.cfg.name, "backend session lost");
                    *s = Session::Failed {
                        generation,
                        reason: abi::FATAL_BACKEND_LOST,
                    };
                }
                _ => return,
            }
        }
        for q in &self.queues {
            q.fail(abi::QERR_BACKEND_LOST);
        }
        self.device_event();
    }

    /// Starts connecting to the backend for `generation` (in the background).
    pub fn connect(self: &Arc<Self>, generation: u64) {
        *self.session() = Session::Connecting { generation };
        let me = Arc::clone(self);
        self.rt.spawn(async move {
            let name = me.cfg.name.clone();
            let result = connect_backend(&me.cfg).await;
            let mut s = me.session();
            if !matches!(&*s, Session::Connecting { generation: g } if *g == generation) {
                return; // reset again meanwhile; dropping the client closes that session
            }
            *s = match result {
                Ok((client, info)) => {
                    info!(device = %name, gpu = %info.name, session = client.session_id(), "backend session ready");
                    Session::Ready {
                        generation,
                        client,
                        info,
                    }
                }
                Err(e) => {
                    warn!(device = %name, "cannot open backend session: {e}");
                    let reason = match e {
                        ClientError::Refused { .. } => abi::FATAL_BACKEND_AUTH,
                        ClientError::Protocol(_) => abi::FATAL_BACKEND_PROTOCOL,
                        _ => abi::FATAL_BACKEND_UNREACHABLE,
                    };
                    Session::Failed { generation, reason }
                }
            };
            drop(s);
            me.device_event();
        });
    }

    /// Resets the device: stops every queue, drops the backend session (closing the
    /// connection frees every remote object), clears registers and reconnects.
    pub fn reset(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        debug!(device = %self.cfg.name, generation, "device reset");
        for (q, queue) in self.queues.iter().enumerate() {
            queue.reset();
            self.doorbells.clear(q as u32);
        }
        *self.session() = Session::Inactive;
        self.driver_features.store(0, Ordering::Relaxed);
        self.event_vector.store(0, Ordering::Relaxed);
        self.irqs().reset();
        self.connect(generation);
    }

    /// Tears everything down without reconnecting (client disconnect, shutdown).
    pub fn shutdown(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for queue in &self.queues {
            queue.reset();
        }
        *self.session() = Session::Inactive;
        self.mem.unmap_all();
        self.irqs().clear_fds();
    }
}

async fn connect_backend(cfg: &DeviceConfig) -> Result<(Client, GpuInfo), ClientError> {
    let (addr, token) = cfg.endpoint();
    let client = Client::connect(&addr, &token).await?;
    let d = client.device_query().await?;
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&d.uuid);
    let info = GpuInfo {
        total_mem: d.total_mem,
        cc: (d.cc_major, d.cc_minor),
        sm_count: d.multiprocessors,
        driver_version: d.driver_version,
        executor: match d.executor.as_str() {
            "cuda" => abi::EXECUTOR_CUDA,
            "cpu" => abi::EXECUTOR_CPU,
            _ => abi::EXECUTOR_NONE,
        },
        uuid,
        name: d.name,
    };
    Ok((client, info))
}

/// The device the message loop drives.
pub struct Device {
    pub shared: Arc<Shared>,
    pub config: ConfigSpace,
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
            mem: GuestMemory::new(),
            irqs: Mutex::new(irqs),
            session: Mutex::new(Session::Inactive),
            generation: AtomicU64::new(0),
            driver_features: AtomicU64::new(0),
            event_vector: AtomicU32::new(0),
            queues,
            doorbells: DoorbellPage::new()?,
            mem_used: AtomicU64::new(0),
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

    /// Starts the first backend session.
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

    /// The client went away: free everything; a new client starts from power-on state.
    pub fn disconnect(&mut self) {
        self.config.reset();
        self.shared.shutdown();
    }

    pub fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> bool {
        match region {
            crate::protocol::PCI_CONFIG_REGION => {
                self.config.read(offset, data);
                true
            }
            abi::REGS_BAR => {
                crate::regs::read(&self.shared, offset, data);
                true
            }
            abi::DOORBELL_BAR => {
                self.shared.doorbells.read(offset, data);
                true
            }
            abi::MSIX_BAR => {
                self.shared.irqs().bar_read(offset, data);
                true
            }
            _ => false,
        }
    }

    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> bool {
        match region {
            crate::protocol::PCI_CONFIG_REGION => {
                let effects = self.config.write(offset, data);
                let intx_off =
                    self.config.command() & crate::config_space::COMMAND_INTX_DISABLE != 0;
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
                true
            }
            abi::REGS_BAR => {
                if crate::regs::write(&self.shared, offset, data) == crate::regs::Action::Reset {
                    self.reset();
                }
                true
            }
            abi::DOORBELL_BAR => {
                self.shared.doorbells.write(offset, data);
                // A trapped write to the page also wakes the queue.
                let q = offset / abi::fastdb::STRIDE;
                if let Some(queue) = self.shared.queues.get(q as usize) {
                    queue.wake();
                }
                true
            }
            abi::MSIX_BAR => {
                self.shared.irqs().bar_write(offset, data);
                true
            }
            _ => false,
        }
    }

    /// The doorbell page's fd for `GET_REGION_INFO` of BAR2.
    pub fn doorbell_fd(&self) -> std::os::fd::RawFd {
        self.shared.doorbells.fd()
    }

    pub fn set_intx_fd(&self, fd: Option<File>) {
        self.shared.irqs().set_intx(fd);
    }
}
