//! Entry points for the fuzz targets in `vdev/fuzz`; not a stable API.
//!
//! [`ring`] runs a whole submission ring in guest memory through the device's checks with a
//! scripted backend, without sockets or a runtime; the register/config and vfio-user
//! targets drive the public [`crate::Device`] and [`crate::protocol`] directly.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Request, SessionLimits};

use crate::doorbell::{DoorbellPage, Error};
use crate::interrupts::Interrupts;
use crate::memory::GuestMemory;
use crate::queue::{QueueRegs, QueueShared, RunControl, StopReason};
use crate::session::{self, Ctrl};
use crate::worker::{self, OfflineReply, QueueEnv};

/// What a ring run needs besides guest memory (made once per fuzz process).
pub struct Rig {
    irqs: Arc<Mutex<Interrupts>>,
    doorbells: Arc<DoorbellPage>,
}

impl Rig {
    pub fn new() -> Result<Rig, Error> {
        Ok(Rig {
            irqs: Arc::new(Mutex::new(Interrupts::new("fuzz"))),
            doorbells: Arc::new(DoorbellPage::new()?),
        })
    }
}

/// A scripted backend reply.
pub struct Reply {
    pub status: u32,
    /// The control section, or `None` for one over the protocol's limit.
    pub ctrl: Option<Vec<u8>>,
    pub data_len: u32,
    pub console: bool,
}

/// Queue parameters of a ring run.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    pub sq_base: u64,
    pub cq_base: u64,
    pub size: u32,
    pub tail: u32,
    pub out_of_order: bool,
    /// The backend's largest data section.
    pub max_data: u64,
    /// The device memory limit (0: none).
    pub memory_limit: u64,
}

/// Runs ring `r` in `mem`, answering each request with `answer`; returns why it stopped
/// ([`StopReason::Stopped`] when it reached the tail).
pub fn ring(
    rig: &Rig,
    mem: &Arc<GuestMemory>,
    r: Ring,
    mut answer: impl FnMut(&Request) -> Reply,
) -> StopReason {
    let env = QueueEnv {
        device: "fuzz".into(),
        queue: Arc::new(QueueShared::new(0)),
        regs: QueueRegs {
            sq_base: r.sq_base,
            cq_base: r.cq_base,
            size: r.size.max(1),
            vector: 1,
            coalesce_usecs: 0,
            coalesce_count: 0,
        },
        ctl: Arc::new(RunControl::default()),
        mem: Arc::clone(mem),
        irqs: Arc::clone(&rig.irqs),
        doorbells: Arc::clone(&rig.doorbells),
        fast_doorbells: false,
        out_of_order: r.out_of_order,
        session: session::Options {
            addr: String::new(),
            token: String::new(),
            client: String::new(),
            limits: SessionLimits::default(),
            timeout: Duration::ZERO,
            transport: Default::default(),
        },
        attempt: None,
        mem_used: Arc::new(AtomicU64::new(0)),
        memory_limit: r.memory_limit,
        poll: Duration::ZERO,
    };
    worker::offline(env, r.tail, r.max_data, |req| {
        let a = answer(req);
        OfflineReply {
            status: CuResult(a.status),
            ctrl: match a.ctrl {
                Some(b) => Ctrl::Bytes(b),
                None => Ctrl::Oversized(u32::MAX),
            },
            data_len: u64::from(a.data_len),
            console: a.console,
        }
    })
}
