//! The worker of one enabled queue: a concurrent pipeline from the submission ring to the
//! queue's backend session and back to the completion ring.
//!
//! - The submit loop reads descriptors in ring order, decodes each (`abi::codec`), checks its
//!   scatter list and directions, and writes its frames to the session in that order (so
//!   commands on one stream keep their order), data streamed from guest memory. It does not
//!   wait for replies: many commands are in flight at once.
//! - The reply task reads replies in whatever order the backend sends them, moves their data
//!   into the commands' output buffers and posts each completion as soon as its command is
//!   done (in submission order unless the driver negotiated `FEATURE_OUT_OF_ORDER`).
//! - On a stop (disable, reset, a ring fault, the session lost) both end at once: what is in
//!   flight is abandoned, the session is closed (so the backend cancels and frees the queue's
//!   work), and [`run`] returns why it stopped. What that means for the queue is the
//!   device's decision ([`crate::queue::QueueShared::finish`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netgpu_proto::abi::codec::{self, Decoded, DeviceReply, ReplyForm};
use netgpu_proto::abi::{self, Command, Completion};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameKind, FLAG_NO_REPLY};
use netgpu_proto::wire::ops::Request;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cq::CompletionRing;
use crate::doorbell::DoorbellPage;
use crate::forward::{self, Effect, Plan, Quota};
use crate::interrupts::Interrupts;
use crate::memory::{GuestMemory, Snapshot};
use crate::queue::{QueueRegs, QueueShared, RunControl, StopReason};
use crate::session::{self, Ctrl, Head, Liveness, Progress, Receiver, Sender};
use crate::sg::{Run, SgList};

/// Everything a worker needs from the device.
pub struct QueueEnv {
    pub device: String,
    pub queue: Arc<QueueShared>,
    pub regs: QueueRegs,
    pub ctl: Arc<RunControl>,
    pub mem: Arc<GuestMemory>,
    pub irqs: Arc<Mutex<Interrupts>>,
    pub doorbells: Arc<DoorbellPage>,
    /// `FEATURE_FAST_DOORBELLS` negotiated.
    pub fast_doorbells: bool,
    /// `FEATURE_OUT_OF_ORDER` negotiated.
    pub out_of_order: bool,
    pub session: session::Options,
    /// With `--vgpu`: reported once the session opened or could not.
    pub attempt: Option<crate::pool::Attempt>,
    /// Device memory held by all queues, against `memory_limit` (0: none).
    pub mem_used: Arc<AtomicU64>,
    pub memory_limit: u64,
    /// How long a busy queue polls the fast doorbell page after its last command.
    pub poll: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A command the backend has not answered yet.
struct Cmd {
    cid: u32,
    seq: u64,
    output: Run,
    effect: Effect,
    /// `ReplyForm::Data`: v0 is the whole output's length.
    data_form: bool,
    state: Mutex<CmdState>,
}

#[derive(Default)]
struct CmdState {
    remaining: usize,
    error: Option<CuResult>,
    values: (u64, u64),
    console: bool,
}

/// One expected reply.
struct Waiting {
    cmd: Arc<Cmd>,
    form: ReplyForm,
    out_skip: u64,
    out_len: u64,
    /// Its reply completes the command's values.
    last: bool,
}

/// State shared by the submit loop, the reply task and coalescing timers.
struct Pipe {
    env: QueueEnv,
    cq: Mutex<CompletionRing>,
    inflight: Mutex<HashMap<u64, Waiting>>,
    /// Taken (and dropped, returning the queue's share) when the worker stops.
    quota: Mutex<Option<Quota>>,
    /// Commands waiting for replies, and the output entries they hold: bounded, so a guest
    /// that floods the ring (or a backend that never answers) cannot grow vdev's memory.
    outstanding: Mutex<Outstanding>,
    /// The watchdog asks the submit loop to send a liveness probe.
    probe_wanted: AtomicBool,
    /// Request id of the last probe sent (0: none); its reply is only progress.
    probe_id: AtomicU64,
}

/// Most commands of one queue waiting for the backend at once.
pub const MAX_OUTSTANDING: usize = 256;
/// Most output scatter-gather entries those hold together (room for four of the largest).
pub const MAX_OUTSTANDING_ENTRIES: usize = 4 * abi::MAX_SG_ENTRIES as usize;

#[derive(Default)]
struct Outstanding {
    commands: usize,
    entries: usize,
}

impl Outstanding {
    /// Whether another command of any size may be sent.
    fn has_room(&self) -> bool {
        self.commands < MAX_OUTSTANDING
            && self.entries + abi::MAX_SG_ENTRIES as usize <= MAX_OUTSTANDING_ENTRIES
    }
}

/// What a descriptor asks for, once checked.
enum Prepared {
    /// Complete at once with these values.
    Done(CuResult, u64, u64),
    Send(Outgoing),
}

/// A checked command to send.
struct Outgoing {
    plan: Plan,
    input: Run,
    output: Run,
    /// `ReplyForm::Data`: v0 is the whole output's length.
    data_form: bool,
}

/// Runs queue `env.queue` until it is stopped; returns why. When it returns, the worker
/// touches no guest memory any more and the queue's backend session is closed.
pub async fn run(mut env: QueueEnv) -> StopReason {
    let name = env.device.clone();
    let q = env.queue.index();
    // Each queue (one guest process) gets a backend session of its own: a process can reach
    // no other process's contexts or memory, its memory is accounted on its own, and closing
    // the session frees (and cancels) everything it made.
    let opened = tokio::select! {
        r = session::open(&env.session) => r,
        _ = env.ctl.wait() => return env.ctl.reason(),
    };
    let (tx, rx, welcome) = match opened {
        Ok(s) => s,
        Err(e) => {
            warn!(device = %name, queue = q, "cannot open the queue's backend session: {e}");
            if let Some(a) = env.attempt {
                a.failed();
            }
            return StopReason::ConnectFailed(e.to_string());
        }
    };
    if let Some(a) = env.attempt.take() {
        a.opened();
    }
    debug!(device = %name, queue = q, session = welcome.session_id, "queue session open");
    let quota = Quota::new(Arc::clone(&env.mem_used), env.memory_limit);
    let cq = CompletionRing::new(env.regs.cq_base, env.regs.size, env.out_of_order);
    let pipe = Arc::new(Pipe {
        env,
        cq: Mutex::new(cq),
        inflight: Mutex::new(HashMap::new()),
        quota: Mutex::new(Some(quota)),
        outstanding: Mutex::new(Outstanding::default()),
        probe_wanted: AtomicBool::new(false),
        probe_id: AtomicU64::new(0),
    });
    let watchdog = pipe
        .env
        .session
        .transport
        .liveness
        .map(|l| tokio::spawn(Arc::clone(&pipe).watchdog(rx.progress(), l)));
    let replies = tokio::spawn(Arc::clone(&pipe).replies(rx));
    let ctl = Arc::clone(&pipe.env.ctl);
    let reason = tokio::select! {
        r = pipe.submit(tx, u64::from(welcome.max_data)) => r,
        _ = ctl.wait() => ctl.reason(),
    };
    ctl.stop(reason.clone());
    // The reply task stops at its next await; once joined it touches nothing more. Dropping
    // its receiver and our sender closes the socket.
    replies.abort();
    let _ = replies.await;
    if let Some(w) = watchdog {
        w.abort();
        let _ = w.await;
    }
    if pipe.env.fast_doorbells {
        pipe.env.doorbells.set_polling(q, false);
    }
    lock(&pipe.inflight).clear();
    pipe.flush_interrupt();
    // The queue's share of the device memory limit goes back before STATUS.ENABLED drops.
    drop(lock(&pipe.quota).take());
    debug!(device = %name, queue = q, ?reason, "queue worker stopped");
    reason
}

impl Pipe {
    fn q(&self) -> u32 {
        self.env.queue.index()
    }

    fn tail(&self) -> u32 {
        if self.env.fast_doorbells {
            self.env.doorbells.sq_tail(self.q())
        } else {
            self.env.queue.tail()
        }
    }

    fn stop(&self, reason: StopReason) {
        self.env.ctl.stop(reason);
        self.env.queue.wake();
    }

    fn interrupt(&self) {
        if self.env.regs.vector != abi::NO_VECTOR {
            lock(&self.env.irqs).signal(self.env.regs.vector, abi::intr_queue_bit(self.q()));
        }
    }

    /// Raises a pending coalesced interrupt now.
    fn flush_interrupt(&self) {
        if lock(&self.cq).take_pending() {
            self.interrupt();
        }
    }

    /// Posts a completion (in order, unless out of order is allowed) and interrupts as the
    /// coalescing registers say.
    fn complete(
        self: &Arc<Self>,
        seq: u64,
        cid: u32,
        result: CuResult,
        v0: u64,
        v1: u64,
        console: bool,
    ) {
        let mem = self.env.mem.snapshot();
        self.complete_in(&mem, seq, cid, result, v0, v1, console);
    }

    /// As [`Pipe::complete`], with the guest memory view the caller holds.
    #[allow(clippy::too_many_arguments)]
    fn complete_in(
        self: &Arc<Self>,
        mem: &Snapshot,
        seq: u64,
        cid: u32,
        result: CuResult,
        v0: u64,
        v1: u64,
        console: bool,
    ) {
        let mut flags = 0;
        if console {
            flags |= abi::CQE_FLAG_CONSOLE_PENDING;
        }
        let c = Completion {
            cid,
            result: result.0,
            value0: v0,
            value1: v1,
            sq_head: 0,
            flags,
            reserved: 0,
        };
        let live = self.env.queue.regs();
        let mut cq = lock(&self.cq);
        let head = self
            .env
            .queue
            .sq_head
            .load(std::sync::atomic::Ordering::Acquire) as u16;
        let posted = match cq.post(mem, seq, c, head) {
            Ok(n) => n,
            Err(e) => {
                drop(cq);
                warn!(device = %self.env.device, queue = self.q(), "completion ring no longer mapped: {e}");
                self.stop(StopReason::RingFault);
                return;
            }
        };
        self.env
            .queue
            .cq_tail
            .store(cq.tail(), std::sync::atomic::Ordering::Release);
        if posted == 0 {
            return;
        }
        match cq.add_pending(posted, live.coalesce_usecs, live.coalesce_count) {
            crate::cq::Interrupt::Now => {
                drop(cq);
                self.interrupt();
            }
            crate::cq::Interrupt::Later(after) => {
                drop(cq);
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let fire = lock(&me.cq).timer_fired();
                    if fire {
                        me.interrupt();
                    }
                });
            }
            crate::cq::Interrupt::Armed => {}
        }
    }

    /// Checks and decodes one descriptor (`mem`: the current guest memory view).
    fn prepare(&self, mem: &Snapshot, cmd: &Command, max_data: u64) -> Prepared {
        let name = &self.env.device;
        let fail = |r: CuResult| Prepared::Done(r, 0, 0);
        let spec = match codec::check(cmd) {
            Ok(s) => s,
            Err(e) => {
                debug!(device = %name, cid = cmd.cid, opcode = cmd.opcode, "refused command: {e}");
                return fail(e.cuda_result());
            }
        };
        let bufs = match SgList::resolve(cmd, mem).and_then(|l| l.split(&spec)) {
            Ok(b) => b,
            Err(e) => {
                debug!(device = %name, cid = cmd.cid, "bad scatter-gather list: {e}");
                return fail(CuResult::INVALID_VALUE);
            }
        };
        let (in_len, out_len) = (bufs.input.len(), bufs.output.len());
        let prefix = match codec::prefix_len(cmd, in_len) {
            Ok(0) => Vec::new(),
            // A control section is a buffer of its own: the guest's length only picks which
            // entry boundary ends it.
            Ok(n) if cmd.opcode == abi::op::WIRE_REQUEST && !bufs.input.is_boundary(n as u64) => {
                debug!(device = %name, cid = cmd.cid, "control section ends inside an entry");
                return fail(CuResult::INVALID_VALUE);
            }
            Ok(n) => match bufs.input.gather(mem, 0, n as u64) {
                Ok(p) => p,
                Err(_) => return fail(CuResult::INVALID_VALUE),
            },
            Err(e) => {
                debug!(device = %name, cid = cmd.cid, "refused command: {e}");
                return fail(e.cuda_result());
            }
        };
        let dr = match codec::decode(cmd, in_len, out_len, &prefix) {
            Ok(Decoded::Nop) => return Prepared::Done(CuResult::SUCCESS, 0, 0),
            Ok(Decoded::Forward(dr)) => dr,
            Err(e) => {
                debug!(device = %name, cid = cmd.cid, "refused command: {e}");
                return fail(e.cuda_result());
            }
        };
        let plan = match forward::plan(&dr, out_len, max_data) {
            Ok(p) => p,
            Err(r) => return fail(r),
        };
        if let Effect::Alloc { size, .. } = plan.effect {
            let ok = lock(&self.quota).as_mut().is_some_and(|q| q.reserve(size));
            if !ok {
                return fail(CuResult::OUT_OF_MEMORY);
            }
        }
        Prepared::Send(Outgoing {
            plan,
            input: bufs.input,
            output: bufs.output,
            data_form: dr.form == ReplyForm::Data,
        })
    }

    fn settle(&self, effect: Effect, result: CuResult, v0: u64) {
        if let Some(q) = lock(&self.quota).as_mut() {
            q.settle(effect, result, v0);
        }
    }

    /// The in-flight record of a command about to be sent.
    fn new_cmd(cid: u32, seq: u64, plan: &Plan, output: Run, data_form: bool) -> Arc<Cmd> {
        Arc::new(Cmd {
            cid,
            seq,
            output,
            effect: plan.effect,
            data_form,
            state: Mutex::new(CmdState {
                remaining: plan.parts.iter().filter(|p| !p.no_reply).count(),
                ..CmdState::default()
            }),
        })
    }

    /// The reply part `i` of `plan` waits for, if any.
    fn waiting(cmd: &Arc<Cmd>, plan: &Plan, i: usize) -> Option<Waiting> {
        let part = &plan.parts[i];
        let last = plan.parts.iter().rposition(|p| !p.no_reply);
        (!part.no_reply).then(|| Waiting {
            cmd: Arc::clone(cmd),
            form: part.form,
            out_skip: part.out_skip,
            out_len: part.out_len,
            last: Some(i) == last,
        })
    }

    /// Completes a command none of whose parts waits for a reply, once its frames are out.
    fn posted(self: &Arc<Self>, cmd: &Cmd, data_ok: bool) {
        let result = if data_ok {
            CuResult::SUCCESS
        } else {
            CuResult::INVALID_VALUE
        };
        self.settle(cmd.effect, result, 0);
        self.complete(cmd.seq, cmd.cid, result, 0, 0, false);
    }

    /// Writes a command's frames; completes it at once if no part waits for a reply.
    async fn send(
        self: &Arc<Self>,
        tx: &mut Sender,
        cid: u32,
        seq: u64,
        out: Outgoing,
    ) -> session::Result<()> {
        let Outgoing {
            plan,
            input,
            output,
            data_form,
        } = out;
        let cmd = Self::new_cmd(cid, seq, &plan, output, data_form);
        if !plan.posted {
            let mut o = lock(&self.outstanding);
            o.commands += 1;
            o.entries += cmd.output.entries();
        }
        let mut data_ok = true;
        for (i, part) in plan.parts.iter().enumerate() {
            let id = tx.next_id();
            if let Some(w) = Self::waiting(&cmd, &plan, i) {
                lock(&self.inflight).insert(id, w);
            }
            let flags = if part.no_reply { FLAG_NO_REPLY } else { 0 };
            // `plan` bounds every part's data by the backend's u32 limit.
            let data_len = u32::try_from(part.data_len).unwrap_or(u32::MAX);
            tx.push(id, flags, &part.request, data_len)?;
            if part.data_len > 0 {
                let short = tx
                    .send_guest(&self.env.mem, &input, part.data_skip, part.data_len)
                    .await?;
                if short > 0 {
                    // Mark the failure before the reply can come back, then keep the
                    // stream in step.
                    data_ok = false;
                    lock(&cmd.state)
                        .error
                        .get_or_insert(CuResult::INVALID_VALUE);
                    tx.pad(short).await?;
                }
            } else if tx.should_flush() {
                tx.flush().await?;
            }
        }
        if plan.posted {
            self.posted(&cmd, data_ok);
        }
        Ok(())
    }

    /// Watches a session with commands waiting: probes it when it falls silent and stops
    /// the queue (`BackendLost`) when it stays silent, so the commands fail (the driver sees
    /// the queue's ERROR) instead of waiting forever on a backend or network that is gone
    /// without a FIN or RST. An idle session (nothing waiting) is never probed.
    async fn watchdog(self: Arc<Self>, progress: Arc<Progress>, l: Liveness) {
        let tick = (l.probe_after / 4).max(Duration::from_millis(20));
        let mut probed = false;
        loop {
            tokio::time::sleep(tick).await;
            if self.env.ctl.is_stopped() {
                return;
            }
            let waiting = lock(&self.outstanding).commands;
            let silence = progress.silence();
            if waiting == 0 || silence < l.probe_after {
                probed = false;
                continue;
            }
            if silence >= l.timeout {
                let why = format!(
                    "the backend sent nothing for {} ms while {waiting} command(s) waited (the backend or the network is stuck)",
                    silence.as_millis()
                );
                self.stop(StopReason::BackendLost(why));
                return;
            }
            if !probed {
                // One probe per silence; the submit loop sends it (it owns the sender).
                probed = true;
                self.probe_wanted.store(true, Ordering::Release);
                self.env.queue.wake();
            }
        }
    }

    /// Sends a liveness probe if the watchdog asked for one.
    async fn send_probe(&self, tx: &mut Sender) -> session::Result<()> {
        if !self.probe_wanted.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let id = tx.next_id();
        self.probe_id.store(id, Ordering::Release);
        tx.push(id, 0, &Request::Null, 0)?;
        tx.flush_probe().await
    }

    /// The submit loop: ring order in, frames out.
    async fn submit(self: &Arc<Self>, mut tx: Sender, max_data: u64) -> StopReason {
        let env = &self.env;
        let q = self.q();
        let size = env.regs.size;
        let mut head = 0u32;
        let mut seq = 0u64;
        let mut polling = false;
        let mut last_work = Instant::now();
        loop {
            if env.ctl.is_stopped() {
                return env.ctl.reason();
            }
            if let Err(e) = self.send_probe(&mut tx).await {
                return StopReason::BackendLost(e.to_string());
            }
            let tail = self.tail();
            if tail >= size {
                warn!(device = %env.device, queue = q, tail, size, "doorbell beyond the ring");
                return StopReason::BadDoorbell { tail };
            }
            if tail == head {
                if let Err(e) = tx.flush().await {
                    return StopReason::BackendLost(e.to_string());
                }
                if env.fast_doorbells {
                    if last_work.elapsed() < env.poll {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    if polling {
                        env.doorbells.set_polling(q, false);
                        polling = false;
                        if self.tail() != head {
                            continue; // stored before we cleared POLLING
                        }
                    }
                }
                env.queue.notify.notified().await;
                last_work = Instant::now();
                continue;
            }
            if !lock(&self.outstanding).has_room() {
                // Back-pressure: the next command waits until a reply makes room.
                if let Err(e) = tx.flush().await {
                    return StopReason::BackendLost(e.to_string());
                }
                let notified = env.queue.notify.notified();
                if !lock(&self.outstanding).has_room() {
                    notified.await;
                }
                continue;
            }
            if env.fast_doorbells && !polling {
                env.doorbells.set_polling(q, true);
                polling = true;
            }
            let mut raw = [0u8; Command::SIZE];
            let at = env.regs.sq_base + u64::from(head) * Command::SIZE as u64;
            // One view of guest memory per descriptor, never held across a wait.
            let mem = env.mem.snapshot();
            if mem.read(at, &mut raw).is_err() {
                warn!(device = %env.device, queue = q, "submission ring no longer mapped");
                return StopReason::RingFault;
            }
            let cmd = Command::from_bytes(&raw);
            head = (head + 1) % size;
            env.queue
                .sq_head
                .store(head, std::sync::atomic::Ordering::Release);
            let s = seq;
            seq += 1;
            match self.prepare(&mem, &cmd, max_data) {
                Prepared::Done(r, v0, v1) => self.complete_in(&mem, s, cmd.cid, r, v0, v1, false),
                Prepared::Send(out) => {
                    drop(mem);
                    let sent = self.send(&mut tx, cmd.cid, s, out).await;
                    if let Err(e) = sent {
                        return StopReason::BackendLost(e.to_string());
                    }
                }
            }
            last_work = Instant::now();
        }
    }

    /// The reply task: runs until the session ends (then stops the worker) or it is aborted.
    async fn replies(self: Arc<Self>, mut rx: Receiver) {
        let why = loop {
            let head = match rx.head().await {
                Ok(h) => h,
                Err(e) => break e.to_string(),
            };
            match head.header.kind {
                FrameKind::Reply => {}
                FrameKind::Goodbye => {
                    let reason = match &head.ctrl {
                        Ctrl::Bytes(b) => match netgpu_proto::wire::ops::decode(b) {
                            Ok(netgpu_proto::wire::ops::Reply::Error(s)) => s,
                            _ => "no reason given".into(),
                        },
                        Ctrl::Oversized(_) => "no reason given".into(),
                    };
                    break format!(
                        "backend closed the session ({}): {reason}",
                        head.header.status
                    );
                }
                FrameKind::Request => break "backend sent a request frame".into(),
                // The backend holds the session's requests back; it is alive.
                FrameKind::Busy => continue,
            }
            let id = head.header.request_id;
            let waiting = lock(&self.inflight).remove(&id);
            if waiting.is_none() && id != 0 && id == self.probe_id.load(Ordering::Acquire) {
                // A liveness probe's answer: the bytes themselves were the point.
                if let Err(e) = rx.discard(u64::from(head.header.data_len)).await {
                    break e.to_string();
                }
                continue;
            }
            let Some(w) = waiting else {
                break format!(
                    "backend answered unknown request {}",
                    head.header.request_id
                );
            };
            if let Err(e) = self.reply(&mut rx, w, head).await {
                break e.to_string();
            }
        };
        warn!(device = %self.env.device, queue = self.q(), "queue's backend session ended: {why}");
        self.stop(StopReason::BackendLost(why));
    }

    /// Handles one reply: its data into the command's output, then the command's progress.
    async fn reply(
        self: &Arc<Self>,
        rx: &mut Receiver,
        w: Waiting,
        head: Head,
    ) -> session::Result<()> {
        let h = head.header;
        let data_len = u64::from(h.data_len);
        let mut r = self.shape(&w, h.status, &head.ctrl, data_len);
        if r.result.is_success() && data_len > 0 {
            let skip = w.out_skip + r.data_at;
            if !rx
                .data_into(&self.env.mem, &w.cmd.output, skip, data_len)
                .await?
            {
                r = DeviceReply::status(CuResult::INVALID_VALUE);
            }
        } else {
            rx.discard(data_len).await?;
        }
        self.conclude(w, r, h.console_pending());
        Ok(())
    }

    /// What a reply means for its command, before its data section is read: the data goes
    /// to `data_at` of the part's output if the result is SUCCESS.
    fn shape(&self, w: &Waiting, status: CuResult, ctrl: &Ctrl, data_len: u64) -> DeviceReply {
        match ctrl {
            Ctrl::Oversized(n) => {
                warn!(device = %self.env.device, queue = self.q(), cid = w.cmd.cid, ctrl_len = n,
                    "backend reply exceeds the control section limit; failing the command");
                DeviceReply::status(CuResult::UNKNOWN)
            }
            Ctrl::Bytes(ctrl) => {
                match codec::encode_reply(w.form, status, ctrl, data_len, w.out_len) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(device = %self.env.device, queue = self.q(), cid = w.cmd.cid,
                            "backend reply does not fit the command: {e}");
                        DeviceReply::status(CuResult::UNKNOWN)
                    }
                }
            }
        }
    }

    /// After a reply's data: writes its output bytes, counts the part done and completes the
    /// command once all its replies are in.
    fn conclude(self: &Arc<Self>, w: Waiting, mut r: DeviceReply, console: bool) {
        let cmd = &w.cmd;
        if r.result.is_success() && cmd.effect == Effect::MemInfo {
            let wire = w.form == ReplyForm::Wire;
            if let Some(q) = lock(&self.quota).as_ref() {
                let ctrl = wire.then_some(&mut r.output);
                q.clamp_mem_info(&mut r.value0, &mut r.value1, ctrl);
            }
            if wire {
                r.value0 = r.output.len() as u64;
            }
        }
        if r.result.is_success()
            && !r.output.is_empty()
            && cmd
                .output
                .scatter(&self.env.mem.snapshot(), w.out_skip, &r.output)
                .is_err()
        {
            r = DeviceReply::status(CuResult::INVALID_VALUE);
        }
        let done = {
            let mut st = lock(&cmd.state);
            if !r.result.is_success() && st.error.is_none() {
                st.error = Some(r.result);
            }
            if w.last {
                st.values = (r.value0, r.value1);
            }
            st.console |= console;
            st.remaining = st.remaining.saturating_sub(1);
            (st.remaining == 0).then_some((st.error, st.values, st.console))
        };
        if let Some((error, (v0, v1), console)) = done {
            {
                let mut o = lock(&self.outstanding);
                let was_full = !o.has_room();
                o.commands = o.commands.saturating_sub(1);
                o.entries = o.entries.saturating_sub(cmd.output.entries());
                if was_full {
                    self.env.queue.wake(); // the submit loop waits for room
                }
            }
            let result = error.unwrap_or(CuResult::SUCCESS);
            let (v0, v1) = match (result.is_success(), cmd.data_form) {
                (false, _) => (0, 0),
                (true, true) => (cmd.output.len(), v1),
                (true, false) => (v0, v1),
            };
            self.settle(cmd.effect, result, v0);
            self.complete(cmd.seq, cmd.cid, result, v0, v1, console);
        }
    }
}

/// A backend reply for [`offline`].
pub(crate) struct OfflineReply {
    pub status: CuResult,
    pub ctrl: Ctrl,
    pub data_len: u64,
    pub console: bool,
}

/// Runs the submission ring of `env` from 0 to `tail` through everything the device does
/// with hostile input (descriptor, scatter list, directions, decoding, planning, the memory
/// limit, reply shaping, output and completion writes) with `answer` standing in for the
/// backend: the fuzz targets' way in, without sockets. Reply data is a fixed pattern.
pub(crate) fn offline(
    env: QueueEnv,
    tail: u32,
    max_data: u64,
    mut answer: impl FnMut(&netgpu_proto::wire::ops::Request) -> OfflineReply,
) -> StopReason {
    let quota = Quota::new(Arc::clone(&env.mem_used), env.memory_limit);
    let cq = CompletionRing::new(env.regs.cq_base, env.regs.size, env.out_of_order);
    let pipe = Arc::new(Pipe {
        env,
        cq: Mutex::new(cq),
        inflight: Mutex::new(HashMap::new()),
        quota: Mutex::new(Some(quota)),
        outstanding: Mutex::new(Outstanding::default()),
        probe_wanted: AtomicBool::new(false),
        probe_id: AtomicU64::new(0),
    });
    let size = pipe.env.regs.size;
    if tail >= size {
        return StopReason::BadDoorbell { tail };
    }
    let mut head = 0u32;
    let mut seq = 0u64;
    while head != tail && !pipe.env.ctl.is_stopped() {
        let mut raw = [0u8; Command::SIZE];
        let at = pipe.env.regs.sq_base + u64::from(head) * Command::SIZE as u64;
        if pipe.env.mem.snapshot().read(at, &mut raw).is_err() {
            pipe.stop(StopReason::RingFault);
            break;
        }
        let cmd = Command::from_bytes(&raw);
        head = (head + 1) % size;
        pipe.env
            .queue
            .sq_head
            .store(head, std::sync::atomic::Ordering::Release);
        let s = seq;
        seq += 1;
        let out = match pipe.prepare(&pipe.env.mem.snapshot(), &cmd, max_data) {
            Prepared::Done(r, v0, v1) => {
                pipe.complete(s, cmd.cid, r, v0, v1, false);
                continue;
            }
            Prepared::Send(out) => out,
        };
        let c = Pipe::new_cmd(cmd.cid, s, &out.plan, out.output, out.data_form);
        let mut data_ok = true;
        for (i, part) in out.plan.parts.iter().enumerate() {
            if part.data_len > 0 {
                // What the sender would stream: every chunk must still be readable.
                let mut done = 0;
                while done < part.data_len && data_ok {
                    let n = (part.data_len - done).min(session::CHUNK);
                    data_ok = out
                        .input
                        .slice(part.data_skip + done, n, 256)
                        .ok()
                        .and_then(|(ranges, got)| {
                            done += got;
                            pipe.env
                                .mem
                                .snapshot()
                                .with_iovecs(&ranges, false, |_| ())
                                .ok()
                        })
                        .is_some();
                }
                if !data_ok {
                    lock(&c.state).error.get_or_insert(CuResult::INVALID_VALUE);
                }
            }
            let Some(w) = Pipe::waiting(&c, &out.plan, i) else {
                continue;
            };
            let reply = answer(&part.request);
            let mut r = pipe.shape(&w, reply.status, &reply.ctrl, reply.data_len);
            if r.result.is_success() && reply.data_len > 0 {
                let data = vec![0x5au8; reply.data_len.min(1 << 20) as usize];
                let skip = w.out_skip + r.data_at;
                if reply.data_len > data.len() as u64
                    || w.cmd
                        .output
                        .scatter(&pipe.env.mem.snapshot(), skip, &data)
                        .is_err()
                {
                    r = DeviceReply::status(CuResult::INVALID_VALUE);
                }
            }
            pipe.conclude(w, r, reply.console);
        }
        if out.plan.posted {
            pipe.posted(&c, data_ok);
        }
    }
    drop(lock(&pipe.quota).take());
    pipe.env.ctl.reason()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::memfd;
    use netgpu_proto::abi::{op, SgEntry};
    use netgpu_proto::wire::ops::{self, Reply, Request};

    const SQ: u64 = 0x1000;
    const CQ: u64 = 0x2000;

    fn env(mem: &Arc<GuestMemory>, limit: u64, out_of_order: bool) -> QueueEnv {
        QueueEnv {
            device: "t".into(),
            queue: Arc::new(QueueShared::new(0)),
            regs: QueueRegs {
                sq_base: SQ,
                cq_base: CQ,
                size: 8,
                vector: abi::NO_VECTOR,
                coalesce_usecs: 0,
                coalesce_count: 0,
            },
            ctl: Arc::new(RunControl::default()),
            mem: Arc::clone(mem),
            irqs: Arc::new(Mutex::new(Interrupts::new("t"))),
            doorbells: Arc::new(DoorbellPage::new().unwrap()),
            fast_doorbells: false,
            out_of_order,
            session: session::Options {
                addr: String::new(),
                token: String::new(),
                client: String::new(),
                limits: Default::default(),
                timeout: Duration::ZERO,
                transport: Default::default(),
            },
            attempt: None,
            mem_used: Arc::new(AtomicU64::new(0)),
            memory_limit: limit,
            poll: Duration::ZERO,
        }
    }

    fn guest() -> Arc<GuestMemory> {
        let m = Arc::new(GuestMemory::new());
        m.map(0, 0x10_0000, 0, true, Some(memfd(0x10_0000)))
            .unwrap();
        m
    }

    fn put(mem: &GuestMemory, slot: u32, c: Command) {
        mem.snapshot()
            .write(SQ + u64::from(slot) * Command::SIZE as u64, &c.to_bytes())
            .unwrap();
    }

    fn completion(mem: &GuestMemory, slot: u32) -> Completion {
        let mut b = [0u8; Completion::SIZE];
        mem.snapshot()
            .read(CQ + u64::from(slot) * Completion::SIZE as u64, &mut b)
            .unwrap();
        Completion::from_bytes(&b)
    }

    fn reply(r: &Reply, data_len: u64) -> OfflineReply {
        OfflineReply {
            status: CuResult::SUCCESS,
            ctrl: Ctrl::Bytes(ops::encode(r).unwrap()),
            data_len,
            console: false,
        }
    }

    #[test]
    fn each_command_completes_with_its_own_result_and_the_limit_holds() {
        let mem = guest();
        put(&mem, 0, Command::new(op::NOP, 1, &[]));
        put(&mem, 1, Command::new(0x7777, 2, &[]));
        put(&mem, 2, Command::new(op::MEM_ALLOC, 3, &[1, 600]));
        put(&mem, 3, Command::new(op::MEM_ALLOC, 4, &[1, 600]));
        put(&mem, 4, Command::new(op::MEM_GET_INFO, 5, &[]));
        let mut seen = Vec::new();
        let why = offline(env(&mem, 1000, false), 5, 1 << 20, |req| {
            seen.push(req.clone());
            match req {
                Request::MemAlloc { .. } => reply(&Reply::DevPtr(0xd000), 0),
                _ => reply(
                    &Reply::MemInfo {
                        free: 1 << 40,
                        total: 1 << 41,
                    },
                    0,
                ),
            }
        });
        assert_eq!(why, StopReason::Stopped);
        let c: Vec<Completion> = (0..5).map(|s| completion(&mem, s)).collect();
        let r: Vec<(u32, CuResult)> = c.iter().map(|c| (c.cid, CuResult(c.result))).collect();
        assert_eq!(
            r,
            vec![
                (1, CuResult::SUCCESS),
                (2, CuResult::NOT_SUPPORTED),
                (3, CuResult::SUCCESS),
                (4, CuResult::OUT_OF_MEMORY),
                (5, CuResult::SUCCESS),
            ]
        );
        assert_eq!(c[2].value0, 0xd000);
        assert_eq!(
            (c[4].value0, c[4].value1),
            (400, 1000),
            "clamped to the limit"
        );
        assert_eq!(
            seen.len(),
            2,
            "the refused allocation never reached the backend"
        );
        assert_eq!(c[4].sq_head, 5);
    }

    #[test]
    fn a_reply_that_does_not_fit_its_command_fails_only_that_command() {
        let mem = guest();
        let out = SgEntry::device_write(0x8000, 16);
        put(
            &mem,
            0,
            Command::new(op::MEMCPY_DTOH, 1, &[1, 0, 0]).with_sg(&[out]),
        );
        put(
            &mem,
            1,
            Command::new(op::MEMCPY_DTOH, 2, &[1, 0, 0]).with_sg(&[out]),
        );
        let mut n = 0;
        offline(env(&mem, 0, true), 2, 1 << 20, |_| {
            n += 1;
            // The first reply carries 17 bytes for a 16-byte copy.
            reply(&Reply::Done, if n == 1 { 17 } else { 16 })
        });
        assert_eq!(CuResult(completion(&mem, 0).result), CuResult::UNKNOWN);
        let c = completion(&mem, 1);
        assert_eq!(
            (c.cid, CuResult(c.result), c.value0),
            (2, CuResult::SUCCESS, 16)
        );
        let mut b = [0u8; 16];
        mem.snapshot().read(0x8000, &mut b).unwrap();
        assert_eq!(b, [0x5a; 16]);
    }

    #[test]
    fn a_wire_control_section_must_be_a_buffer_of_its_own() {
        let mem = guest();
        let req = ops::encode(&Request::MemGetInfo).unwrap();
        let mut both = req.clone();
        both.extend_from_slice(&[0; 4]);
        mem.snapshot().write(0x8000, &both).unwrap();
        let n = req.len() as u64;
        let out = SgEntry::device_write(0x9000, 64);
        // Control and 4 bytes more in one entry: the split would fall inside it.
        put(
            &mem,
            0,
            Command::new(op::WIRE_REQUEST, 1, &[n])
                .with_sg(&[SgEntry::new(0x8000, both.len() as u32), out]),
        );
        // The control section as its own entry.
        put(
            &mem,
            1,
            Command::new(op::WIRE_REQUEST, 2, &[n]).with_sg(&[SgEntry::new(0x8000, n as u32), out]),
        );
        let mut asked = 0;
        offline(env(&mem, 0, true), 2, 1 << 20, |_| {
            asked += 1;
            reply(&Reply::MemInfo { free: 1, total: 2 }, 0)
        });
        assert_eq!(
            CuResult(completion(&mem, 0).result),
            CuResult::INVALID_VALUE
        );
        let c = completion(&mem, 1);
        assert_eq!((c.cid, c.result), (2, 0));
        assert_eq!(asked, 1);
    }

    #[test]
    fn an_unmapped_completion_ring_stops_the_queue_with_a_ring_fault() {
        let mem = guest();
        put(&mem, 0, Command::new(op::NOP, 1, &[]));
        let mut e = env(&mem, 0, true);
        e.regs.cq_base = 0x20_0000;
        let ctl = Arc::clone(&e.ctl);
        offline(e, 1, 1 << 20, |_| reply(&Reply::Done, 0));
        assert_eq!(ctl.reason(), StopReason::RingFault);
    }
}
