//! Streams: ordered queues of work that run on the executor's pool (the CPU executor runs
//! the work itself; the CUDA executor submits it to real CUDA streams in the same order).
//!
//! Each stream (and each context's null stream) is a [`StreamQ`]: a FIFO of [`Item`]s with a
//! sequence number per item. A stream with work is owned by one pool job at a time (a
//! *strand*), which runs its items in order; different streams run on different pool threads
//! at once. An item may depend on [`Fence`]s of other streams (the legacy null stream's
//! implicit synchronisation, `StreamWaitEvent`): a strand whose next item waits gives its
//! thread back and is resubmitted by the fence's callback. Fences only point at work
//! dispatched earlier, so waiting can never form a cycle.
//!
//! [`Gate`] coordinates the zero-copy paths with running work: every item that touches
//! device memory runs *shared*; a copy straight between the socket and device memory takes it
//! *exclusive*, and only when it is free at once (otherwise the copy is staged), so no bytes
//! it reads or writes change under it.
//!
//! Locks: a stream's lock is never held while another lock is taken or a callback runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use netgpu_proto::cuda::CuResult;

use super::cpu::memory::Range;
use crate::executor::completion::{JoinCounter, Signal};
use crate::executor::pool::Pool;
use crate::executor::{Completion, Console, ExecResult, HostBuf, Output, Sink};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What work of a session that is ending (its client gone, the backend shutting down) reports
/// instead of running: the device is gone for it.
pub const CANCELLED: CuResult = CuResult::DEVICE_UNAVAILABLE;

/// Shared/exclusive access to a session's device memory (see the module docs). Taking and
/// leaving it shared is two atomic operations; only a shared taker that finds it exclusive
/// waits (on a condition variable, woken when the exclusive holder lets go).
#[derive(Default)]
pub struct Gate {
    /// `EXCLUSIVE` bit, plus the number of shared holders.
    state: AtomicUsize,
    waiters: AtomicUsize,
    m: Mutex<()>,
    cv: Condvar,
}

const EXCLUSIVE: usize = 1 << (usize::BITS - 1);

impl Gate {
    /// Shared access if no exclusive holder copies right now.
    pub fn try_shared(&self) -> Option<SharedGuard<'_>> {
        let mut s = self.state.load(Ordering::SeqCst);
        loop {
            if s & EXCLUSIVE != 0 {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(SharedGuard(self)),
                Err(x) => s = x,
            }
        }
    }

    /// Shared access, waiting while an exclusive holder copies.
    pub fn shared(&self) -> SharedGuard<'_> {
        if let Some(g) = self.try_shared() {
            return g;
        }
        let mut m = lock(&self.m);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let g = loop {
            if let Some(g) = self.try_shared() {
                break g;
            }
            m = self.cv.wait(m).unwrap_or_else(|p| p.into_inner());
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// Exclusive access if nothing holds the gate right now.
    pub fn try_exclusive(&self) -> bool {
        self.state
            .compare_exchange(0, EXCLUSIVE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub fn release_exclusive(&self) {
        self.state.fetch_and(!EXCLUSIVE, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _m = lock(&self.m);
            self.cv.notify_all();
        }
    }
}

pub struct SharedGuard<'a>(&'a Gate);

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.0.state.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every stream of one session shares.
pub struct Exec {
    pub pool: Pool,
    pub gate: Gate,
    pub sink: Arc<dyn Sink>,
    pub console: Arc<Console>,
    pub kernel_time_limit: Option<Duration>,
    pub staging: Arc<Staging>,
    /// Set when the session ends: queued work is skipped, running kernels stop.
    pub cancelled: Arc<AtomicBool>,
    /// Items queued or running.
    active: AtomicUsize,
    idle_waiters: AtomicUsize,
    /// Waiters want a wake-up once `active` is below this (the largest any asked for).
    wake_below: AtomicUsize,
    idle_m: Mutex<()>,
    idle: Condvar,
}

impl Exec {
    pub fn new(
        pool: Pool,
        sink: Arc<dyn Sink>,
        console: Arc<Console>,
        kernel_time_limit: Option<Duration>,
    ) -> Arc<Exec> {
        Arc::new(Exec {
            pool,
            gate: Gate::default(),
            sink,
            console,
            kernel_time_limit,
            staging: Arc::new(Staging::default()),
            cancelled: Arc::new(AtomicBool::new(false)),
            active: AtomicUsize::new(0),
            idle_waiters: AtomicUsize::new(0),
            wake_below: AtomicUsize::new(1),
            idle_m: Mutex::new(()),
            idle: Condvar::new(),
        })
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The result of waiting for work of a context in `state`: the context's sticky error,
    /// or [`CANCELLED`] once the session is ending (its work did not all run).
    pub fn outcome(&self, state: &CtxState) -> ExecResult<()> {
        if self.is_cancelled() {
            return Err(CANCELLED);
        }
        state.check()
    }

    /// Waits until no item is queued or running, at most `timeout`; true if idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_backlog(1, timeout)
    }

    /// Items queued or running (not counting work that ran at once on the dispatcher).
    pub fn backlog(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Waits until fewer than `below` items are queued or running, at most `timeout`; true
    /// if so.
    pub fn wait_backlog(&self, below: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut m = lock(&self.idle_m);
        self.wake_below.fetch_max(below, Ordering::SeqCst);
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let idle = loop {
            if self.active.load(Ordering::SeqCst) < below {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            m = self
                .idle
                .wait_timeout(m, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        self.idle_waiters.fetch_sub(1, Ordering::SeqCst);
        idle
    }

    fn item_added(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    fn items_done(&self, n: usize) {
        if n == 0 {
            return;
        }
        let left = self.active.fetch_sub(n, Ordering::SeqCst).saturating_sub(n);
        if self.idle_waiters.load(Ordering::SeqCst) > 0
            && left < self.wake_below.load(Ordering::SeqCst)
        {
            let _m = lock(&self.idle_m);
            self.idle.notify_all();
        }
    }
}

/// A context's state that its running work sees.
#[derive(Default)]
pub struct CtxState {
    /// A sticky launch error (`CUresult`), 0 when healthy.
    poisoned: AtomicU32,
}

impl CtxState {
    pub fn poisoned(&self) -> Option<CuResult> {
        match self.poisoned.load(Ordering::Acquire) {
            0 => None,
            e => Some(CuResult(e)),
        }
    }

    /// Poisons the context with a sticky error (the first one stays).
    pub fn poison(&self, e: CuResult) {
        if e.is_sticky() {
            let _ = self
                .poisoned
                .compare_exchange(0, e.0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub fn check(&self) -> ExecResult<()> {
        match self.poisoned() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What running an item produced.
pub enum Step {
    Done(ExecResult<Output>),
    /// The result goes to the completion now; the item counts as finished (later work on the
    /// stream may start) only when the signal fires (a zero-copy reply has been written).
    DoneAfter(ExecResult<Output>, Arc<Signal>),
}

pub type PlainFn = Box<dyn FnOnce() -> ExecResult<Output> + Send>;
pub type MemoryFn = Box<dyn FnOnce(&Arc<Exec>) -> ExecResult<Output> + Send>;

/// One item's work.
pub enum Work {
    /// Touches no device memory (event records, waits).
    Plain(PlainFn),
    /// Touches device memory: runs with the gate shared.
    Memory(MemoryFn),
    /// A device-to-host copy: straight from device memory under the exclusive gate when that
    /// is free at once, else copied out under the shared gate.
    ToHost(Range),
}

impl Work {
    pub fn nop() -> Work {
        Work::Plain(Box::new(|| Ok(Output::Done)))
    }
}

/// Runs `work`. With `wait` false it never blocks: work that would have to wait for the gate
/// comes back unrun.
pub fn run(work: Work, exec: &Arc<Exec>, wait: bool) -> Result<Step, Work> {
    match work {
        Work::Plain(f) => Ok(Step::Done(f())),
        Work::Memory(f) => {
            let g = if wait {
                exec.gate.shared()
            } else {
                match exec.gate.try_shared() {
                    Some(g) => g,
                    None => return Err(Work::Memory(f)),
                }
            };
            let r = f(exec);
            drop(g);
            Ok(Step::Done(r))
        }
        Work::ToHost(range) => {
            let n = range.len as usize;
            if n == 0 {
                return Ok(Step::Done(Ok(Output::Data(HostBuf::from_vec(Vec::new())))));
            }
            if exec.gate.try_exclusive() {
                // Zero-copy: the reply is written straight from device memory; no other work
                // of the session touches device memory until it has been.
                let sig = Signal::new();
                let (e2, s2) = (exec.clone(), sig.clone());
                let ptr = range.ptr();
                // SAFETY: the range holds its allocation; the exclusive gate keeps every other
                // piece of work off device memory until the buffer is released.
                let buf = unsafe {
                    HostBuf::borrowed(
                        ptr,
                        n,
                        Box::new(range),
                        Some(Box::new(move || {
                            e2.gate.release_exclusive();
                            s2.fire();
                        })),
                    )
                };
                return Ok(Step::DoneAfter(Ok(Output::Data(buf)), sig));
            }
            let g = if wait {
                exec.gate.shared()
            } else {
                match exec.gate.try_shared() {
                    Some(g) => g,
                    None => return Err(Work::ToHost(range)),
                }
            };
            let mut v = vec![0u8; n];
            // SAFETY: the range holds its allocation and is `n` bytes long.
            unsafe { std::ptr::copy_nonoverlapping(range.ptr().as_ptr(), v.as_mut_ptr(), n) };
            drop(g);
            Ok(Step::Done(Ok(Output::Data(HostBuf::from_vec(v)))))
        }
    }
}

pub struct Item {
    seq: u64,
    deps: Vec<Fence>,
    work: Option<Work>,
    done: Option<Completion>,
}

struct Inner {
    queue: VecDeque<Item>,
    /// Sequence number of the last item queued / finished.
    enqueued: u64,
    completed: u64,
    /// A strand owns the stream (queued on the pool, running, or waiting for a fence).
    running: bool,
    waiters: Vec<(u64, Box<dyn FnOnce() + Send>)>,
}

/// One stream's queue; see the module docs.
pub struct StreamQ {
    pub exec: Arc<Exec>,
    pub ctx: Arc<CtxState>,
    /// Pool priority: higher runs first when the pool is saturated.
    pub pool_priority: i32,
    /// `CU_STREAM_NON_BLOCKING` streams do not synchronise with the legacy null stream.
    pub non_blocking: bool,
    /// Destroyed by the client (still drains its queue).
    pub destroyed: AtomicBool,
    inner: Mutex<Inner>,
}

/// "All work queued on a stream up to item `seq`", or a one-shot signal.
#[derive(Clone)]
pub enum Fence {
    Stream(Arc<StreamQ>, u64),
    Signal(Arc<Signal>),
}

impl Fence {
    pub fn is_done(&self) -> bool {
        match self {
            Fence::Stream(q, seq) => lock(&q.inner).completed >= *seq,
            Fence::Signal(s) => s.is_fired(),
        }
    }

    /// Runs `f` once the fence is passed (at once, on this thread, if it is).
    pub fn on_done(&self, f: impl FnOnce() + Send + 'static) {
        match self {
            Fence::Stream(q, seq) => {
                {
                    let mut g = lock(&q.inner);
                    if g.completed < *seq {
                        g.waiters.push((*seq, Box::new(f)));
                        return;
                    }
                }
                f();
            }
            Fence::Signal(s) => s.on_fire(f),
        }
    }
}

/// Runs `then` once every fence has passed.
pub fn when_all(fences: Vec<Fence>, then: impl FnOnce() + Send + 'static) {
    let j = JoinCounter::new(fences.len(), then);
    for f in fences {
        let j = j.clone();
        f.on_done(move || j.arrive());
    }
}

impl StreamQ {
    pub fn new(
        exec: Arc<Exec>,
        ctx: Arc<CtxState>,
        non_blocking: bool,
        pool_priority: i32,
    ) -> Arc<StreamQ> {
        Arc::new(StreamQ {
            exec,
            ctx,
            pool_priority,
            non_blocking,
            destroyed: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                enqueued: 0,
                completed: 0,
                running: false,
                waiters: Vec::new(),
            }),
        })
    }

    /// The fence of the last item queued, or `None` when everything queued has finished.
    pub fn last(self: &Arc<Self>) -> Option<Fence> {
        let g = lock(&self.inner);
        (g.completed < g.enqueued).then(|| Fence::Stream(self.clone(), g.enqueued))
    }

    /// Whether the stream has nothing queued or running.
    pub fn is_idle(&self) -> bool {
        let g = lock(&self.inner);
        g.completed == g.enqueued && !g.running
    }

    /// Queues an item. Returns its fence and whether the stream needs a strand (the caller
    /// hands it to [`kick`] now or later).
    pub fn push(
        self: &Arc<Self>,
        deps: Vec<Fence>,
        work: Work,
        done: Option<Completion>,
    ) -> (Fence, bool) {
        self.exec.item_added();
        let mut g = lock(&self.inner);
        g.enqueued += 1;
        let seq = g.enqueued;
        g.queue.push_back(Item {
            seq,
            deps,
            work: Some(work),
            done,
        });
        let start = !g.running;
        g.running = true;
        (Fence::Stream(self.clone(), seq), start)
    }
}

/// A context's streams: its legacy null stream and every stream created in it (destroyed ones
/// until they drain), with CUDA's implicit ordering between them.
pub struct StreamSet {
    pub null: Arc<StreamQ>,
    pub streams: Vec<Arc<StreamQ>>,
}

impl StreamSet {
    pub fn new(null: Arc<StreamQ>) -> StreamSet {
        StreamSet {
            null,
            streams: Vec::new(),
        }
    }

    /// Fences of all work queued in the context.
    pub fn all_work(&self) -> Vec<Fence> {
        std::iter::once(&self.null)
            .chain(self.streams.iter())
            .filter_map(|q| q.last())
            .collect()
    }

    /// What new work on `q` must wait for besides `q`'s own earlier work: the legacy null
    /// stream and the blocking streams wait for each other; `CU_STREAM_NON_BLOCKING` streams
    /// wait for neither.
    pub fn implicit_deps(&self, q: &Arc<StreamQ>) -> Vec<Fence> {
        if Arc::ptr_eq(q, &self.null) {
            self.streams
                .iter()
                .filter(|s| !s.non_blocking)
                .filter_map(|s| s.last())
                .collect()
        } else if q.non_blocking {
            Vec::new()
        } else {
            self.null.last().into_iter().collect()
        }
    }

    /// Whether work on `q` would run at once: nothing queued before it that it waits for.
    pub fn ready_now(&self, q: &Arc<StreamQ>) -> bool {
        q.is_idle() && self.implicit_deps(q).is_empty()
    }

    /// Adds a new stream (and forgets destroyed ones that have drained).
    pub fn add(&mut self, q: Arc<StreamQ>) {
        self.streams
            .retain(|s| !(s.destroyed.load(Ordering::Acquire) && s.is_idle()));
        self.streams.push(q);
    }
}

/// Host bytes of staged copies a session may have queued before the dispatcher waits for some
/// to finish: a bound on what a client can make the backend buffer.
pub const STAGING_LIMIT: u64 = 256 << 20;

/// Items (launches, copies, memsets, event records, waits) a session may have queued or
/// running before its dispatcher stops reading requests until half of them have finished:
/// a bound on what a client can make the backend hold (each queued launch keeps its
/// parameters, at most `MAX_PARAM_BYTES`: 128 MiB at worst, ~1 MiB for typical kernels),
/// as a GPU's bounded command buffer makes `cuLaunchKernel` block. Deep enough that a
/// launch pipeline never runs dry while the dispatcher waits.
pub const BACKLOG_LIMIT: usize = 4096;

/// The staging budget of one session (see [`STAGING_LIMIT`]).
#[derive(Default)]
pub struct Staging {
    bytes: Mutex<u64>,
    cv: Condvar,
}

impl Staging {
    /// A zeroed buffer of `len` bytes, waiting while the session has too many staged bytes
    /// queued (one buffer larger than the limit is allowed when nothing else is). The caller
    /// must have started its queued work, so that the wait ends.
    pub fn buffer(self: &Arc<Self>, len: usize, cancelled: &AtomicBool) -> HostBuf {
        let n = len as u64;
        {
            let mut b = lock(&self.bytes);
            while *b > 0
                && b.saturating_add(n) > STAGING_LIMIT
                && !cancelled.load(Ordering::Acquire)
            {
                b = self
                    .cv
                    .wait_timeout(b, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            *b += n;
        }
        let me = self.clone();
        HostBuf::from_vec(vec![0u8; len]).then(move || {
            let mut b = lock(&me.bytes);
            *b = b.saturating_sub(n);
            drop(b);
            me.cv.notify_all();
        })
    }

    /// Wakes waiters (the session is ending).
    pub fn wake(&self) {
        self.cv.notify_all();
    }
}

/// Starts a strand for a stream that [`StreamQ::push`] said needs one.
pub fn kick(q: Arc<StreamQ>) {
    let pool = q.exec.pool.clone();
    let prio = q.pool_priority;
    pool.submit(prio, move || run_strand(q));
}

/// Marks items up to `seq` finished (`n` of them) and runs the waiters that passes.
fn finish(q: &Arc<StreamQ>, seq: u64, n: usize) {
    let ready: Vec<Box<dyn FnOnce() + Send>> = {
        let mut g = lock(&q.inner);
        g.completed = g.completed.max(seq);
        let done = g.completed;
        let mut ready = Vec::new();
        let mut i = 0;
        while i < g.waiters.len() {
            if g.waiters[i].0 <= done {
                ready.push(g.waiters.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        ready
    };
    for f in ready {
        f();
    }
    q.exec.items_done(n);
}

/// Items a strand takes from its queue at once (fewer lock round trips per item).
const BATCH: usize = 64;

/// Puts unrun items back at the front of the queue, in order.
fn put_back(q: &Arc<StreamQ>, first: Item, rest: &mut VecDeque<Item>) {
    let mut g = lock(&q.inner);
    for i in rest.drain(..).rev() {
        g.queue.push_front(i);
    }
    g.queue.push_front(first);
}

fn run_strand(q: Arc<StreamQ>) {
    // The items taken from the queue at once (one buffer for the strand's whole run).
    let mut batch: VecDeque<Item> = VecDeque::with_capacity(BATCH);
    loop {
        {
            let mut g = lock(&q.inner);
            if g.queue.is_empty() {
                g.running = false;
                return;
            }
            let n = g.queue.len().min(BATCH);
            batch.extend(g.queue.drain(..n));
        }
        // Items run but not yet marked finished: the last one's sequence number and how many.
        let (mut done_seq, mut done_n) = (0u64, 0usize);
        while let Some(mut item) = batch.pop_front() {
            if let Some(dep) = item.deps.iter().find(|d| !d.is_done()).cloned() {
                if done_n > 0 {
                    finish(&q, done_seq, done_n);
                }
                put_back(&q, item, &mut batch);
                let q2 = q.clone();
                dep.on_done(move || kick(q2));
                return;
            }
            let work = item.work.take();
            let step = if q.exec.is_cancelled() {
                Step::Done(Err(CANCELLED))
            } else if let Some(e) = q.ctx.poisoned() {
                Step::Done(Err(e))
            } else {
                match work.map(|w| run(w, &q.exec, true)) {
                    Some(Ok(step)) => step,
                    // Waiting runs cannot come back unrun.
                    Some(Err(_)) | None => Step::Done(Ok(Output::Done)),
                }
            };
            match step {
                Step::Done(r) => {
                    done_seq = item.seq;
                    done_n += 1;
                    // A reply goes out only once its stream has moved on (a query right
                    // after it must see the work done).
                    if let Some(d) = item.done.take() {
                        finish(&q, done_seq, done_n);
                        done_n = 0;
                        d.complete(r);
                    }
                }
                Step::DoneAfter(r, sig) => {
                    if done_n > 0 {
                        finish(&q, done_seq, done_n);
                    }
                    if !batch.is_empty() {
                        let mut g = lock(&q.inner);
                        for i in batch.drain(..).rev() {
                            g.queue.push_front(i);
                        }
                    }
                    if let Some(d) = item.done.take() {
                        d.complete(r);
                    }
                    let seq = item.seq;
                    let q2 = q.clone();
                    sig.on_fire(move || {
                        finish(&q2, seq, 1);
                        kick(q2);
                    });
                    return;
                }
            }
        }
        if done_n > 0 {
            finish(&q, done_seq, done_n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::completion::Mode;
    use std::sync::mpsc;

    struct Nowhere;
    impl Sink for Nowhere {
        fn complete(&self, _: u64, _: Mode, _: ExecResult<Output>) {}
        fn deferred(&self, _: CuResult) {}
    }

    fn exec() -> Arc<Exec> {
        Exec::new(
            Pool::new("test", 16),
            Arc::new(Nowhere),
            Arc::new(Console::new()),
            None,
        )
    }

    fn stream(e: &Arc<Exec>) -> Arc<StreamQ> {
        StreamQ::new(e.clone(), Arc::new(CtxState::default()), false, 0)
    }

    fn push(q: &Arc<StreamQ>, deps: Vec<Fence>, f: impl FnOnce() + Send + 'static) -> Fence {
        let (fence, start) = q.push(
            deps,
            Work::Plain(Box::new(move || {
                f();
                Ok(Output::Done)
            })),
            None,
        );
        if start {
            kick(q.clone());
        }
        fence
    }

    #[test]
    fn one_stream_runs_in_order_and_two_streams_run_at_once() {
        let e = exec();
        let (a, b) = (stream(&e), stream(&e));
        let (tx, rx) = mpsc::channel();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        // Stream a is held by its first item; stream b must still run.
        push(&a, vec![], move || {
            let _ = hold_rx.recv_timeout(Duration::from_secs(10));
        });
        for i in 0..5 {
            let tx = tx.clone();
            push(&a, vec![], move || tx.send(("a", i)).unwrap());
        }
        let txb = tx.clone();
        push(&b, vec![], move || txb.send(("b", 0)).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), ("b", 0));
        hold_tx.send(()).unwrap();
        let order: Vec<_> = (0..5).map(|_| rx.recv().unwrap().1).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert!(e.wait_idle(Duration::from_secs(5)));
    }

    #[test]
    fn an_item_waits_for_a_fence_of_another_stream() {
        let e = exec();
        let (a, b) = (stream(&e), stream(&e));
        let (tx, rx) = mpsc::channel();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let txa = tx.clone();
        let fa = push(&a, vec![], move || {
            let _ = hold_rx.recv_timeout(Duration::from_secs(10));
            txa.send("a").unwrap();
        });
        let txb = tx.clone();
        let fb = push(&b, vec![fa], move || txb.send("b").unwrap());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert!(!fb.is_done());
        hold_tx.send(()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "a");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "b");
        assert!(e.wait_idle(Duration::from_secs(5)));
        assert!(fb.is_done());
        let (tx2, rx2) = mpsc::channel();
        when_all(
            vec![fb.clone(), Fence::Signal(Signal::fired())],
            move || tx2.send(()).unwrap(),
        );
        rx2.recv_timeout(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn the_gate_is_exclusive_only_when_free() {
        let g = Arc::new(Gate::default());
        let s = g.shared();
        assert!(!g.try_exclusive());
        drop(s);
        assert!(g.try_exclusive());
        assert!(!g.try_exclusive());
        assert!(g.try_shared().is_none());
        // A shared taker waits for the exclusive holder.
        let (tx, rx) = mpsc::channel();
        let g2 = g.clone();
        let t = std::thread::spawn(move || {
            let _s = g2.shared();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        g.release_exclusive();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert!(g.try_exclusive());
    }

    #[test]
    fn cancelled_and_poisoned_work_is_skipped() {
        let e = exec();
        let q = stream(&e);
        q.ctx.poison(CuResult::ILLEGAL_ADDRESS);
        q.ctx.poison(CuResult::MISALIGNED_ADDRESS);
        assert_eq!(q.ctx.poisoned(), Some(CuResult::ILLEGAL_ADDRESS));
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        push(&q, vec![], move || r.store(true, Ordering::SeqCst));
        assert!(e.wait_idle(Duration::from_secs(5)));
        assert!(!ran.load(Ordering::SeqCst));
    }
}
