//! The CPU executor: device memory in host memory ([`memory`]), kernels run by the PTX
//! interpreter (`netgpu-ptx`, through [`kernels`]), stream work on the executor's pool
//! ([`super::streams`]).
//!
//! The engine's tables (contexts, modules, functions, streams, events) sit behind one mutex
//! that the dispatcher and the completions of pool work take briefly; it is never held while a
//! callback runs or a fence is waited on. Stream work holds what it needs (memory ranges,
//! modules) by reference count, so a handle may go away while its work still runs.
//!
//! Ordering (CUDA's, see `docs/backend.md`): each stream runs in order; the legacy null stream
//! waits for earlier work of the context's blocking streams and they wait for its earlier
//! work; `CU_STREAM_NON_BLOCKING` streams do not synchronise with it; `StreamWaitEvent` makes a
//! stream wait for an event's recorded work; frees and context teardown wait for the
//! context's earlier work before memory goes.

mod attributes;
mod kernels;
pub mod memory;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use netgpu_proto::cuda::{func_attr, CuResult};
use netgpu_proto::wire::ops::{
    Copy3D, DevPtr, DeviceInfo, FunctionInfo, Handle, LAUNCH_COOPERATIVE,
};

use super::completion::Signal;
use super::limits::{self, FunctionLimits};
use super::pool::Pool;
use super::streams::{self, kick, when_all, CtxState, Exec, Fence, Step, StreamQ, StreamSet, Work};
use super::{
    memset_len, Completion, Engine, ExecResult, Executor, HandleTable, HostBuf, HtodTarget,
    LaunchDims, Output, SessionSetup,
};
use kernels::{default_dynamic_shared, CpuModule, LaunchControl, LaunchMemory};
use memory::{Heap, MemoryPool, Range};

pub use attributes::PciLocation;

/// Static plus dynamic shared memory a block may use by default.
pub const MAX_SHARED_PER_BLOCK: u32 = 48 * 1024;
/// ... and at most, after `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)`.
pub const MAX_SHARED_OPTIN: u32 = 64 * 1024;
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
pub const COMPUTE_CAPABILITY: (u32, u32) = (8, 0);
/// `cuCtxGetStreamPriorityRange`: (least, greatest); lower numbers are higher priorities.
pub const STREAM_PRIORITY_RANGE: (i32, i32) = (0, -5);
/// Copies up to this size run at once on the dispatcher when their stream is idle (a pool
/// hand-off costs more than the copy).
const INLINE_LIMIT: u64 = 1 << 20;
/// Streams handed to the pool in one go at the latest (the session flushes at the end of
/// every burst of input anyway).
const KICK_BATCH: usize = 64;
/// Most threads of the executor's pool (all sessions together).
const POOL_THREADS: usize = 1024;

pub struct CpuExecutor {
    info: DeviceInfo,
    pool: Arc<MemoryPool>,
    threads: usize,
    workers: Pool,
}

impl CpuExecutor {
    pub fn new(name: &str, total_memory: u64, threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let mut uuid = [0u8; 16];
        uuid[..4].copy_from_slice(b"NGPU");
        let pci = PciLocation::for_name(name);
        uuid[4..8].copy_from_slice(&(pci.bus as u32).to_le_bytes());
        CpuExecutor {
            info: DeviceInfo {
                name: name.to_string(),
                total_mem: total_memory,
                cc_major: COMPUTE_CAPABILITY.0,
                cc_minor: COMPUTE_CAPABILITY.1,
                multiprocessors: threads as u32,
                uuid,
                driver_version: 0,
                executor: "cpu".to_string(),
                attributes: attributes::table(threads as u32, pci),
            },
            pool: MemoryPool::new(total_memory),
            threads,
            workers: Pool::new("cpu-exec", POOL_THREADS),
        }
    }

    /// Device memory held by all sessions together.
    pub fn memory_used(&self) -> u64 {
        self.pool.used()
    }

    /// Pool threads running work right now (all sessions).
    pub fn busy_threads(&self) -> usize {
        self.workers.busy()
    }
}

impl Executor for CpuExecutor {
    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    fn open(&self, setup: SessionSetup) -> ExecResult<Box<dyn Engine>> {
        let exec = Exec::new(
            self.workers.clone(),
            setup.sink,
            setup.console,
            setup.kernel_time_limit,
        );
        Ok(Box::new(CpuEngine {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                heap: Arc::new(Heap::new(
                    self.pool.clone(),
                    setup.tenant_memory.clone(),
                    setup.quota.min(self.pool.total()),
                )),
                exec,
                seq: AtomicU64::new(1),
                threads: self.threads,
                kicks_pending: AtomicBool::new(false),
            }),
        }))
    }
}

struct Ctx {
    state: Arc<CtxState>,
    set: StreamSet,
}

struct Module {
    ctx: Handle,
    data: Arc<CpuModule>,
}

struct Function {
    ctx: Handle,
    module: Handle,
    data: Arc<CpuModule>,
    kernel: Arc<str>,
    /// The kernel in `data`'s module (each launch takes it without a name lookup).
    kernel_id: netgpu_ptx::KernelId,
    span: u32,
    /// `.maxntid`/`.reqntid` limits of the kernel.
    max_threads: u32,
    reqntid: Option<[u32; 3]>,
    shared_static: u32,
    max_dynamic_shared: u32,
    carveout: i32,
    /// The kernel's most instructions per thread when it cannot loop (see [`INLINE_STEPS`]).
    max_steps: Option<u32>,
}

/// Most thread-instructions (the kernel's bound on instructions per thread times the
/// launch's threads) of a launch the dispatcher runs itself when its stream is idle, instead
/// of handing it to the stream's pool thread: a launch that cannot loop and is this small
/// (an empty kernel, a bounds-checked one-element-per-thread kernel of a few blocks) costs
/// less than the hand-off, and keeps the dispatcher busy for microseconds at most.
pub const INLINE_STEPS: u64 = 8192;

/// Whether a launch of a kernel with `max_steps` and `dims` is small enough for the
/// dispatcher to run (see [`INLINE_STEPS`]); cooperative launches never are.
fn small_launch(max_steps: Option<u32>, dims: &LaunchDims, cooperative: bool) -> bool {
    !cooperative
        && max_steps.is_some_and(|s| {
            u64::from(s)
                .saturating_mul(dims.threads_per_block())
                .saturating_mul(dims.blocks())
                <= INLINE_STEPS
        })
}

struct Recorded {
    fence: Fence,
    stamp: Arc<OnceLock<Instant>>,
}

struct Event {
    ctx: Handle,
    timing: bool,
    last: Option<Recorded>,
}

#[derive(Default)]
struct State {
    ctxs: HandleTable<Ctx>,
    modules: HandleTable<Module>,
    functions: HandleTable<Function>,
    /// `(module, kernel name)` to its function handle: one handle per kernel, as in CUDA.
    function_names: HashMap<(Handle, String), Handle>,
    streams: HandleTable<Arc<StreamQ>>,
    events: HandleTable<Event>,
    /// Streams with new work not yet handed to the pool.
    kicks: Vec<Arc<StreamQ>>,
    /// Releases waiting for running work (an allocation that does not fit waits for them).
    releases: Vec<Arc<Signal>>,
}

impl State {
    fn ctx(&self, ctx: Handle) -> ExecResult<&Ctx> {
        let c = self.ctxs.get(ctx).ok_or(CuResult::INVALID_CONTEXT)?;
        c.state.check()?;
        Ok(c)
    }

    /// The stream `stream` of `ctx` (0: its null stream).
    fn stream(&self, ctx: Handle, stream: Handle) -> ExecResult<Arc<StreamQ>> {
        self.stream_of(self.ctx(ctx)?, stream).cloned()
    }

    /// The stream `stream` of context `c` (0: its null stream), borrowed.
    fn stream_of<'a>(&'a self, c: &'a Ctx, stream: Handle) -> ExecResult<&'a Arc<StreamQ>> {
        if stream == 0 {
            return Ok(&c.set.null);
        }
        match self.streams.get(stream) {
            Some(q) if Arc::ptr_eq(&q.ctx, &c.state) => Ok(q),
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    /// The context handle a stream belongs to.
    fn ctx_of_stream(&self, stream: Handle) -> ExecResult<Handle> {
        let q = self.streams.get(stream).ok_or(CuResult::INVALID_HANDLE)?;
        self.ctxs
            .iter()
            .find(|(_, c)| Arc::ptr_eq(&c.state, &q.ctx))
            .map(|(h, _)| *h)
            .ok_or(CuResult::INVALID_HANDLE)
    }

    fn release_signal(&mut self) -> Arc<Signal> {
        self.releases.retain(|s| !s.is_fired());
        let s = Signal::new();
        self.releases.push(s.clone());
        s
    }
}

struct Inner {
    state: Mutex<State>,
    heap: Arc<Heap>,
    exec: Arc<Exec>,
    /// Dispatch sequence numbers of work that may touch memory (see `memory`).
    seq: AtomicU64,
    threads: usize,
    /// Streams wait in `State::kicks` (lets `flush` skip the lock when none do).
    kicks_pending: AtomicBool,
}

pub struct CpuEngine {
    inner: Arc<Inner>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `work` on `q` of context `ctx` with the implicit null-stream dependencies (and
    /// `extra`); the stream starts at the next flush. With `inline`, work whose stream is idle
    /// runs at once on the calling thread instead, if it can without waiting.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        st: &mut State,
        ctx: Handle,
        q: &Arc<StreamQ>,
        extra: Option<Fence>,
        work: Work,
        done: Option<Completion>,
        inline: bool,
    ) -> Submitted {
        let mut work = work;
        if inline
            && extra.is_none()
            && !self.exec.is_cancelled()
            && q.ctx.poisoned().is_none()
            && Inner::ready_now(st, ctx, q)
        {
            match streams::run(work, &self.exec, false) {
                Ok(step) => return Submitted::Ran(done, step),
                Err(w) => work = w,
            }
        }
        let mut deps = st
            .ctxs
            .get(ctx)
            .map(|c| c.set.implicit_deps(q))
            .unwrap_or_default();
        deps.extend(extra);
        let (fence, start) = q.push(deps, work, done);
        if start {
            st.kicks.push(q.clone());
            self.kicks_pending.store(true, Ordering::Release);
            if st.kicks.len() >= KICK_BATCH {
                for q in st.kicks.drain(..) {
                    kick(q);
                }
            }
        }
        Submitted::Queued(fence)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::AcqRel)
    }

    fn ready_now(st: &State, ctx: Handle, q: &Arc<StreamQ>) -> bool {
        st.ctxs.get(ctx).is_some_and(|c| c.set.ready_now(q))
    }

    /// A staging buffer from the session's budget; queued work is started first so a wait for
    /// budget always ends.
    fn staging_buf(&self, len: usize) -> HostBuf {
        {
            let mut st = self.lock();
            for q in st.kicks.drain(..) {
                kick(q);
            }
        }
        self.exec.staging.buffer(len, &self.exec.cancelled)
    }

    /// Schedules the release of allocations once `fences` pass, then runs `then`.
    fn release_after(
        self: &Arc<Self>,
        st: &mut State,
        fences: Vec<Fence>,
        bases: Vec<DevPtr>,
        then: impl FnOnce() + Send + 'static,
    ) -> impl FnOnce() + Send + 'static {
        let sig = st.release_signal();
        let heap = self.heap.clone();
        move || {
            when_all(fences, move || {
                for b in bases {
                    heap.remove(b);
                }
                sig.fire();
                then();
            })
        }
    }
}

/// What became of submitted work.
enum Submitted {
    Queued(Fence),
    /// It ran at once: the result still goes to the completion (outside the engine's lock).
    Ran(Option<Completion>, Step),
}

impl Submitted {
    /// Completes work that ran at once; returns the work's fence either way.
    fn finish(self) -> Fence {
        match self {
            Submitted::Queued(f) => f,
            Submitted::Ran(done, step) => {
                let r = match step {
                    // The exclusive gate, held until the reply is written, orders everything
                    // after a zero-copy read; the stream itself need not wait.
                    Step::Done(r) | Step::DoneAfter(r, _) => r,
                };
                if let Some(d) = done {
                    d.complete(r);
                }
                Fence::Signal(Signal::fired())
            }
        }
    }
}

fn memory_work(f: impl FnOnce() + Send + 'static) -> Work {
    Work::Memory(Box::new(move |_: &Arc<Exec>| {
        f();
        Ok(Output::Done)
    }))
}

/// Writes `len` bytes of `value` pattern (element size 1, 2 or 4) at `p`.
///
/// # Safety
/// `[p, p+len)` must be valid for writes.
unsafe fn fill(p: *mut u8, len: usize, value: u32, elem: u8) {
    match elem {
        // SAFETY: the caller's range.
        1 => unsafe { std::ptr::write_bytes(p, value as u8, len) },
        2 => {
            for i in 0..len / 2 {
                // SAFETY: 2 * i + 2 <= len.
                unsafe { p.add(2 * i).cast::<u16>().write_unaligned(value as u16) };
            }
        }
        _ => {
            for i in 0..len / 4 {
                // SAFETY: 4 * i + 4 <= len.
                unsafe { p.add(4 * i).cast::<u32>().write_unaligned(value) };
            }
        }
    }
}

/// One launch as the interpreter runs it (on the dispatcher for a small launch on an idle
/// stream, else as the stream's work); see [`KernelRun::run`].
struct KernelRun<'a> {
    module: &'a CpuModule,
    kernel: netgpu_ptx::KernelId,
    ctx: Handle,
    ctx_state: &'a CtxState,
    heap: &'a Heap,
    /// The launch's dispatch sequence number (see `memory`).
    seq: u64,
    dims: LaunchDims,
    params: &'a [u8],
    cooperative: bool,
    threads: usize,
    sm_count: u32,
}

impl KernelRun<'_> {
    /// Runs the launch; a failure poisons its context and is kept for the session's next
    /// synchronising request (as a GPU reports a kernel's fault).
    fn run(&self, exec: &Exec) {
        let mem = LaunchMemory {
            heap: self.heap,
            ctx: self.ctx,
            seq: self.seq,
        };
        let control = LaunchControl {
            cooperative: self.cooperative,
            cancel: &exec.cancelled,
            // The time limit counts from when the kernel starts.
            deadline: exec.kernel_time_limit.map(|l| Instant::now() + l),
            sm_count: self.sm_count,
            console: &exec.console,
        };
        match self.module.launch(
            self.kernel,
            self.dims,
            self.params,
            mem,
            self.threads,
            &control,
        ) {
            Ok(()) => {}
            Err(e) if e == streams::CANCELLED => {}
            Err(e) => {
                self.ctx_state.poison(e);
                exec.sink.deferred(e);
            }
        }
    }
}

impl CpuEngine {
    /// Runs a small launch (see [`INLINE_STEPS`]) at once on the calling thread (the session's
    /// dispatcher, holding the engine's lock) if nothing comes before it: its stream idle,
    /// no stream it waits for busy, no zero-copy transfer holding device memory, the session
    /// not ending, its context not failed. False if it has to be queued instead. Borrows
    /// everything it needs: no work item, box or reference count for the launch.
    fn launch_now(
        &self,
        c: &Ctx,
        q: &Arc<StreamQ>,
        f: &Function,
        dims: LaunchDims,
        params: &[u8],
    ) -> bool {
        let exec = &self.inner.exec;
        if exec.is_cancelled() || q.ctx.poisoned().is_some() || !c.set.ready_now(q) {
            return false;
        }
        let Some(gate) = exec.gate.try_shared() else {
            return false;
        };
        KernelRun {
            module: &f.data,
            kernel: f.kernel_id,
            ctx: f.ctx,
            ctx_state: &c.state,
            heap: &self.inner.heap,
            seq: self.inner.next_seq(),
            dims,
            params,
            cooperative: false,
            // One thread: starting workers would cost more than the launch's work.
            threads: 1,
            sm_count: self.inner.threads as u32,
        }
        .run(exec);
        drop(gate);
        true
    }

    fn launch_op(
        &self,
        f: &Function,
        ctx: Arc<CtxState>,
        dims: LaunchDims,
        params: Vec<u8>,
        cooperative: bool,
        small: bool,
    ) -> Work {
        let seq = self.inner.next_seq();
        let heap = self.inner.heap.clone();
        let module = f.data.clone();
        let kernel = f.kernel_id;
        let ctx_handle = f.ctx;
        // A small launch runs on one thread: starting workers would cost more than its work.
        let threads = if small { 1 } else { self.inner.threads };
        let sm_count = self.inner.threads as u32;
        Work::Memory(Box::new(move |exec: &Arc<Exec>| {
            KernelRun {
                module: &module,
                kernel,
                ctx: ctx_handle,
                ctx_state: &ctx,
                heap: &heap,
                seq,
                dims,
                params: &params,
                cooperative,
                threads,
                sm_count,
            }
            .run(exec);
            Ok(Output::Done)
        }))
    }
}

impl Engine for CpuEngine {
    fn ctx_create(&mut self, _flags: u32) -> ExecResult<Handle> {
        let state = Arc::new(CtxState::default());
        let null = StreamQ::new(self.inner.exec.clone(), state.clone(), false, 0);
        let mut st = self.inner.lock();
        Ok(st.ctxs.insert(Ctx {
            state,
            set: StreamSet::new(null),
        }))
    }

    fn ctx_destroy(&mut self, ctx: Handle, done: Completion) {
        let mut st = self.inner.lock();
        let Some(c) = st.ctxs.remove(ctx) else {
            return done.fail(CuResult::INVALID_CONTEXT);
        };
        let fences = c.set.all_work();
        st.modules.drain_where(|m| m.ctx == ctx);
        st.functions.drain_where(|f| f.ctx == ctx);
        let live_modules: std::collections::HashSet<Handle> =
            st.modules.iter().map(|(h, _)| *h).collect();
        st.function_names
            .retain(|(m, _), _| live_modules.contains(m));
        st.streams
            .drain_where(|q| Arc::ptr_eq(&q.ctx, &c.state))
            .into_iter()
            .for_each(|(_, q)| q.destroyed.store(true, Ordering::Release));
        st.events.drain_where(|e| e.ctx == ctx);
        let bases = self
            .inner
            .heap
            .mark_ctx_dying(ctx, self.inner.seq.load(Ordering::Acquire));
        let start = self
            .inner
            .release_after(&mut st, fences, bases, move || done.done());
        drop(st);
        start();
    }

    fn ctx_synchronize(&mut self, ctx: Handle, done: Completion) {
        let st = self.inner.lock();
        let (fences, state) = match st.ctx(ctx) {
            Ok(c) => (c.set.all_work(), c.state.clone()),
            Err(e) => return done.fail(e),
        };
        drop(st);
        let exec = self.inner.exec.clone();
        when_all(fences, move || done.result(exec.outcome(&state)));
    }

    fn mem_alloc(&mut self, ctx: Handle, size: u64, done: Completion) {
        let st = self.inner.lock();
        if let Err(e) = st.ctx(ctx) {
            return done.fail(e);
        }
        match self.inner.heap.alloc(ctx, size) {
            Ok(a) => done.complete(Ok(Output::DevPtr(a.base()))),
            Err(CuResult::OUT_OF_MEMORY) => {
                // Memory being freed behind running work may make room: wait for it, once.
                let pending: Vec<Fence> = st
                    .releases
                    .iter()
                    .filter(|s| !s.is_fired())
                    .map(|s| Fence::Signal(s.clone()))
                    .collect();
                drop(st);
                if pending.is_empty() {
                    return done.fail(CuResult::OUT_OF_MEMORY);
                }
                let inner = self.inner.clone();
                when_all(pending, move || {
                    let alive = inner.lock().ctx(ctx).map(|_| ());
                    done.complete(
                        alive
                            .and_then(|_| inner.heap.alloc(ctx, size))
                            .map(|a| Output::DevPtr(a.base())),
                    );
                });
            }
            Err(e) => done.fail(e),
        }
    }

    fn mem_free(&mut self, ptr: DevPtr, done: Completion) {
        if ptr == 0 {
            return done.done();
        }
        let mut st = self.inner.lock();
        let seq = self.inner.seq.load(Ordering::Acquire);
        let a = match self.inner.heap.mark_dying_user(ptr, seq) {
            Ok(a) => a,
            Err(e) => return done.fail(e),
        };
        let fences = st
            .ctxs
            .get(a.ctx())
            .map(|c| c.set.all_work())
            .unwrap_or_default();
        let start = self
            .inner
            .release_after(&mut st, fences, vec![ptr], move || done.done());
        drop(st);
        start();
    }

    fn mem_free_async(&mut self, ptr: DevPtr, stream: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let ctx = self.inner.heap.owner_of_user(ptr)?;
        st.stream(ctx, stream)?;
        let seq = self.inner.seq.load(Ordering::Acquire);
        self.inner.heap.mark_dying_user(ptr, seq)?;
        // Freed once the stream's earlier work (and anything else of the context that may
        // still use it) has finished.
        let fences = st
            .ctxs
            .get(ctx)
            .map(|c| c.set.all_work())
            .unwrap_or_default();
        let start = self.inner.release_after(&mut st, fences, vec![ptr], || {});
        drop(st);
        start();
        Ok(())
    }

    fn mem_info(&self) -> (u64, u64) {
        let h = &self.inner.heap;
        (h.quota().saturating_sub(h.used()), h.quota())
    }

    fn htod_target(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<HtodTarget> {
        let st = self.inner.lock();
        let q = st.stream(ctx, stream)?;
        let len_usize = usize::try_from(len).map_err(|_| CuResult::INVALID_VALUE)?;
        if len == 0 {
            drop(st);
            return Ok(HtodTarget::Staged(HostBuf::from_vec(Vec::new())));
        }
        let range = self.inner.heap.range(ctx, dst, len)?;
        // Zero-copy when the copy would run at once and no other work touches memory.
        if Inner::ready_now(&st, ctx, &q) && self.inner.exec.gate.try_exclusive() {
            let exec = self.inner.exec.clone();
            let ptr = range.ptr();
            // SAFETY: the range lies in a live allocation that `keep` holds; the exclusive gate
            // keeps all other work of the session off device memory until release.
            let buf = unsafe {
                HostBuf::borrowed(
                    ptr,
                    len_usize,
                    Box::new(range),
                    Some(Box::new(move || exec.gate.release_exclusive())),
                )
            };
            return Ok(HtodTarget::Direct(buf));
        }
        drop(st);
        Ok(HtodTarget::Staged(self.inner.staging_buf(len_usize)))
    }

    fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: HostBuf,
        stream: Handle,
        done: Completion,
    ) {
        let mut st = self.inner.lock();
        let q = match st.stream(ctx, stream) {
            Ok(q) => q,
            Err(e) => return done.fail(e),
        };
        let len = src.len() as u64;
        let work = if src.is_empty() {
            Work::nop()
        } else {
            let range = match self.inner.heap.range(ctx, dst, len) {
                Ok(r) => r,
                Err(e) => return done.fail(e),
            };
            memory_work(move || {
                // SAFETY: the range holds its allocation and is `src.len()` bytes long; the
                // staging buffer is ours.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_slice().as_ptr(),
                        range.ptr().as_ptr(),
                        src.len(),
                    )
                };
                drop(src);
            })
        };
        let s = self.inner.submit(
            &mut st,
            ctx,
            &q,
            None,
            work,
            Some(done),
            len <= INLINE_LIMIT,
        );
        drop(st);
        s.finish();
    }

    fn memcpy_dtoh(
        &mut self,
        ctx: Handle,
        src: DevPtr,
        len: u64,
        stream: Handle,
        done: Completion,
    ) {
        let mut st = self.inner.lock();
        let q = match st.stream(ctx, stream) {
            Ok(q) => q,
            Err(e) => return done.fail(e),
        };
        let Ok(n) = usize::try_from(len) else {
            return done.fail(CuResult::INVALID_VALUE);
        };
        let work = if n == 0 {
            // An empty copy still waits for its stream.
            Work::Plain(Box::new(|| Ok(Output::Data(HostBuf::from_vec(Vec::new())))))
        } else {
            match self.inner.heap.range(ctx, src, len) {
                Ok(r) => Work::ToHost(r),
                Err(e) => return done.fail(e),
            }
        };
        let s = self.inner.submit(
            &mut st,
            ctx,
            &q,
            None,
            work,
            Some(done),
            len <= INLINE_LIMIT,
        );
        drop(st);
        s.finish();
    }

    fn memcpy_dtod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
        done: Completion,
    ) {
        let mut st = self.inner.lock();
        let q = match st.stream(ctx, stream) {
            Ok(q) => q,
            Err(e) => return done.fail(e),
        };
        let work = if len == 0 {
            Work::nop()
        } else {
            let ranges = self
                .inner
                .heap
                .range(ctx, src, len)
                .and_then(|s| Ok((s, self.inner.heap.range(ctx, dst, len)?)));
            let (s, d) = match ranges {
                Ok(r) => r,
                Err(e) => return done.fail(e),
            };
            memory_work(move || {
                // SAFETY: both ranges hold their allocations and are `len` bytes; `copy`
                // allows overlap.
                unsafe { std::ptr::copy(s.ptr().as_ptr(), d.ptr().as_ptr(), len as usize) };
            })
        };
        let s = self.inner.submit(
            &mut st,
            ctx,
            &q,
            None,
            work,
            Some(done),
            len <= INLINE_LIMIT,
        );
        drop(st);
        s.finish();
    }

    fn memset(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
        done: Completion,
    ) {
        let mut st = self.inner.lock();
        let q = match st.stream(ctx, stream) {
            Ok(q) => q,
            Err(e) => return done.fail(e),
        };
        let len = match memset_len(dst, elem_size, count) {
            Ok(l) => l,
            Err(e) => return done.fail(e),
        };
        let work = if len == 0 {
            Work::nop()
        } else {
            let range = match self.inner.heap.range(ctx, dst, len) {
                Ok(r) => r,
                Err(e) => return done.fail(e),
            };
            memory_work(move || {
                // SAFETY: the range holds its allocation and is `len` bytes long.
                unsafe { fill(range.ptr().as_ptr(), len as usize, value, elem_size) };
            })
        };
        let s = self.inner.submit(
            &mut st,
            ctx,
            &q,
            None,
            work,
            Some(done),
            len <= INLINE_LIMIT,
        );
        drop(st);
        s.finish();
    }

    fn staging(&mut self, len: usize) -> ExecResult<HostBuf> {
        Ok(self.inner.staging_buf(len))
    }

    fn memcpy_3d(
        &mut self,
        ctx: Handle,
        copy: Copy3D,
        host: Option<HostBuf>,
        stream: Handle,
        done: Completion,
    ) {
        let mut st = self.inner.lock();
        let q = match st.stream(ctx, stream) {
            Ok(q) => q,
            Err(e) => return done.fail(e),
        };
        let plan = match limits::plan_copy_3d(&copy) {
            Ok(p) => p,
            Err(e) => return done.fail(e),
        };
        let host_len = host.as_ref().map(|h| h.len() as u64);
        let to_host = plan.dst.is_none();
        let expect_host = plan.src.is_none() && !plan.is_empty();
        if (expect_host && host_len != Some(plan.packed_len()))
            || (!expect_host && host_len.is_some_and(|n| n != 0))
        {
            return done.fail(CuResult::INVALID_VALUE);
        }
        let side = |p: Option<limits::Pitched>| -> ExecResult<Option<(Range, limits::Pitched)>> {
            match p {
                Some(p) => Ok(Some((self.inner.heap.range(ctx, p.base, p.span)?, p))),
                None => Ok(None),
            }
        };
        let (src, dst) = match side(plan.src).and_then(|s| Ok((s, side(plan.dst)?))) {
            Ok(x) => x,
            Err(e) => return done.fail(e),
        };
        let small = plan.packed_len() <= INLINE_LIMIT;
        let work = Work::Memory(Box::new(move |_: &Arc<Exec>| {
            if plan.is_empty() {
                let out = if to_host {
                    Output::Data(HostBuf::from_vec(Vec::new()))
                } else {
                    Output::Done
                };
                return Ok(out);
            }
            let w = plan.width as usize;
            let mut packed = if to_host {
                vec![0u8; plan.packed_len() as usize]
            } else {
                Vec::new()
            };
            let mut row = 0usize;
            for z in 0..plan.depth {
                for y in 0..plan.height {
                    let s: *const u8 = match (&src, &host) {
                        // SAFETY: row(y, z) + width <= span, checked by `plan_copy_3d` and the
                        // range lookup.
                        (Some((r, p)), _) => unsafe { r.ptr().as_ptr().add(p.row(y, z) as usize) },
                        // SAFETY: the packed buffer holds depth * height rows of width bytes.
                        (None, Some(h)) => unsafe { h.as_slice().as_ptr().add(row * w) },
                        (None, None) => return Err(CuResult::INVALID_VALUE),
                    };
                    let d: *mut u8 = match &dst {
                        // SAFETY: as for the source.
                        Some((r, p)) => unsafe { r.ptr().as_ptr().add(p.row(y, z) as usize) },
                        // SAFETY: as for the packed source.
                        None => unsafe { packed.as_mut_ptr().add(row * w) },
                    };
                    // SAFETY: both point at `w` valid bytes; device rows may overlap (copy).
                    unsafe { std::ptr::copy(s, d, w) };
                    row += 1;
                }
            }
            drop(host);
            Ok(if to_host {
                Output::Data(HostBuf::from_vec(packed))
            } else {
                Output::Done
            })
        }));
        let s = self
            .inner
            .submit(&mut st, ctx, &q, None, work, Some(done), small);
        drop(st);
        s.finish();
    }

    fn module_load(&mut self, ctx: Handle, images: Vec<Vec<u8>>, done: Completion) {
        if let Err(e) = self.inner.lock().ctx(ctx) {
            return done.fail(e);
        }
        // Parsing a large module takes a while: off the dispatcher.
        let inner = self.inner.clone();
        self.inner.exec.pool.clone().submit(0, move || {
            let m = match CpuModule::load(&images, ctx, &inner.heap) {
                Ok(m) => m,
                Err(e) => return done.fail(e),
            };
            let mut st = inner.lock();
            if let Err(e) = st.ctx(ctx) {
                for b in m.global_bases() {
                    inner.heap.remove(b);
                }
                drop(st);
                return done.fail(e);
            }
            let h = st.modules.insert(Module {
                ctx,
                data: Arc::new(m),
            });
            drop(st);
            done.complete(Ok(Output::Handle(h)));
        });
    }

    fn module_unload(&mut self, module: Handle, done: Completion) {
        let mut st = self.inner.lock();
        let Some(m) = st.modules.remove(module) else {
            return done.fail(CuResult::INVALID_HANDLE);
        };
        st.functions.drain_where(|f| f.module == module);
        st.function_names.retain(|(m, _), _| *m != module);
        let seq = self.inner.seq.load(Ordering::Acquire);
        let bases: Vec<DevPtr> = m.data.global_bases().collect();
        for &b in &bases {
            let _ = self.inner.heap.mark_dying_any(b, seq);
        }
        let fences = st
            .ctxs
            .get(m.ctx)
            .map(|c| c.set.all_work())
            .unwrap_or_default();
        let start = self
            .inner
            .release_after(&mut st, fences, bases, move || done.done());
        drop(st);
        start();
    }

    fn module_get_function(&mut self, module: Handle, name: &str) -> ExecResult<FunctionInfo> {
        let mut st = self.inner.lock();
        let m = st.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, data) = (m.ctx, m.data.clone());
        st.ctx(ctx)?;
        let params = data.kernel_params(name).ok_or(CuResult::NOT_FOUND)?;
        let span = limits::param_span(&params)?;
        let key = (module, name.to_string());
        let handle = match st.function_names.get(&key) {
            Some(&h) if st.functions.get(h).is_some() => h,
            _ => {
                let kernel_id = data.module.kernel_id(name).ok_or(CuResult::NOT_FOUND)?;
                let shared_static = data.shared_static(name);
                let (max_threads, reqntid) = data.block_limits(name);
                let h = st.functions.insert(Function {
                    ctx,
                    module,
                    data: data.clone(),
                    kernel: Arc::from(name),
                    kernel_id,
                    span,
                    max_threads,
                    reqntid,
                    shared_static,
                    max_dynamic_shared: default_dynamic_shared(shared_static),
                    carveout: -1,
                    max_steps: data
                        .module
                        .kernel_by_id(kernel_id)
                        .and_then(|k| k.max_steps),
                });
                st.function_names.insert(key, h);
                h
            }
        };
        let f = st.functions.get(handle).ok_or(CuResult::INVALID_HANDLE)?;
        Ok(FunctionInfo {
            handle,
            params,
            param_buffer_size: span,
            attributes: data.attributes(name, f.max_dynamic_shared, f.carveout),
        })
    }

    fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)> {
        let st = self.inner.lock();
        let m = st.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        st.ctx(m.ctx)?;
        m.data.global(name).ok_or(CuResult::NOT_FOUND)
    }

    fn func_set_attribute(&mut self, func: Handle, attr: u32, value: i32) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let f = st.functions.get_mut(func).ok_or(CuResult::INVALID_HANDLE)?;
        match attr {
            func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                let v = u32::try_from(value).map_err(|_| CuResult::INVALID_VALUE)?;
                if u64::from(v) + u64::from(f.shared_static) > u64::from(MAX_SHARED_OPTIN) {
                    return Err(CuResult::INVALID_VALUE);
                }
                f.max_dynamic_shared = v;
                Ok(())
            }
            func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT => {
                if !(-1..=100).contains(&value) {
                    return Err(CuResult::INVALID_VALUE);
                }
                // A hint: shared memory and cache are one host memory here.
                f.carveout = value;
                Ok(())
            }
            func_attr::REQUIRED_CLUSTER_WIDTH
            | func_attr::REQUIRED_CLUSTER_HEIGHT
            | func_attr::REQUIRED_CLUSTER_DEPTH
            | func_attr::NON_PORTABLE_CLUSTER_SIZE_ALLOWED
            | func_attr::CLUSTER_SCHEDULING_POLICY_PREFERENCE => Err(CuResult::NOT_SUPPORTED),
            _ => Err(CuResult::INVALID_VALUE),
        }
    }

    fn launch(
        &mut self,
        func: Handle,
        dims: LaunchDims,
        params: &[u8],
        stream: Handle,
        flags: u32,
    ) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let (ctx, cooperative, small) = {
            let st = &*st;
            let f = st.functions.get(func).ok_or(CuResult::INVALID_HANDLE)?;
            let c = st.ctx(f.ctx)?;
            let q = st.stream_of(c, stream)?;
            if flags & !LAUNCH_COOPERATIVE != 0 {
                return Err(CuResult::INVALID_VALUE);
            }
            limits::check_launch(
                &dims,
                MAX_THREADS_PER_BLOCK,
                &FunctionLimits {
                    max_threads: f.max_threads,
                    max_dynamic_shared: f.max_dynamic_shared,
                },
            )?;
            if f.reqntid.is_some_and(|r| r != dims.block) {
                // `.reqntid`: the kernel runs with exactly that block shape.
                return Err(CuResult::INVALID_VALUE);
            }
            limits::check_params(params.len(), f.span)?;
            let cooperative = flags & LAUNCH_COOPERATIVE != 0;
            if cooperative
                && dims.blocks()
                    > f.data
                        .max_cooperative_blocks(&f.kernel, &dims, self.inner.threads as u32)
            {
                return Err(CuResult::COOPERATIVE_LAUNCH_TOO_LARGE);
            }
            let small = small_launch(f.max_steps, &dims, cooperative);
            if small && self.launch_now(c, q, f, dims, params) {
                return Ok(());
            }
            (f.ctx, cooperative, small)
        };
        // Queued behind the stream's work (or its dependencies).
        let q = st.stream(ctx, stream)?;
        let ctx_state = st.ctx(ctx)?.state.clone();
        let f = st.functions.get(func).ok_or(CuResult::INVALID_HANDLE)?;
        let work = self.launch_op(f, ctx_state, dims, params.to_vec(), cooperative, small);
        self.inner
            .submit(&mut st, ctx, &q, None, work, None, false)
            .finish();
        Ok(())
    }

    fn stream_create(&mut self, ctx: Handle, flags: u32, priority: i32) -> ExecResult<Handle> {
        const NON_BLOCKING: u32 = 1;
        if flags & !NON_BLOCKING != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let mut st = self.inner.lock();
        let state = st.ctx(ctx)?.state.clone();
        let (least, greatest) = STREAM_PRIORITY_RANGE;
        let priority = priority.clamp(greatest, least);
        let q = StreamQ::new(
            self.inner.exec.clone(),
            state,
            flags & NON_BLOCKING != 0,
            -priority,
        );
        if let Some(c) = st.ctxs.get_mut(ctx) {
            c.set.add(q.clone());
        }
        Ok(st.streams.insert(q))
    }

    fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let q = st.streams.remove(stream).ok_or(CuResult::INVALID_HANDLE)?;
        q.destroyed.store(true, Ordering::Release);
        Ok(())
    }

    fn stream_synchronize(&mut self, stream: Handle, done: Completion) {
        let st = self.inner.lock();
        let (fences, states) = if stream == 0 {
            // No context named: the null streams of all contexts (each with the blocking
            // streams' work it waits for).
            let mut f = Vec::new();
            let mut s = Vec::new();
            for (_, c) in st.ctxs.iter() {
                f.extend(c.set.null.last());
                f.extend(c.set.implicit_deps(&c.set.null));
                s.push(c.state.clone());
            }
            (f, s)
        } else {
            let q = match st.ctx_of_stream(stream).and_then(|c| st.stream(c, stream)) {
                Ok(q) => q,
                Err(e) => return done.fail(e),
            };
            (q.last().into_iter().collect(), vec![q.ctx.clone()])
        };
        drop(st);
        let exec = self.inner.exec.clone();
        when_all(fences, move || {
            done.result(states.iter().try_for_each(|s| exec.outcome(s)))
        });
    }

    fn stream_query(&mut self, stream: Handle) -> ExecResult<bool> {
        let st = self.inner.lock();
        if stream == 0 {
            for (_, c) in st.ctxs.iter() {
                c.state.check()?;
                if !c.set.ready_now(&c.set.null) {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let ctx = st.ctx_of_stream(stream)?;
        let q = st.stream(ctx, stream)?;
        Ok(q.last().is_none())
    }

    fn stream_wait_event(&mut self, stream: Handle, event: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let ev = st.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        let ev_ctx = ev.ctx;
        let fence = ev.last.as_ref().map(|r| r.fence.clone());
        // The waiting stream may belong to another context than the event (CUDA allows it);
        // stream 0 is the event's context's null stream.
        let ctx = if stream == 0 {
            ev_ctx
        } else {
            st.ctx_of_stream(stream)?
        };
        let q = st.stream(ctx, stream)?;
        let Some(fence) = fence.filter(|f| !f.is_done()) else {
            // Never recorded, or already complete: nothing to wait for.
            return Ok(());
        };
        self.inner
            .submit(&mut st, ctx, &q, Some(fence), Work::nop(), None, false)
            .finish();
        Ok(())
    }

    fn event_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle> {
        const BLOCKING_SYNC: u32 = 1;
        const DISABLE_TIMING: u32 = 2;
        const INTERPROCESS: u32 = 4;
        if flags & !(BLOCKING_SYNC | DISABLE_TIMING | INTERPROCESS) != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if flags & INTERPROCESS != 0 {
            return Err(CuResult::NOT_SUPPORTED);
        }
        let mut st = self.inner.lock();
        st.ctx(ctx)?;
        Ok(st.events.insert(Event {
            ctx,
            timing: flags & DISABLE_TIMING == 0,
            last: None,
        }))
    }

    fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let ctx = st.events.get(event).ok_or(CuResult::INVALID_HANDLE)?.ctx;
        let q = st.stream(ctx, stream)?;
        let stamp = Arc::new(OnceLock::new());
        let s2 = stamp.clone();
        let work = Work::Plain(Box::new(move || {
            let _ = s2.set(Instant::now());
            Ok(Output::Done)
        }));
        let fence = self
            .inner
            .submit(&mut st, ctx, &q, None, work, None, true)
            .finish();
        if let Some(e) = st.events.get_mut(event) {
            e.last = Some(Recorded { fence, stamp });
        }
        Ok(())
    }

    fn event_synchronize(&mut self, event: Handle, done: Completion) {
        let st = self.inner.lock();
        let Some(e) = st.events.get(event) else {
            return done.fail(CuResult::INVALID_HANDLE);
        };
        let state = match st.ctx(e.ctx) {
            Ok(c) => c.state.clone(),
            Err(err) => return done.fail(err),
        };
        let fence = e.last.as_ref().map(|r| r.fence.clone());
        drop(st);
        match fence {
            None => done.done(),
            Some(f) => {
                let exec = self.inner.exec.clone();
                f.on_done(move || done.result(exec.outcome(&state)))
            }
        }
    }

    fn event_query(&mut self, event: Handle) -> ExecResult<bool> {
        let st = self.inner.lock();
        let e = st.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        st.ctx(e.ctx)?;
        Ok(e.last.as_ref().is_none_or(|r| r.fence.is_done()))
    }

    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32> {
        let st = self.inner.lock();
        let s = st.events.get(start).ok_or(CuResult::INVALID_HANDLE)?;
        let e = st.events.get(end).ok_or(CuResult::INVALID_HANDLE)?;
        if s.ctx != e.ctx || !s.timing || !e.timing {
            return Err(CuResult::INVALID_HANDLE);
        }
        st.ctx(s.ctx)?;
        // CUDA: an event that was never recorded cannot be timed.
        let (Some(a), Some(b)) = (&s.last, &e.last) else {
            return Err(CuResult::INVALID_HANDLE);
        };
        let (Some(ta), Some(tb)) = (a.stamp.get(), b.stamp.get()) else {
            return Err(CuResult::NOT_READY);
        };
        let ms = if tb >= ta {
            (*tb - *ta).as_secs_f64() * 1e3
        } else {
            -((*ta - *tb).as_secs_f64() * 1e3)
        };
        Ok(ms as f32)
    }

    fn event_destroy(&mut self, event: Handle) -> ExecResult<()> {
        self.inner
            .lock()
            .events
            .remove(event)
            .map(|_| ())
            .ok_or(CuResult::INVALID_HANDLE)
    }

    fn flush(&mut self) {
        // Called before every wait for input: cheap when nothing is waiting to start.
        if !self.inner.kicks_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let kicks = std::mem::take(&mut self.inner.lock().kicks);
        for q in kicks {
            kick(q);
        }
    }

    fn backlog(&self) -> usize {
        self.inner.exec.backlog()
    }

    fn wait_backlog(&self, below: usize, timeout: Duration) -> bool {
        self.inner.exec.wait_backlog(below, timeout)
    }

    fn shutdown(&mut self, grace: Duration) {
        self.inner.exec.cancelled.store(true, Ordering::Release);
        self.flush();
        self.inner.exec.staging.wake();
        if !self.inner.exec.wait_idle(grace) {
            tracing::warn!(
                "session work still running after {} ms; its memory goes when it stops",
                grace.as_millis()
            );
        }
    }
}

impl Drop for CpuEngine {
    fn drop(&mut self) {
        self.inner.exec.cancelled.store(true, Ordering::Release);
        self.flush();
        let mut st = self.inner.lock();
        // Break the reference cycles (streams hold the session's shared state) and let the
        // memory go; work still running holds what it uses until it stops.
        *st = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(grid: u32, block: u32) -> LaunchDims {
        LaunchDims {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_mem_bytes: 0,
        }
    }

    #[test]
    fn only_small_launches_of_kernels_that_cannot_loop_run_on_the_dispatcher() {
        // An empty kernel, one block of a warp; a bounds-checked kernel of 16 steps on
        // 512 threads: both at most INLINE_STEPS thread-instructions.
        assert!(small_launch(Some(2), &dims(1, 32), false));
        assert!(small_launch(Some(16), &dims(2, 256), false));
        // One thread-instruction more, a kernel that may loop, a cooperative launch.
        assert!(!small_launch(Some(16), &dims(2, 257), false));
        assert!(!small_launch(None, &dims(1, 1), false));
        assert!(!small_launch(Some(2), &dims(1, 32), true));
        // Products that overflow are not small.
        assert!(!small_launch(Some(u32::MAX), &dims(u32::MAX, 1024), false));
    }
}
