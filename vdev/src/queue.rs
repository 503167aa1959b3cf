//! Queue pairs: per-queue registers, doorbells, and the worker task that consumes the
//! submission ring, forwards each command and posts completions with coalesced interrupts.
//!
//! A doorbell write in the message loop only stores the tail and wakes the worker
//! ([`QueueShared::ring`]); the worker runs on the device's runtime and is the only one that
//! waits on the backend. With fast doorbells negotiated the worker also polls the doorbell
//! page while the queue is busy (see [`crate::doorbell`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netgpu_client::{Client, Handle};
use netgpu_proto::abi::{self, queue as qreg, Command, Completion};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::device::Shared;

/// Guest-written configuration of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRegs {
    pub sq_base: u64,
    pub cq_base: u64,
    pub size: u32,
    pub vector: u32,
    pub coalesce_usecs: u32,
    pub coalesce_count: u32,
}

impl QueueRegs {
    fn power_on(index: u32) -> Self {
        QueueRegs {
            sq_base: 0,
            cq_base: 0,
            size: 0,
            // Queue q interrupts on vector q + 1 by default (vector 0: device events).
            vector: index + 1,
            coalesce_usecs: 0,
            coalesce_count: 0,
        }
    }
}

pub struct QueueShared {
    index: u32,
    regs: Mutex<QueueRegs>,
    status: AtomicU32,
    error: AtomicU32,
    sq_head: AtomicU32,
    cq_tail: AtomicU32,
    /// Last tail written to the trapped doorbell.
    tail: AtomicU32,
    notify: Notify,
    /// Stop flag of the running worker, if any.
    stop: Mutex<Option<Arc<AtomicBool>>>,
    /// A worker is alive and may still touch guest memory (the rings or a command's data).
    /// STATUS.ENABLED reads 1 until it has stopped, so a driver that disables a queue knows
    /// when it may free the rings and unpin buffers.
    busy: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QueueShared {
    pub fn new(index: u32) -> Self {
        QueueShared {
            index,
            regs: Mutex::new(QueueRegs::power_on(index)),
            status: AtomicU32::new(0),
            error: AtomicU32::new(0),
            sq_head: AtomicU32::new(0),
            cq_tail: AtomicU32::new(0),
            tail: AtomicU32::new(0),
            notify: Notify::new(),
            stop: Mutex::new(None),
            busy: AtomicBool::new(false),
        }
    }

    pub fn regs(&self) -> QueueRegs {
        *lock(&self.regs)
    }

    pub fn is_enabled(&self) -> bool {
        self.status_reg() & abi::QSTATUS_ENABLED != 0
    }

    /// The STATUS register: ENABLED also while a stopping worker finishes its last command.
    fn status_reg(&self) -> u32 {
        let busy = if self.busy.load(Ordering::Acquire) {
            abi::QSTATUS_ENABLED
        } else {
            0
        };
        self.status.load(Ordering::Acquire) | busy
    }

    pub fn read_reg(&self, field: u64) -> u32 {
        let r = self.regs();
        match field {
            qreg::SQ_BASE => r.sq_base as u32,
            f if f == qreg::SQ_BASE + 4 => (r.sq_base >> 32) as u32,
            qreg::CQ_BASE => r.cq_base as u32,
            f if f == qreg::CQ_BASE + 4 => (r.cq_base >> 32) as u32,
            qreg::SIZE => r.size,
            qreg::MSIX_VECTOR => r.vector,
            qreg::ENABLE => u32::from(self.is_enabled()),
            qreg::STATUS => self.status_reg(),
            qreg::ERROR => self.error.load(Ordering::Acquire),
            qreg::COALESCE_USECS => r.coalesce_usecs,
            qreg::COALESCE_COUNT => r.coalesce_count,
            qreg::SQ_HEAD => self.sq_head.load(Ordering::Acquire),
            qreg::CQ_TAIL => self.cq_tail.load(Ordering::Acquire),
            _ => 0,
        }
    }

    pub fn write_reg(&self, device: &str, field: u64, v: u32) {
        let mut r = lock(&self.regs);
        match field {
            qreg::COALESCE_USECS => r.coalesce_usecs = v,
            qreg::COALESCE_COUNT => r.coalesce_count = v,
            _ if self.is_enabled() => {
                warn!(
                    device,
                    queue = self.index,
                    field,
                    "refused config write to an enabled queue"
                );
            }
            qreg::SQ_BASE => r.sq_base = (r.sq_base & !0xffff_ffff) | u64::from(v),
            f if f == qreg::SQ_BASE + 4 => {
                r.sq_base = (r.sq_base & 0xffff_ffff) | (u64::from(v) << 32)
            }
            qreg::CQ_BASE => r.cq_base = (r.cq_base & !0xffff_ffff) | u64::from(v),
            f if f == qreg::CQ_BASE + 4 => {
                r.cq_base = (r.cq_base & 0xffff_ffff) | (u64::from(v) << 32)
            }
            qreg::SIZE => r.size = v,
            qreg::MSIX_VECTOR => r.vector = v,
            _ => {}
        }
    }

    /// Trapped doorbell: record the tail and wake the worker. Never blocks.
    pub fn ring(&self, tail: u32) {
        self.tail.store(tail, Ordering::Release);
        self.notify.notify_one();
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn stop_worker(&self) {
        if let Some(stop) = lock(&self.stop).take() {
            stop.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// Stops the queue with an error code.
    pub fn fail(&self, code: u32) {
        self.stop_worker();
        self.error.store(code, Ordering::Release);
        self.status.store(abi::QSTATUS_ERROR, Ordering::Release);
    }

    /// Guest disable: stop; the worker destroys the queue's contexts on its way out.
    pub fn disable(&self) {
        self.stop_worker();
        self.status.store(0, Ordering::Release);
        self.error.store(0, Ordering::Release);
    }

    /// Device reset: stop and return every register to its power-on value.
    pub fn reset(&self) {
        self.disable();
        *lock(&self.regs) = QueueRegs::power_on(self.index);
        self.sq_head.store(0, Ordering::Release);
        self.cq_tail.store(0, Ordering::Release);
        self.tail.store(0, Ordering::Release);
    }
}

/// Validates queue `q`'s configuration and starts its worker.
pub fn enable(s: &Arc<Shared>, q: usize) {
    let queue = &s.queues[q];
    if queue.is_enabled() {
        return;
    }
    let r = queue.regs();
    let name = &s.cfg.name;
    let check = || -> Result<Client, u32> {
        if !r.size.is_power_of_two()
            || !(abi::MIN_QUEUE_SIZE..=abi::MAX_QUEUE_SIZE).contains(&r.size)
        {
            return Err(abi::QERR_BAD_SIZE);
        }
        if r.sq_base % abi::RING_ALIGN != 0 || r.cq_base % abi::RING_ALIGN != 0 {
            return Err(abi::QERR_RING_MISALIGNED);
        }
        if r.vector >= abi::MSIX_VECTORS && r.vector != abi::NO_VECTOR {
            return Err(abi::QERR_BAD_VECTOR);
        }
        let mem = s.mem.snapshot();
        let sq_len = u64::from(r.size) * Command::SIZE as u64;
        let cq_len = u64::from(r.size) * Completion::SIZE as u64;
        if mem.check(r.sq_base, sq_len, false).is_err()
            || mem.check(r.cq_base, cq_len, true).is_err()
        {
            return Err(abi::QERR_RING_UNMAPPED);
        }
        s.client().ok_or(abi::QERR_BACKEND_LOST)
    };
    match check() {
        Ok(_device_session) => {}
        Err(code) => {
            warn!(device = %name, queue = q, code, ?r, "refused to enable queue");
            queue.error.store(code, Ordering::Release);
            queue.status.store(abi::QSTATUS_ERROR, Ordering::Release);
            return;
        }
    };
    s.doorbells.clear(q as u32);
    queue.sq_head.store(0, Ordering::Release);
    queue.cq_tail.store(0, Ordering::Release);
    queue.tail.store(0, Ordering::Release);
    queue.error.store(0, Ordering::Release);
    let stop = Arc::new(AtomicBool::new(false));
    *lock(&queue.stop) = Some(Arc::clone(&stop));
    queue.busy.store(true, Ordering::Release);
    queue.status.store(abi::QSTATUS_ENABLED, Ordering::Release);
    debug!(device = %name, queue = q, size = r.size, "queue enabled");
    let generation = s.generation.load(Ordering::SeqCst);
    let worker = Worker {
        s: Arc::clone(s),
        queue: Arc::clone(queue),
        q: q as u32,
        regs: r,
        stop,
        generation,
    };
    s.rt.spawn(worker.run());
}

struct Worker {
    s: Arc<Shared>,
    queue: Arc<QueueShared>,
    q: u32,
    regs: QueueRegs,
    stop: Arc<AtomicBool>,
    generation: u64,
}

impl Worker {
    fn fast(&self) -> bool {
        self.s.driver_features.load(Ordering::Relaxed) & abi::FEATURE_FAST_DOORBELLS != 0
    }

    fn tail(&self) -> u32 {
        if self.fast() {
            self.s.doorbells.sq_tail(self.q)
        } else {
            self.queue.tail.load(Ordering::Acquire)
        }
    }

    fn interrupt(&self) {
        if self.regs.vector != abi::NO_VECTOR {
            self.s.irqs().signal(self.regs.vector, 1 << self.q);
        }
    }

    async fn run(self) {
        let name = self.s.cfg.name.clone();
        // Each queue (one guest process) gets a backend session of its own: a process can
        // reach no other process's contexts or memory (the backend isolates sessions), its
        // memory is accounted on its own, and closing the session frees everything it made.
        // Connecting happens here, off the vfio-user message loop.
        let (addr, token) = self.s.cfg.endpoint();
        let client = match Client::connect(&addr, &token).await {
            Ok(c) => c,
            Err(e) => {
                warn!(device = %name, queue = self.q, "cannot open the queue's backend session: {e}");
                self.queue.fail(abi::QERR_BACKEND_LOST);
                self.queue.busy.store(false, Ordering::Release);
                return;
            }
        };
        let size = self.regs.size;
        let mut head = 0u32;
        let mut cq_tail = 0u32;
        let mut phase = true;
        let mut ctxs: Vec<Handle> = Vec::new();
        let mut quota = crate::forward::Quota::new(&self.s.mem_used, self.s.cfg.memory_quota);
        let mut pending = 0u32;
        let mut deadline: Option<Instant> = None;
        let mut last_work = Instant::now();
        let mut polling = false;
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let tail = self.tail();
            if tail >= size {
                warn!(device = %name, queue = self.q, tail, size, "doorbell beyond the ring");
                self.queue.fail(abi::QERR_BAD_DOORBELL);
                break;
            }
            if tail != head {
                if self.fast() && !polling {
                    self.s.doorbells.set_polling(self.q, true);
                    polling = true;
                }
                let mem = self.s.mem.snapshot();
                let mut raw = [0u8; Command::SIZE];
                let at = self.regs.sq_base + u64::from(head) * Command::SIZE as u64;
                if mem.read(at, &mut raw).is_err() {
                    warn!(device = %name, queue = self.q, "submission ring no longer mapped");
                    self.queue.fail(abi::QERR_RING_FAULT);
                    break;
                }
                let cmd = Command::from_bytes(&raw);
                head = (head + 1) % size;
                self.queue.sq_head.store(head, Ordering::Release);
                let out =
                    crate::forward::execute(&name, &client, &mem, &cmd, &mut ctxs, &mut quota)
                        .await;
                if out.lost {
                    self.s.session_lost(self.generation);
                }
                let cqe = Completion {
                    cid: cmd.cid,
                    result: out.result.0,
                    value0: out.v0,
                    value1: out.v1,
                    sq_head: head as u16,
                    flags: if phase { abi::CQE_FLAG_PHASE } else { 0 },
                    reserved: 0,
                };
                let at = self.regs.cq_base + u64::from(cq_tail) * Completion::SIZE as u64;
                if mem.write(at, &cqe.to_bytes()).is_err() {
                    warn!(device = %name, queue = self.q, "completion ring no longer mapped");
                    self.queue.fail(abi::QERR_RING_FAULT);
                    break;
                }
                cq_tail = (cq_tail + 1) % size;
                if cq_tail == 0 {
                    phase = !phase;
                }
                self.queue.cq_tail.store(cq_tail, Ordering::Release);
                pending += 1;
                let live = self.queue.regs();
                let now = Instant::now();
                if live.coalesce_usecs == 0
                    || pending >= live.coalesce_count.max(1)
                    || deadline.is_some_and(|d| now >= d)
                {
                    self.interrupt();
                    pending = 0;
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(now + Duration::from_micros(u64::from(live.coalesce_usecs)));
                }
                last_work = now;
                if out.lost {
                    break;
                }
                continue;
            }
            // Idle.
            if pending > 0 && deadline.is_none_or(|d| Instant::now() >= d) {
                self.interrupt();
                pending = 0;
                deadline = None;
            }
            if self.fast() {
                if last_work.elapsed() < self.s.cfg.poll {
                    tokio::task::yield_now().await;
                    continue;
                }
                if polling {
                    self.s.doorbells.set_polling(self.q, false);
                    polling = false;
                    if self.tail() != head {
                        continue; // stored before we cleared POLLING
                    }
                }
            }
            let notified = self.queue.notify.notified();
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, notified).await;
                }
                None => notified.await,
            }
            last_work = Instant::now();
        }
        if polling {
            self.s.doorbells.set_polling(self.q, false);
        }
        if pending > 0 {
            self.interrupt();
        }
        // The queue's share of the device memory limit goes back before STATUS.ENABLED drops,
        // so a driver that saw the queue stop can count on it (the backend frees the memory
        // itself when the session closes below).
        drop(quota);
        // From here on the worker touches no guest memory: let STATUS.ENABLED drop.
        self.queue.busy.store(false, Ordering::Release);
        // Closing the queue's session frees every context, allocation, module, stream and
        // event created through it.
        debug!(device = %name, queue = self.q, contexts = ctxs.len(), "closing the queue's backend session");
        drop(client);
        debug!(device = %name, queue = self.q, "queue worker stopped");
    }
}
