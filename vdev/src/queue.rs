//! Queue pairs as registers: the guest-written configuration of each queue, its STATUS and
//! ERROR, the trapped doorbell, and the stop signal of the worker that serves it.
//!
//! A leaf: nothing here knows the device or the backend. The device enables a queue by
//! validating its registers ([`QueueShared::validate`]) and starting a worker
//! ([`crate::worker`]); the worker tells the device why it stopped, and the device decides
//! what the queue's STATUS then says ([`QueueShared::finish`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use netgpu_proto::abi::{self, queue as qreg, Command, Completion};
use tokio::sync::Notify;
use tracing::warn;

use crate::memory::Snapshot;

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

/// Why a queue's worker stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest disabled the queue, or the device reset or shut down.
    Stopped,
    /// A doorbell named a tail beyond the ring.
    BadDoorbell { tail: u32 },
    /// A ring could not be read or written (the VMM unmapped its memory).
    RingFault,
    /// The queue's backend session ended (or broke the protocol).
    BackendLost(String),
    /// The queue's backend session could not be opened.
    ConnectFailed(String),
}

impl StopReason {
    /// The queue error code the device reports for it (0: none, the queue just stops).
    pub fn error_code(&self) -> u32 {
        match self {
            StopReason::Stopped => 0,
            StopReason::BadDoorbell { .. } => abi::QERR_BAD_DOORBELL,
            StopReason::RingFault => abi::QERR_RING_FAULT,
            StopReason::BackendLost(_) | StopReason::ConnectFailed(_) => abi::QERR_BACKEND_LOST,
        }
    }
}

/// The stop signal of one running worker: the first reason wins.
#[derive(Default)]
pub struct RunControl {
    stopped: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    notify: Notify,
}

impl RunControl {
    pub fn stop(&self, reason: StopReason) {
        {
            let mut r = lock(&self.reason);
            if r.is_none() {
                *r = Some(reason);
            }
        }
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Returns once the worker is asked to stop.
    pub async fn wait(&self) {
        loop {
            // Created before the check, so a stop in between is not missed.
            let notified = self.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> StopReason {
        lock(&self.reason).clone().unwrap_or(StopReason::Stopped)
    }
}

pub struct QueueShared {
    index: u32,
    regs: Mutex<QueueRegs>,
    status: AtomicU32,
    error: AtomicU32,
    pub(crate) sq_head: AtomicU32,
    pub(crate) cq_tail: AtomicU32,
    /// Last tail written to the trapped doorbell.
    tail: AtomicU32,
    /// Wakes the worker: doorbells and stop requests.
    pub(crate) notify: Notify,
    /// Stop signal of the running worker, if any.
    run: Mutex<Option<Arc<RunControl>>>,
    /// A worker is alive and may still touch guest memory (the rings or a command's data).
    /// STATUS.ENABLED reads 1 until it has stopped, so a driver that disables a queue knows
    /// when it may free the rings and unpin buffers.
    busy: AtomicBool,
    /// Bumped by every enable and reset: a worker reporting for an older use of the queue
    /// changes nothing.
    epoch: AtomicU32,
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
            run: Mutex::new(None),
            busy: AtomicBool::new(false),
            epoch: AtomicU32::new(0),
        }
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn regs(&self) -> QueueRegs {
        *lock(&self.regs)
    }

    pub fn is_enabled(&self) -> bool {
        self.status_reg() & abi::QSTATUS_ENABLED != 0
    }

    /// Whether the queue is enabled and its worker serving it (not stopping, not in error).
    pub fn is_running(&self) -> bool {
        self.status.load(Ordering::Acquire) == abi::QSTATUS_ENABLED
    }

    /// Whether a worker may still touch guest memory for this queue.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The STATUS register: ENABLED also while a stopping worker finishes.
    fn status_reg(&self) -> u32 {
        let busy = if self.is_busy() {
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

    /// The last tail of the trapped doorbell.
    pub fn tail(&self) -> u32 {
        self.tail.load(Ordering::Acquire)
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Checks the registers for an enable: `Err(QERR_*)` if the queue cannot run, else the
    /// configuration the worker uses. `mem`: guest memory, which must hold both rings.
    pub fn validate(&self, mem: &Snapshot) -> Result<QueueRegs, u32> {
        if self.is_busy() {
            return Err(abi::QERR_BUSY);
        }
        let r = self.regs();
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
        let sq_len = u64::from(r.size) * Command::SIZE as u64;
        let cq_len = u64::from(r.size) * Completion::SIZE as u64;
        if mem.check(r.sq_base, sq_len, false).is_err()
            || mem.check(r.cq_base, cq_len, true).is_err()
        {
            return Err(abi::QERR_RING_UNMAPPED);
        }
        Ok(r)
    }

    /// Marks the queue in error without a worker (a refused enable).
    pub fn refuse(&self, code: u32) {
        self.error.store(code, Ordering::Release);
        self.status.store(abi::QSTATUS_ERROR, Ordering::Release);
    }

    /// Starts a use of the queue: ENABLED, indices at 0, a fresh stop signal. Returns the
    /// signal and the epoch the worker reports with.
    pub fn start(&self) -> (Arc<RunControl>, u32) {
        let ctl = Arc::new(RunControl::default());
        *lock(&self.run) = Some(Arc::clone(&ctl));
        self.sq_head.store(0, Ordering::Release);
        self.cq_tail.store(0, Ordering::Release);
        self.tail.store(0, Ordering::Release);
        self.error.store(0, Ordering::Release);
        self.busy.store(true, Ordering::Release);
        self.status.store(abi::QSTATUS_ENABLED, Ordering::Release);
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        (ctl, epoch)
    }

    /// The worker of `epoch` has stopped for `reason` and touches no guest memory any more:
    /// the device's verdict goes into STATUS/ERROR (unless the queue was reset or disabled
    /// meanwhile), then STATUS.ENABLED drops.
    pub fn finish(&self, epoch: u32, reason: &StopReason) {
        let current = self.epoch.load(Ordering::Acquire) == epoch;
        if current && self.status.load(Ordering::Acquire) == abi::QSTATUS_ENABLED {
            match reason.error_code() {
                0 => self.status.store(0, Ordering::Release),
                code => self.refuse(code),
            }
        }
        let mut run = lock(&self.run);
        if current {
            *run = None;
        }
        self.busy.store(false, Ordering::Release);
    }

    fn stop_worker(&self) {
        if let Some(ctl) = lock(&self.run).take() {
            ctl.stop(StopReason::Stopped);
        }
        self.notify.notify_one();
    }

    /// Guest disable: stop the worker (it abandons what is in flight and closes the queue's
    /// backend session, which frees everything created through it).
    pub fn disable(&self) {
        self.stop_worker();
        self.status.store(0, Ordering::Release);
        self.error.store(0, Ordering::Release);
    }

    /// Device reset: stop and return every register to its power-on value.
    pub fn reset(&self) {
        self.disable();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        *lock(&self.regs) = QueueRegs::power_on(self.index);
        self.sq_head.store(0, Ordering::Release);
        self.cq_tail.store(0, Ordering::Release);
        self.tail.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::memfd;
    use crate::memory::GuestMemory;

    fn mem() -> GuestMemory {
        let m = GuestMemory::new();
        m.map(0, 0x10_0000, 0, true, Some(memfd(0x10_0000)))
            .unwrap();
        m
    }

    fn configure(q: &QueueShared, sq: u64, cq: u64, size: u32, vector: u32) {
        q.write_reg("t", qreg::SQ_BASE, sq as u32);
        q.write_reg("t", qreg::SQ_BASE + 4, (sq >> 32) as u32);
        q.write_reg("t", qreg::CQ_BASE, cq as u32);
        q.write_reg("t", qreg::SIZE, size);
        q.write_reg("t", qreg::MSIX_VECTOR, vector);
    }

    #[test]
    fn enable_validation_names_the_first_problem() {
        let m = mem();
        let q = QueueShared::new(0);
        let s = m.snapshot();
        configure(&q, 0x1000, 0x2000, 3, 1);
        assert_eq!(q.validate(&s), Err(abi::QERR_BAD_SIZE));
        configure(&q, 0x1040, 0x2000, 8, 1);
        assert_eq!(q.validate(&s), Err(abi::QERR_RING_MISALIGNED));
        configure(&q, 0x1000, 0x2000, 8, abi::MSIX_VECTORS);
        assert_eq!(q.validate(&s), Err(abi::QERR_BAD_VECTOR));
        configure(&q, 0x20_0000, 0x2000, 8, abi::NO_VECTOR);
        assert_eq!(q.validate(&s), Err(abi::QERR_RING_UNMAPPED));
        configure(&q, 0x1000, 0x2000, 8, abi::NO_VECTOR);
        assert_eq!(q.validate(&s).unwrap().size, 8);
    }

    #[test]
    fn a_queue_still_stopping_refuses_a_new_enable_and_says_so() {
        let m = mem();
        let q = QueueShared::new(3);
        configure(&q, 0x1000, 0x2000, 8, 1);
        let (ctl, epoch) = q.start();
        assert_eq!(q.read_reg(qreg::STATUS), abi::QSTATUS_ENABLED);
        q.disable();
        assert!(ctl.is_stopped());
        // The worker has not finished: STATUS still says ENABLED (the driver waits) ...
        assert_eq!(q.read_reg(qreg::STATUS), abi::QSTATUS_ENABLED);
        // ... and a new owner's enable fails visibly instead of reading ENABLED.
        assert_eq!(q.validate(&m.snapshot()), Err(abi::QERR_BUSY));
        q.refuse(abi::QERR_BUSY);
        assert_ne!(q.read_reg(qreg::STATUS) & abi::QSTATUS_ERROR, 0);
        q.finish(epoch, &StopReason::Stopped);
        assert_eq!(q.read_reg(qreg::STATUS), abi::QSTATUS_ERROR);
        assert_eq!(q.read_reg(qreg::ERROR), abi::QERR_BUSY);
        q.disable();
        assert_eq!(q.read_reg(qreg::STATUS), 0);
        assert!(q.validate(&m.snapshot()).is_ok());
    }

    #[test]
    fn the_device_verdict_lands_before_enabled_drops_and_stale_reports_change_nothing() {
        let q = QueueShared::new(0);
        let (_ctl, epoch) = q.start();
        q.finish(epoch, &StopReason::BackendLost("gone".into()));
        assert_eq!(q.read_reg(qreg::STATUS), abi::QSTATUS_ERROR);
        assert_eq!(q.read_reg(qreg::ERROR), abi::QERR_BACKEND_LOST);
        let (_ctl, old) = q.start();
        q.reset();
        q.finish(old, &StopReason::RingFault);
        assert_eq!(
            (q.read_reg(qreg::STATUS), q.read_reg(qreg::ERROR)),
            (0, 0),
            "a worker stopped by a reset reports nothing"
        );
    }

    #[test]
    fn config_registers_are_locked_while_enabled() {
        let q = QueueShared::new(0);
        configure(&q, 0x1000, 0x2000, 8, 1);
        let _ = q.start();
        q.write_reg("t", qreg::SIZE, 16);
        q.write_reg("t", qreg::COALESCE_USECS, 5);
        assert_eq!(q.regs().size, 8);
        assert_eq!(q.regs().coalesce_usecs, 5);
    }
}
