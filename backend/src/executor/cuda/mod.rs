//! The CUDA executor: a physical GPU through the CUDA driver API, via cudarc loaded at run
//! time so the backend builds and starts on machines without CUDA.
//!
//! cudarc panics when `libcuda.so` is missing, so [`CudaExecutor::open`] probes with
//! `is_culib_present()` before the first driver call and turns every failure into a
//! [`CudaError`]. Each session gets its own CUDA contexts, so its memory, modules and streams
//! live in address spaces of their own; the engine also tracks every allocation so copies
//! and memsets are checked against the calling context's memory before they reach the driver.
//!
//! Ordering: every session stream (and each context's null stream) is a queue of the shared
//! [`streams`](super::streams) machinery whose items *submit* work to the matching real CUDA
//! stream, in order, from a pool thread; items that need host memory (copies to and from the
//! host) wait on their pool thread until the GPU is done with it. The implicit dependencies
//! between the null stream and blocking streams therefore order *submission*, which is what
//! CUDA's own legacy-stream semantics act on. Synchronisation waits on events on pool threads
//! ([`driver::wait_event`]), never on the dispatcher.
//!
//! Written against the CUDA 12.8 driver API; it has not run on a GPU yet (no GPU during its
//! development: see `docs/backend.md`).

mod attributes;
pub mod driver;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cudarc::driver::sys;
use netgpu_proto::cuda::{attr, func_attr, CuResult};
use netgpu_proto::wire::ops::{
    Copy3D, DevPtr, DeviceInfo, FunctionInfo, Handle, ParamInfo, LAUNCH_COOPERATIVE,
};
use thiserror::Error;
use tracing::debug;

use super::completion::Signal;
use super::limits::{self, FunctionLimits, MAX_PARAM_BYTES};
use super::pool::Pool;
use super::streams::{kick, when_all, CtxState, Exec, Fence, StreamQ, StreamSet, Work};
use super::{
    memset_len, Completion, Engine, ExecResult, Executor, HandleTable, HostBuf, HtodTarget,
    LaunchDims, Mode, Output, SessionSetup,
};
use driver::{check, wait_event, Context, Event, Ptr, WaitEnd};

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("libcuda.so was not found: install the NVIDIA driver, or run with --executor cpu")]
    NoDriver,
    #[error("CUDA driver call {call} failed: {code}")]
    Driver { call: &'static str, code: CuResult },
    #[error("CUDA device {0} does not exist")]
    NoSuchDevice(u32),
    #[error("the CUDA driver lacks an entry point netgpu needs (cuDeviceGetAttribute, cuFuncGetAttribute or cuFuncSetAttribute)")]
    MissingEntryPoint,
}

fn init_check(call: &'static str, r: sys::CUresult) -> Result<(), CudaError> {
    check(r).map_err(|code| CudaError::Driver { call, code })
}

/// Most threads of the executor's pool (all sessions together).
const POOL_THREADS: usize = 1024;
/// Streams handed to the pool in one go at the latest.
const KICK_BATCH: usize = 64;

pub struct CudaExecutor {
    info: DeviceInfo,
    dev: sys::CUdevice,
    raw: &'static driver::Raw,
    workers: Pool,
}

impl CudaExecutor {
    /// Opens CUDA device `ordinal`; any missing piece is an error, never a panic.
    pub fn open(ordinal: u32) -> Result<CudaExecutor, CudaError> {
        // SAFETY: only tries to dlopen libcuda and reports whether that worked; it touches
        // no CUDA state.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        let raw = driver::raw().ok_or(CudaError::MissingEntryPoint)?;
        // SAFETY: libcuda is present (checked above), so cudarc's lazily loaded entry points
        // resolve; every out-pointer below points to a live local of the right type.
        unsafe {
            init_check("cuInit", sys::cuInit(0))?;
            let mut count = 0;
            init_check("cuDeviceGetCount", sys::cuDeviceGetCount(&mut count))?;
            if i64::from(ordinal) >= i64::from(count) {
                return Err(CudaError::NoSuchDevice(ordinal));
            }
            let mut dev = 0;
            init_check("cuDeviceGet", sys::cuDeviceGet(&mut dev, ordinal as i32))?;
            let mut name = [0 as std::ffi::c_char; 256];
            init_check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev),
            )?;
            let name = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let mut total = 0usize;
            init_check(
                "cuDeviceTotalMem",
                sys::cuDeviceTotalMem_v2(&mut total, dev),
            )?;
            let mut uuid = sys::CUuuid_st { bytes: [0; 16] };
            init_check("cuDeviceGetUuid", sys::cuDeviceGetUuid(&mut uuid, dev))?;
            let mut version = 0;
            init_check("cuDriverGetVersion", sys::cuDriverGetVersion(&mut version))?;
            let attributes = attributes::query(raw, dev);
            let get = |n| {
                attributes
                    .iter()
                    .find(|(a, _)| *a == n)
                    .map(|(_, v)| *v as u32)
                    .unwrap_or(0)
            };
            let info = DeviceInfo {
                name,
                total_mem: total as u64,
                cc_major: get(attr::COMPUTE_CAPABILITY_MAJOR),
                cc_minor: get(attr::COMPUTE_CAPABILITY_MINOR),
                multiprocessors: get(attr::MULTIPROCESSOR_COUNT),
                uuid: uuid.bytes.map(|b| b as u8),
                driver_version: version as u32,
                executor: "cuda".into(),
                attributes,
            };
            Ok(CudaExecutor {
                info,
                dev,
                raw,
                workers: Pool::new("cuda-exec", POOL_THREADS),
            })
        }
    }
}

impl Executor for CudaExecutor {
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
        let attr = |a| self.info.attribute(a).unwrap_or(0);
        Ok(Box::new(CudaEngine {
            inner: Arc::new(Inner {
                dev: self.dev,
                raw: self.raw,
                quota: setup.quota.min(self.info.total_mem),
                tenant: setup.tenant_memory.clone(),
                max_threads: attr(attr::MAX_THREADS_PER_BLOCK).max(1) as u32,
                sm_count: attr(attr::MULTIPROCESSOR_COUNT).max(1) as u32,
                device_sm: self.info.cc_major * 10 + self.info.cc_minor,
                exec,
                state: Mutex::new(State::default()),
            }),
        }))
    }
}

struct Ctx {
    cu: Arc<Context>,
    state: Arc<CtxState>,
    set: StreamSet,
    /// Raw streams of `set.streams` that do not synchronise with the null stream (a context
    /// synchronisation records an event on each of them and on the null stream).
    non_blocking: Vec<Arc<driver::Stream>>,
}

struct StreamEntry {
    ctx: Handle,
    q: Arc<StreamQ>,
    cu: Arc<driver::Stream>,
}

struct Alloc {
    size: u64,
    ctx: Handle,
    /// Distinguishes a later allocation at the same address.
    gen: u64,
    /// A module global (not freed by `cuMemFree`).
    global: bool,
    dying: bool,
}

struct ModuleEntry {
    ctx: Handle,
    cu: Arc<driver::Module>,
    globals: Vec<DevPtr>,
}

struct Function {
    ctx: Handle,
    module: Handle,
    raw: Ptr<sys::CUfunc_st>,
    _keep: Arc<driver::Module>,
    params: Vec<ParamInfo>,
    span: u32,
    max_threads: u32,
    max_dynamic_shared: u32,
}

struct EventEntry {
    ctx: Handle,
    ev: Arc<Event>,
    /// Submission of the last record.
    last: Option<Fence>,
}

#[derive(Default)]
struct State {
    ctxs: HandleTable<Ctx>,
    allocs: BTreeMap<DevPtr, Alloc>,
    used: u64,
    next_gen: u64,
    modules: HandleTable<ModuleEntry>,
    functions: HandleTable<Function>,
    function_names: HashMap<(Handle, String), Handle>,
    streams: HandleTable<StreamEntry>,
    events: HandleTable<EventEntry>,
    kicks: Vec<Arc<StreamQ>>,
    releases: Vec<Arc<Signal>>,
}

impl State {
    fn ctx(&self, ctx: Handle) -> ExecResult<&Ctx> {
        let c = self.ctxs.get(ctx).ok_or(CuResult::INVALID_CONTEXT)?;
        c.state.check()?;
        Ok(c)
    }

    /// Queue and raw stream of `stream` in `ctx` (0: the null stream).
    fn stream(
        &self,
        ctx: Handle,
        stream: Handle,
    ) -> ExecResult<(Arc<StreamQ>, Option<Arc<driver::Stream>>)> {
        let c = self.ctx(ctx)?;
        if stream == 0 {
            return Ok((c.set.null.clone(), None));
        }
        match self.streams.get(stream) {
            Some(s) if s.ctx == ctx => Ok((s.q.clone(), Some(s.cu.clone()))),
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    /// `[p, p+len)` inside one live allocation of `ctx`.
    fn range(&self, ctx: Handle, p: DevPtr, len: u64) -> ExecResult<()> {
        let (base, a) = self
            .allocs
            .range(..=p)
            .next_back()
            .ok_or(CuResult::INVALID_VALUE)?;
        let end = p.checked_add(len).ok_or(CuResult::INVALID_VALUE)?;
        let alloc_end = base.checked_add(a.size).ok_or(CuResult::INVALID_VALUE)?;
        if a.ctx != ctx || a.dying || end > alloc_end || (len == 0 && p >= alloc_end) {
            return Err(CuResult::INVALID_VALUE);
        }
        Ok(())
    }

    fn release_signal(&mut self) -> Arc<Signal> {
        self.releases.retain(|s| !s.is_fired());
        let s = Signal::new();
        self.releases.push(s.clone());
        s
    }
}

struct Inner {
    dev: sys::CUdevice,
    raw: &'static driver::Raw,
    quota: u64,
    /// The tenant's pool: every byte in `State::used` is also charged there.
    tenant: Option<Arc<crate::executor::budget::MemoryPool>>,
    max_threads: u32,
    sm_count: u32,
    /// Compute capability as major * 10 + minor (which SASS runs here).
    device_sm: u32,
    exec: Arc<Exec>,
    state: Mutex<State>,
}

pub struct CudaEngine {
    inner: Arc<Inner>,
}

/// Submission work on a stream: runs `f` with the raw stream (kept alive meanwhile). `f`
/// enters the context itself around its driver calls, never across a wait, and never twice
/// at once (the context's lock is not reentrant).
fn on_stream(
    stream: Option<Arc<driver::Stream>>,
    f: impl FnOnce(Ptr<sys::CUstream_st>) -> ExecResult<Output> + Send + 'static,
) -> Work {
    Work::Plain(Box::new(move || {
        let raw = stream
            .as_ref()
            .map(|s| s.raw)
            .unwrap_or_else(driver::Stream::null);
        let r = f(raw);
        drop(stream);
        r
    }))
}

impl Inner {
    /// Returns `bytes` that left `State::used` to the tenant's pool.
    fn release_tenant(&self, bytes: u64) {
        if let Some(t) = &self.tenant {
            t.release(bytes);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues submission work on `q` of `ctx` after the implicit null-stream dependencies.
    fn submit(
        &self,
        st: &mut State,
        ctx: Handle,
        q: &Arc<StreamQ>,
        extra: Option<Fence>,
        work: Work,
        done: Option<Completion>,
    ) -> Fence {
        let mut deps = st
            .ctxs
            .get(ctx)
            .map(|c| c.set.implicit_deps(q))
            .unwrap_or_default();
        deps.extend(extra);
        let (fence, start) = q.push(deps, work, done);
        if start {
            st.kicks.push(q.clone());
            if st.kicks.len() >= KICK_BATCH {
                for q in st.kicks.drain(..) {
                    kick(q);
                }
            }
        }
        fence
    }

    /// Waits for `ev` on this (pool) thread; a sticky failure poisons the context, a wait
    /// past the kernel time limit poisons it with `LAUNCH_TIMEOUT` and destroys it (stopping
    /// the runaway kernel).
    fn wait(&self, ev: &Event, state: &CtxState) -> ExecResult<()> {
        let exec = &self.exec;
        match wait_event(ev, || exec.is_cancelled(), exec.kernel_time_limit) {
            Ok(()) => state.check(),
            Err(WaitEnd::Failed(e)) => {
                state.poison(e);
                Err(e)
            }
            Err(WaitEnd::Cancelled) => Err(super::streams::CANCELLED),
            Err(WaitEnd::TimedOut) => {
                state.poison(CuResult::LAUNCH_TIMEOUT);
                let cu = ev.ctx.clone();
                exec.pool.submit(0, move || cu.kill());
                Err(CuResult::LAUNCH_TIMEOUT)
            }
        }
    }

    /// On a pool thread once `fences` have passed (all earlier work submitted): records an
    /// event on each of `streams` and waits for all of them.
    fn wait_streams_then(
        self: &Arc<Self>,
        fences: Vec<Fence>,
        cu: Arc<Context>,
        state: Arc<CtxState>,
        streams: Vec<Ptr<sys::CUstream_st>>,
        done: impl FnOnce(ExecResult<()>) + Send + 'static,
    ) {
        let me = self.clone();
        when_all(fences, move || {
            let pool = me.exec.pool.clone();
            pool.submit(0, move || {
                let r = streams.iter().try_for_each(|&s| {
                    let ev = Event::fence(&cu, s)?;
                    me.wait(&ev, &state)
                });
                done(r);
            });
        });
    }

    /// Frees allocations on a pool thread once `fences` have passed, then runs `then`.
    /// Returns the registration, to run once the caller has let go of the engine's lock.
    fn free_after(
        self: &Arc<Self>,
        st: &mut State,
        fences: Vec<Fence>,
        cu: Arc<Context>,
        frees: Vec<(DevPtr, u64)>,
        then: impl FnOnce() + Send + 'static,
    ) -> impl FnOnce() + Send + 'static {
        let sig = st.release_signal();
        let me = self.clone();
        move || {
            when_all(fences, move || {
                let pool = me.exec.pool.clone();
                pool.submit(0, move || {
                    for (p, gen) in frees {
                        if let Ok(_e) = cu.enter() {
                            // SAFETY: a live allocation of this context, freed once (it
                            // is dying, so nothing else frees or uses it).
                            unsafe {
                                sys::cuMemFree_v2(p);
                            }
                        }
                        let mut st = me.lock();
                        if st.allocs.get(&p).is_some_and(|a| a.gen == gen) {
                            if let Some(a) = st.allocs.remove(&p) {
                                st.used = st.used.saturating_sub(a.size);
                                me.release_tenant(a.size);
                            }
                        }
                    }
                    sig.fire();
                    then();
                });
            });
        }
    }
}

fn wait_result(mode: Mode) -> bool {
    mode != Mode::NoReply
}

impl CudaEngine {
    fn stream_work(
        &self,
        ctx: Handle,
        stream: Handle,
        done: Completion,
        validate: impl FnOnce(&State) -> ExecResult<()>,
        f: impl FnOnce(Ptr<sys::CUstream_st>, &Inner, &CtxState) -> ExecResult<Output> + Send + 'static,
    ) {
        let mut st = self.inner.lock();
        let (q, raw) = match st
            .stream(ctx, stream)
            .and_then(|x| validate(&st).map(|_| x))
        {
            Ok(x) => x,
            Err(e) => return done.fail(e),
        };
        let (cu, state) = match st.ctx(ctx) {
            Ok(c) => (c.cu.clone(), c.state.clone()),
            Err(e) => return done.fail(e),
        };
        let me = self.inner.clone();
        let _ = cu;
        let work = on_stream(raw, move |s| f(s, &me, &state));
        self.inner.submit(&mut st, ctx, &q, None, work, Some(done));
    }
}

/// Records an event on `s` and waits for it (on the calling pool thread).
fn finish_on(
    s: Ptr<sys::CUstream_st>,
    inner: &Inner,
    state: &CtxState,
    cu: &Arc<Context>,
) -> ExecResult<()> {
    let ev = Event::fence(cu, s)?;
    inner.wait(&ev, state)
}

impl Engine for CudaEngine {
    fn ctx_create(&mut self, _flags: u32) -> ExecResult<Handle> {
        let cu = Context::create(self.inner.dev)?;
        let state = Arc::new(CtxState::default());
        let null = StreamQ::new(self.inner.exec.clone(), state.clone(), false, 0);
        let mut st = self.inner.lock();
        Ok(st.ctxs.insert(Ctx {
            cu,
            state,
            set: StreamSet::new(null),
            non_blocking: Vec::new(),
        }))
    }

    fn ctx_destroy(&mut self, ctx: Handle, done: Completion) {
        let mut st = self.inner.lock();
        let Some(c) = st.ctxs.remove(ctx) else {
            return done.fail(CuResult::INVALID_CONTEXT);
        };
        let fences = c.set.all_work();
        let modules = st.modules.drain_where(|m| m.ctx == ctx);
        st.functions.drain_where(|f| f.ctx == ctx);
        let live: std::collections::HashSet<Handle> = st.modules.iter().map(|(h, _)| *h).collect();
        st.function_names.retain(|(m, _), _| live.contains(m));
        let streams = st.streams.drain_where(|s| s.ctx == ctx);
        for (_, s) in &streams {
            s.q.destroyed.store(true, Ordering::Release);
        }
        let events = st.events.drain_where(|e| e.ctx == ctx);
        let freed: u64 = st
            .allocs
            .values()
            .filter(|a| a.ctx == ctx)
            .map(|a| a.size)
            .sum();
        st.allocs.retain(|_, a| a.ctx != ctx);
        st.used = st.used.saturating_sub(freed);
        self.inner.release_tenant(freed);
        drop(st);
        // Once everything queued is submitted: drop our references; the context goes (and
        // with it its memory, modules, streams and events) when the last one does.
        let pool = self.inner.exec.pool.clone();
        when_all(fences, move || {
            pool.submit(0, move || {
                drop((modules, streams, events));
                c.cu.kill();
                drop(c);
                done.done();
            });
        });
    }

    fn ctx_synchronize(&mut self, ctx: Handle, done: Completion) {
        let st = self.inner.lock();
        let c = match st.ctx(ctx) {
            Ok(c) => c,
            Err(e) => return done.fail(e),
        };
        let fences = c.set.all_work();
        let mut raws = vec![driver::Stream::null()];
        raws.extend(c.non_blocking.iter().map(|s| s.raw));
        let (cu, state) = (c.cu.clone(), c.state.clone());
        drop(st);
        self.inner
            .wait_streams_then(fences, cu, state, raws, move |r| done.result(r));
    }

    fn mem_alloc(&mut self, ctx: Handle, size: u64, done: Completion) {
        let mut st = self.inner.lock();
        let cu = match st.ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        if size == 0 {
            return done.fail(CuResult::INVALID_VALUE);
        }
        if st.used.saturating_add(size) > self.inner.quota {
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
            // Memory being freed behind running work may make room: retry once it is.
            let me = self.inner.clone();
            return when_all(pending, move || {
                let mut st = me.lock();
                let r = alloc(&me, &mut st, &cu, ctx, size);
                drop(st);
                done.complete(r.map(Output::DevPtr));
            });
        }
        let r = alloc(&self.inner, &mut st, &cu, ctx, size);
        drop(st);
        done.complete(r.map(Output::DevPtr));
    }

    fn mem_free(&mut self, ptr: DevPtr, done: Completion) {
        if ptr == 0 {
            return done.done();
        }
        let mut st = self.inner.lock();
        let (ctx, gen) = match st.allocs.get_mut(&ptr) {
            Some(a) if !a.global && !a.dying => {
                a.dying = true;
                (a.ctx, a.gen)
            }
            _ => return done.fail(CuResult::INVALID_VALUE),
        };
        let Some(c) = st.ctxs.get(ctx) else {
            return done.fail(CuResult::INVALID_CONTEXT);
        };
        let (fences, cu) = (c.set.all_work(), c.cu.clone());
        // cuMemFree waits for the device: on a pool thread, after everything queued before.
        let start = self
            .inner
            .free_after(&mut st, fences, cu, vec![(ptr, gen)], move || done.done());
        drop(st);
        start();
    }

    fn mem_free_async(&mut self, ptr: DevPtr, stream: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let ctx = match st.allocs.get(&ptr) {
            Some(a) if !a.global && !a.dying => a.ctx,
            _ => return Err(CuResult::INVALID_VALUE),
        };
        st.stream(ctx, stream)?;
        let gen = match st.allocs.get_mut(&ptr) {
            Some(a) => {
                a.dying = true;
                a.gen
            }
            None => return Err(CuResult::INVALID_VALUE),
        };
        let c = st.ctxs.get(ctx).ok_or(CuResult::INVALID_CONTEXT)?;
        let (fences, cu) = (c.set.all_work(), c.cu.clone());
        let start = self
            .inner
            .free_after(&mut st, fences, cu, vec![(ptr, gen)], || {});
        drop(st);
        start();
        Ok(())
    }

    fn mem_info(&self) -> (u64, u64) {
        let st = self.inner.lock();
        (self.inner.quota.saturating_sub(st.used), self.inner.quota)
    }

    fn htod_target(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<HtodTarget> {
        let n = usize::try_from(len).map_err(|_| CuResult::INVALID_VALUE)?;
        {
            let mut st = self.inner.lock();
            st.stream(ctx, stream)?;
            if len > 0 {
                st.range(ctx, dst, len)?;
            }
            for q in st.kicks.drain(..) {
                kick(q);
            }
        }
        Ok(HtodTarget::Staged(
            self.inner
                .exec
                .staging
                .buffer(n, &self.inner.exec.cancelled),
        ))
    }

    fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: HostBuf,
        stream: Handle,
        done: Completion,
    ) {
        let len = src.len() as u64;
        let cu = match self.inner.lock().ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        self.stream_work(
            ctx,
            stream,
            done,
            |st| {
                if len > 0 {
                    st.range(ctx, dst, len)
                } else {
                    Ok(())
                }
            },
            move |s, inner, state| {
                if len > 0 {
                    {
                        let _e = cu.enter()?;
                        // SAFETY: the destination lies in an allocation of the current
                        // context; `src` stays alive until the copy is complete (waited for
                        // below).
                        check(unsafe {
                            sys::cuMemcpyHtoDAsync_v2(
                                dst,
                                src.as_slice().as_ptr().cast(),
                                src.len(),
                                s.0,
                            )
                        })?;
                    }
                    finish_on(s, inner, state, &cu)?;
                }
                drop(src);
                Ok(Output::Done)
            },
        );
    }

    fn memcpy_dtoh(
        &mut self,
        ctx: Handle,
        src: DevPtr,
        len: u64,
        stream: Handle,
        done: Completion,
    ) {
        let Ok(n) = usize::try_from(len) else {
            return done.fail(CuResult::INVALID_VALUE);
        };
        let cu = match self.inner.lock().ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        self.stream_work(
            ctx,
            stream,
            done,
            |st| {
                if len > 0 {
                    st.range(ctx, src, len)
                } else {
                    Ok(())
                }
            },
            move |s, inner, state| {
                let mut v = vec![0u8; n];
                if n > 0 {
                    let _e = cu.enter()?;
                    // SAFETY: the source lies in an allocation of the current context; `v`
                    // stays alive until the copy is complete (waited for below).
                    check(unsafe {
                        sys::cuMemcpyDtoHAsync_v2(v.as_mut_ptr().cast(), src, n, s.0)
                    })?;
                }
                finish_on(s, inner, state, &cu)?;
                Ok(Output::Data(HostBuf::from_vec(v)))
            },
        );
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
        let wait = wait_result(done.mode());
        let cu = match self.inner.lock().ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        self.stream_work(
            ctx,
            stream,
            done,
            |st| {
                if len > 0 {
                    st.range(ctx, src, len)?;
                    st.range(ctx, dst, len)?;
                }
                Ok(())
            },
            move |s, inner, state| {
                if len > 0 {
                    let _e = cu.enter()?;
                    // SAFETY: both ranges lie in allocations of the current context.
                    check(unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len as usize, s.0) })?;
                }
                if wait {
                    finish_on(s, inner, state, &cu)?;
                }
                Ok(Output::Done)
            },
        );
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
        let len = match memset_len(dst, elem_size, count) {
            Ok(l) => l,
            Err(e) => return done.fail(e),
        };
        let wait = wait_result(done.mode());
        let cu = match self.inner.lock().ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        let n = count as usize;
        self.stream_work(
            ctx,
            stream,
            done,
            |st| {
                if len > 0 {
                    st.range(ctx, dst, len)
                } else {
                    Ok(())
                }
            },
            move |s, inner, state| {
                if n > 0 {
                    let _e = cu.enter()?;
                    // SAFETY: the range lies in an allocation of the current context.
                    check(unsafe {
                        match elem_size {
                            1 => sys::cuMemsetD8Async(dst, value as u8, n, s.0),
                            2 => sys::cuMemsetD16Async(dst, value as u16, n, s.0),
                            _ => sys::cuMemsetD32Async(dst, value, n, s.0),
                        }
                    })?;
                }
                if wait {
                    finish_on(s, inner, state, &cu)?;
                }
                Ok(Output::Done)
            },
        );
    }

    fn staging(&mut self, len: usize) -> ExecResult<HostBuf> {
        {
            let mut st = self.inner.lock();
            for q in st.kicks.drain(..) {
                kick(q);
            }
        }
        Ok(self
            .inner
            .exec
            .staging
            .buffer(len, &self.inner.exec.cancelled))
    }

    fn memcpy_3d(
        &mut self,
        ctx: Handle,
        copy: Copy3D,
        host: Option<HostBuf>,
        stream: Handle,
        done: Completion,
    ) {
        let plan = match limits::plan_copy_3d(&copy) {
            Ok(p) => p,
            Err(e) => return done.fail(e),
        };
        let expect_host = plan.src.is_none() && !plan.is_empty();
        let host_len = host.as_ref().map(|h| h.len() as u64);
        if (expect_host && host_len != Some(plan.packed_len()))
            || (!expect_host && host_len.is_some_and(|n| n != 0))
        {
            return done.fail(CuResult::INVALID_VALUE);
        }
        let wait = wait_result(done.mode()) || plan.dst.is_none() || plan.src.is_none();
        let cu = match self.inner.lock().ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        self.stream_work(
            ctx,
            stream,
            done,
            |st| {
                for p in [plan.src, plan.dst].into_iter().flatten() {
                    st.range(ctx, p.base, p.span)?;
                }
                Ok(())
            },
            move |s, inner, state| {
                let to_host = plan.dst.is_none();
                let mut out = if to_host {
                    vec![0u8; plan.packed_len() as usize]
                } else {
                    Vec::new()
                };
                if !plan.is_empty() {
                    let host_ptr = host
                        .as_ref()
                        .map(|h| h.as_slice().as_ptr())
                        .unwrap_or(ptr::null());
                    let (w, h) = (plan.width as usize, plan.height as usize);
                    // SAFETY: an all-zero CUDA_MEMCPY3D is valid plain data; the fields set
                    // below describe memory checked by `plan_copy_3d` and the range checks
                    // (device sides) or owned here (the packed host side).
                    let mut p: sys::CUDA_MEMCPY3D = unsafe { std::mem::zeroed() };
                    match plan.src {
                        Some(d) => {
                            p.srcMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
                            p.srcDevice = d.base;
                            p.srcPitch = d.pitch as usize;
                            p.srcHeight = (d.slice / d.pitch.max(1)) as usize;
                        }
                        None => {
                            p.srcMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_HOST;
                            p.srcHost = host_ptr.cast();
                            p.srcPitch = w;
                            p.srcHeight = h;
                        }
                    }
                    match plan.dst {
                        Some(d) => {
                            p.dstMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
                            p.dstDevice = d.base;
                            p.dstPitch = d.pitch as usize;
                            p.dstHeight = (d.slice / d.pitch.max(1)) as usize;
                        }
                        None => {
                            p.dstMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_HOST;
                            p.dstHost = out.as_mut_ptr().cast();
                            p.dstPitch = w;
                            p.dstHeight = h;
                        }
                    }
                    p.WidthInBytes = w;
                    p.Height = h;
                    p.Depth = plan.depth as usize;
                    let _e = cu.enter()?;
                    // SAFETY: the descriptor is complete (above); host buffers outlive the
                    // copy (waited for below when a host side is involved).
                    check(unsafe { sys::cuMemcpy3DAsync_v2(&p, s.0) })?;
                }
                if wait {
                    finish_on(s, inner, state, &cu)?;
                }
                drop(host);
                Ok(if to_host {
                    Output::Data(HostBuf::from_vec(out))
                } else {
                    Output::Done
                })
            },
        );
    }

    fn module_load(&mut self, ctx: Handle, images: Vec<Vec<u8>>, done: Completion) {
        let cu = match self.inner.lock().ctx(ctx) {
            Ok(c) => c.cu.clone(),
            Err(e) => return done.fail(e),
        };
        // JIT compilation and linking take a while: on a pool thread.
        let me = self.inner.clone();
        self.inner.exec.pool.submit(0, move || {
            let m = match load_module(&cu, &images, me.device_sm) {
                Ok(m) => m,
                Err(e) => return done.fail(e),
            };
            let mut st = me.lock();
            if let Err(e) = st.ctx(ctx) {
                drop(st);
                return done.fail(e);
            }
            let h = st.modules.insert(ModuleEntry {
                ctx,
                cu: Arc::new(driver::Module {
                    raw: Ptr(m),
                    ctx: cu,
                }),
                globals: Vec::new(),
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
        st.function_names.retain(|(x, _), _| *x != module);
        for g in &m.globals {
            st.allocs.remove(g);
        }
        let fences = st
            .ctxs
            .get(m.ctx)
            .map(|c| c.set.all_work())
            .unwrap_or_default();
        drop(st);
        // cuModuleUnload may wait for the module's kernels: on a pool thread, after
        // everything queued before is submitted.
        let pool = self.inner.exec.pool.clone();
        when_all(fences, move || {
            pool.submit(0, move || {
                drop(m);
                done.done();
            })
        });
    }

    fn module_get_function(&mut self, module: Handle, name: &str) -> ExecResult<FunctionInfo> {
        let mut st = self.inner.lock();
        let m = st.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, mcu) = (m.ctx, m.cu.clone());
        st.ctx(ctx)?;
        let key = (module, name.to_string());
        if let Some(&h) = st.function_names.get(&key) {
            if let Some(f) = st.functions.get(h) {
                return Ok(FunctionInfo {
                    handle: h,
                    params: f.params.clone(),
                    param_buffer_size: f.span,
                    attributes: function_attributes(self.inner.raw, &mcu.ctx, f.raw)?,
                });
            }
        }
        let cname = CString::new(name).map_err(|_| CuResult::INVALID_VALUE)?;
        let (f, params) = {
            let _e = mcu.ctx.enter()?;
            let mut f = ptr::null_mut();
            // SAFETY: live module, NUL-terminated name, out-pointer to a local.
            check(unsafe { sys::cuModuleGetFunction(&mut f, mcu.raw.0, cname.as_ptr()) })?;
            let mut params = Vec::new();
            for i in 0..MAX_PARAM_BYTES as usize {
                let (mut off, mut size) = (0usize, 0usize);
                // SAFETY: live function, out-pointers to locals; past the last parameter the
                // driver answers INVALID_VALUE, which ends the loop.
                if check(unsafe { sys::cuFuncGetParamInfo(f, i, &mut off, &mut size) }).is_err() {
                    break;
                }
                params.push(ParamInfo {
                    offset: u32::try_from(off).map_err(|_| CuResult::INVALID_VALUE)?,
                    size: u32::try_from(size).map_err(|_| CuResult::INVALID_VALUE)?,
                });
            }
            (Ptr(f), params)
        };
        let span = limits::param_span(&params)?;
        let attributes = function_attributes(self.inner.raw, &mcu.ctx, f)?;
        let get = |a| {
            attributes
                .iter()
                .find(|(x, _)| *x == a)
                .map(|(_, v)| (*v).max(0) as u32)
                .unwrap_or(0)
        };
        let h = st.functions.insert(Function {
            ctx,
            module,
            raw: f,
            _keep: mcu,
            params: params.clone(),
            span,
            max_threads: get(func_attr::MAX_THREADS_PER_BLOCK),
            max_dynamic_shared: get(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES),
        });
        st.function_names.insert(key, h);
        Ok(FunctionInfo {
            handle: h,
            params,
            param_buffer_size: span,
            attributes,
        })
    }

    fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)> {
        let mut st = self.inner.lock();
        let m = st.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, mcu) = (m.ctx, m.cu.clone());
        st.ctx(ctx)?;
        let cname = CString::new(name).map_err(|_| CuResult::INVALID_VALUE)?;
        let (mut p, mut size) = (0, 0usize);
        {
            let _e = mcu.ctx.enter()?;
            // SAFETY: live module, NUL-terminated name, out-pointers to locals.
            check(unsafe {
                sys::cuModuleGetGlobal_v2(&mut p, &mut size, mcu.raw.0, cname.as_ptr())
            })?;
        }
        // Module globals are memory of the context: copies to and from them are allowed.
        if !st.allocs.contains_key(&p) {
            st.next_gen += 1;
            let gen = st.next_gen;
            st.allocs.insert(
                p,
                Alloc {
                    size: size as u64,
                    ctx,
                    gen,
                    global: true,
                    dying: false,
                },
            );
            if let Some(m) = st.modules.get_mut(module) {
                m.globals.push(p);
            }
        }
        Ok((p, size as u64))
    }

    fn func_set_attribute(&mut self, func: Handle, attr: u32, value: i32) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let f = st.functions.get(func).ok_or(CuResult::INVALID_HANDLE)?;
        let (raw, cu) = (f.raw, f._keep.ctx.clone());
        st.ctx(f.ctx)?;
        let a = i32::try_from(attr).map_err(|_| CuResult::INVALID_VALUE)?;
        {
            let _e = cu.enter()?;
            // SAFETY: a live function of the current context; the driver validates the
            // attribute number and value.
            CuResult(unsafe { (self.inner.raw.func_set_attribute)(raw.0, a, value) }).ok()?;
        }
        let attrs = function_attributes(self.inner.raw, &cu, raw)?;
        if let Some(f) = st.functions.get_mut(func) {
            for (x, v) in attrs {
                match x {
                    func_attr::MAX_THREADS_PER_BLOCK => f.max_threads = v.max(0) as u32,
                    func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                        f.max_dynamic_shared = v.max(0) as u32
                    }
                    _ => {}
                }
            }
        }
        Ok(())
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
        let f = st.functions.get(func).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, raw, offsets) = (
            f.ctx,
            f.raw,
            f.params
                .iter()
                .map(|p| p.offset as usize)
                .collect::<Vec<_>>(),
        );
        if flags & !LAUNCH_COOPERATIVE != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        limits::check_launch(
            &dims,
            self.inner.max_threads,
            &FunctionLimits {
                max_threads: f.max_threads.max(1),
                max_dynamic_shared: f.max_dynamic_shared,
            },
        )?;
        limits::check_params(params.len(), f.span)?;
        let (q, rs) = st.stream(ctx, stream)?;
        let (cu, state) = {
            let c = st.ctx(ctx)?;
            (c.cu.clone(), c.state.clone())
        };
        let cooperative = flags & LAUNCH_COOPERATIVE != 0;
        if cooperative {
            let mut per_sm = 0;
            {
                let _e = cu.enter()?;
                // SAFETY: a live function of the current context, out-pointer to a local.
                check(unsafe {
                    sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                        &mut per_sm,
                        raw.0,
                        dims.threads_per_block() as i32,
                        dims.shared_mem_bytes as usize,
                    )
                })?;
            }
            if dims.blocks() > u64::from(per_sm.max(0) as u32) * u64::from(self.inner.sm_count) {
                return Err(CuResult::COOPERATIVE_LAUNCH_TOO_LARGE);
            }
        }
        let exec = self.inner.exec.clone();
        // The launch runs later on the stream: it keeps its own copy of the parameters.
        let params = params.to_vec();
        let work = on_stream(rs, move |s| {
            // Capture the handle whole (a bare raw pointer is not Send).
            let raw = raw;
            let _e = cu.enter()?;
            let [gx, gy, gz] = dims.grid;
            let [bx, by, bz] = dims.block;
            let r = if cooperative {
                // cuLaunchCooperativeKernel takes kernelParams only: pointers into the
                // packed buffer at each parameter's offset.
                let mut ptrs: Vec<*mut c_void> = offsets
                    .iter()
                    .map(|&o| params[o..].as_ptr() as *mut c_void)
                    .collect();
                // SAFETY: live function of the current context; every pointer addresses its
                // parameter inside `params` (offsets + sizes checked against its length).
                check(unsafe {
                    sys::cuLaunchCooperativeKernel(
                        raw.0,
                        gx,
                        gy,
                        gz,
                        bx,
                        by,
                        bz,
                        dims.shared_mem_bytes,
                        s.0,
                        ptrs.as_mut_ptr(),
                    )
                })
            } else {
                let mut size = params.len();
                let mut extra = [
                    ptr::without_provenance_mut::<c_void>(1), // CU_LAUNCH_PARAM_BUFFER_POINTER
                    params.as_ptr() as *mut c_void,
                    ptr::without_provenance_mut::<c_void>(2), // CU_LAUNCH_PARAM_BUFFER_SIZE
                    (&mut size as *mut usize).cast(),
                    ptr::null_mut(), // CU_LAUNCH_PARAM_END
                ];
                // SAFETY: live function of the current context; the parameter buffer holds at
                // least the bytes the kernel's parameters span and is copied by the driver
                // during the call.
                check(unsafe {
                    sys::cuLaunchKernel(
                        raw.0,
                        gx,
                        gy,
                        gz,
                        bx,
                        by,
                        bz,
                        dims.shared_mem_bytes,
                        s.0,
                        ptr::null_mut(),
                        extra.as_mut_ptr(),
                    )
                })
            };
            if let Err(e) = r {
                debug!(error = %e, "launch failed");
                state.poison(e);
                exec.sink.deferred(e);
            }
            Ok(Output::Done)
        });
        self.inner.submit(&mut st, ctx, &q, None, work, None);
        Ok(())
    }

    fn stream_create(&mut self, ctx: Handle, flags: u32, priority: i32) -> ExecResult<Handle> {
        const NON_BLOCKING: u32 = 1;
        if flags & !NON_BLOCKING != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let mut st = self.inner.lock();
        let (cu, state) = {
            let c = st.ctx(ctx)?;
            (c.cu.clone(), c.state.clone())
        };
        let raw = {
            let _e = cu.enter()?;
            let (mut least, mut greatest) = (0, 0);
            // SAFETY: out-pointers to locals; a context is current.
            check(unsafe { sys::cuCtxGetStreamPriorityRange(&mut least, &mut greatest) })?;
            let p = priority.clamp(greatest.min(least), greatest.max(least));
            let mut s = ptr::null_mut();
            // SAFETY: out-pointer to a local; a context is current.
            check(unsafe { sys::cuStreamCreateWithPriority(&mut s, flags, p) })?;
            (s, p)
        };
        let (raw, priority) = raw;
        let cus = Arc::new(driver::Stream {
            raw: Ptr(raw),
            ctx: cu,
        });
        let non_blocking = flags & NON_BLOCKING != 0;
        let q = StreamQ::new(self.inner.exec.clone(), state, non_blocking, -priority);
        if let Some(c) = st.ctxs.get_mut(ctx) {
            c.set.add(q.clone());
            if non_blocking {
                c.non_blocking.retain(|s| Arc::strong_count(s) > 1);
                c.non_blocking.push(cus.clone());
            }
        }
        Ok(st.streams.insert(StreamEntry { ctx, q, cu: cus }))
    }

    fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let s = st.streams.remove(stream).ok_or(CuResult::INVALID_HANDLE)?;
        s.q.destroyed.store(true, Ordering::Release);
        Ok(())
    }

    fn stream_synchronize(&mut self, stream: Handle, done: Completion) {
        let st = self.inner.lock();
        if stream == 0 {
            // No context named: every context's null stream.
            let targets: Vec<_> = st
                .ctxs
                .iter()
                .map(|(_, c)| (c.set.all_work(), c.cu.clone(), c.state.clone()))
                .collect();
            drop(st);
            let first: Arc<Mutex<Option<CuResult>>> = Arc::new(Mutex::new(None));
            let f2 = first.clone();
            let join = crate::executor::completion::JoinCounter::new(targets.len(), move || {
                let e = f2.lock().unwrap_or_else(|p| p.into_inner()).take();
                done.result(e.map_or(Ok(()), Err));
            });
            for (fences, cu, state) in targets {
                let (j, first) = (join.clone(), first.clone());
                self.inner.wait_streams_then(
                    fences,
                    cu,
                    state,
                    vec![driver::Stream::null()],
                    move |r| {
                        if let Err(e) = r {
                            first
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                        j.arrive();
                    },
                );
            }
            return;
        }
        let Some(s) = st.streams.get(stream) else {
            return done.fail(CuResult::INVALID_HANDLE);
        };
        let (fences, raw) = (s.q.last().into_iter().collect(), s.cu.raw);
        let (cu, state) = match st.ctx(s.ctx) {
            Ok(c) => (c.cu.clone(), c.state.clone()),
            Err(e) => return done.fail(e),
        };
        drop(st);
        self.inner
            .wait_streams_then(fences, cu, state, vec![raw], move |r| done.result(r));
    }

    fn stream_query(&mut self, stream: Handle) -> ExecResult<bool> {
        let st = self.inner.lock();
        let (pending, raws, cu) = if stream == 0 {
            let mut out = Vec::new();
            for (_, c) in st.ctxs.iter() {
                c.state.check()?;
                if !c.set.ready_now(&c.set.null) {
                    return Ok(false);
                }
                out.push(c.cu.clone());
            }
            drop(st);
            for cu in out {
                let _e = cu.enter()?;
                // SAFETY: the null stream of the current context.
                match check(unsafe { sys::cuStreamQuery(ptr::null_mut()) }) {
                    Ok(()) => {}
                    Err(e) if e == CuResult::NOT_READY => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            return Ok(true);
        } else {
            let s = st.streams.get(stream).ok_or(CuResult::INVALID_HANDLE)?;
            let c = st.ctx(s.ctx)?;
            (s.q.last().is_some(), s.cu.raw, c.cu.clone())
        };
        drop(st);
        if pending {
            return Ok(false);
        }
        let _e = cu.enter()?;
        // SAFETY: a live stream of the current context.
        match check(unsafe { sys::cuStreamQuery(raws.0) }) {
            Ok(()) => Ok(true),
            Err(e) if e == CuResult::NOT_READY => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn stream_wait_event(&mut self, stream: Handle, event: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let e = st.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        let (ev, ev_ctx, fence) = (e.ev.clone(), e.ctx, e.last.clone());
        let ctx = if stream == 0 {
            ev_ctx
        } else {
            st.streams.get(stream).ok_or(CuResult::INVALID_HANDLE)?.ctx
        };
        let (q, rs) = st.stream(ctx, stream)?;
        let cu = st.ctx(ctx)?.cu.clone();
        let work = on_stream(rs, move |s| {
            let _e = cu.enter()?;
            // SAFETY: a live stream of the current context and a live event (possibly of
            // another context: CUDA allows waiting across contexts).
            check(unsafe { sys::cuStreamWaitEvent(s.0, ev.raw.0, 0) })?;
            Ok(Output::Done)
        });
        self.inner.submit(&mut st, ctx, &q, fence, work, None);
        Ok(())
    }

    fn event_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle> {
        const INTERPROCESS: u32 = 4;
        if flags & !7 != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if flags & INTERPROCESS != 0 {
            return Err(CuResult::NOT_SUPPORTED);
        }
        let mut st = self.inner.lock();
        let cu = st.ctx(ctx)?.cu.clone();
        let ev = Event::create(&cu, flags & 3)?;
        Ok(st.events.insert(EventEntry {
            ctx,
            ev: Arc::new(ev),
            last: None,
        }))
    }

    fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()> {
        let mut st = self.inner.lock();
        let e = st.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, ev) = (e.ctx, e.ev.clone());
        let (q, rs) = st.stream(ctx, stream)?;
        let cu = st.ctx(ctx)?.cu.clone();
        let work = on_stream(rs, move |s| {
            let _e = cu.enter()?;
            // SAFETY: a live event and stream of the current context.
            check(unsafe { sys::cuEventRecord(ev.raw.0, s.0) })?;
            Ok(Output::Done)
        });
        let fence = self.inner.submit(&mut st, ctx, &q, None, work, None);
        if let Some(e) = st.events.get_mut(event) {
            e.last = Some(fence);
        }
        Ok(())
    }

    fn event_synchronize(&mut self, event: Handle, done: Completion) {
        let st = self.inner.lock();
        let Some(e) = st.events.get(event) else {
            return done.fail(CuResult::INVALID_HANDLE);
        };
        let (ev, fence) = (e.ev.clone(), e.last.clone());
        let state = match st.ctx(e.ctx) {
            Ok(c) => c.state.clone(),
            Err(err) => return done.fail(err),
        };
        drop(st);
        let me = self.inner.clone();
        when_all(fence.into_iter().collect(), move || {
            let pool = me.exec.pool.clone();
            pool.submit(0, move || done.result(me.wait(&ev, &state)));
        });
    }

    fn event_query(&mut self, event: Handle) -> ExecResult<bool> {
        let st = self.inner.lock();
        let e = st.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        st.ctx(e.ctx)?;
        if e.last.as_ref().is_some_and(|f| !f.is_done()) {
            return Ok(false);
        }
        let ev = e.ev.clone();
        drop(st);
        ev.query()
    }

    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32> {
        let st = self.inner.lock();
        let s = st.events.get(start).ok_or(CuResult::INVALID_HANDLE)?;
        let e = st.events.get(end).ok_or(CuResult::INVALID_HANDLE)?;
        if s.ctx != e.ctx {
            return Err(CuResult::INVALID_HANDLE);
        }
        st.ctx(s.ctx)?;
        if [&s.last, &e.last]
            .iter()
            .any(|l| l.as_ref().is_some_and(|f| !f.is_done()))
        {
            return Err(CuResult::NOT_READY);
        }
        let (a, b, cu) = (s.ev.clone(), e.ev.clone(), s.ev.ctx.clone());
        drop(st);
        let _e = cu.enter()?;
        let mut ms = 0f32;
        // SAFETY: live events of the current context, out-pointer to a local.
        check(unsafe { sys::cuEventElapsedTime(&mut ms, a.raw.0, b.raw.0) })?;
        Ok(ms)
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
            tracing::warn!("session work still queued after {} ms", grace.as_millis());
        }
        // Destroy the contexts now: that stops whatever kernels still run.
        let st = self.inner.lock();
        for (_, c) in st.ctxs.iter() {
            let cu = c.cu.clone();
            self.inner.exec.pool.submit(0, move || cu.kill());
        }
    }
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        self.inner.exec.cancelled.store(true, Ordering::Release);
        self.flush();
        let st = std::mem::take(&mut *self.inner.lock());
        // Everything the session held goes with its contexts.
        self.inner.release_tenant(st.used);
        // Destroying contexts may wait for the GPU: never on the session's thread.
        self.inner.exec.pool.submit(0, move || {
            for (_, c) in st.ctxs.iter() {
                c.cu.kill();
            }
            drop(st);
        });
    }
}

fn alloc(
    inner: &Inner,
    st: &mut State,
    cu: &Arc<Context>,
    ctx: Handle,
    size: u64,
) -> ExecResult<DevPtr> {
    st.ctx(ctx)?;
    if st.used.saturating_add(size) > inner.quota {
        return Err(CuResult::OUT_OF_MEMORY);
    }
    let bytes = usize::try_from(size).map_err(|_| CuResult::OUT_OF_MEMORY)?;
    // The tenant's share across all its sessions, before the GPU's.
    if let Some(t) = &inner.tenant {
        if !t.reserve(size) {
            return Err(CuResult::OUT_OF_MEMORY);
        }
    }
    let mut p = 0;
    {
        let allocated = cu.enter().and_then(|_e| {
            // SAFETY: out-pointer to a local; the context is current.
            check(unsafe { sys::cuMemAlloc_v2(&mut p, bytes) })
        });
        if let Err(e) = allocated {
            inner.release_tenant(size);
            return Err(e);
        }
    }
    st.next_gen += 1;
    let gen = st.next_gen;
    let old = st.allocs.insert(
        p,
        Alloc {
            size,
            ctx,
            gen,
            global: false,
            dying: false,
        },
    );
    // The driver may hand out an address whose free we have not booked yet: book it now.
    if let Some(old) = old {
        st.used = st.used.saturating_sub(old.size);
        inner.release_tenant(old.size);
    }
    st.used += size;
    Ok(p)
}

/// Every `CUfunction_attribute` the driver answers for `f`.
fn function_attributes(
    raw: &driver::Raw,
    cu: &Arc<Context>,
    f: Ptr<sys::CUfunc_st>,
) -> ExecResult<Vec<(u32, i32)>> {
    let _e = cu.enter()?;
    let mut out = Vec::new();
    for a in 0..=func_attr::SHARED_MEMORY_MODE {
        let mut v = 0;
        // SAFETY: a live function of the current context; unknown attribute numbers are
        // answered with an error.
        if unsafe { (raw.func_attribute)(&mut v, a as i32, f.0) } == 0 {
            out.push((a, v));
        }
    }
    Ok(out)
}

/// Loads `images` as one module: a single image as it is (`cuModuleLoadData`: PTX, fatbin
/// or cubin, as the driver chooses SASS or JIT); a `-rdc` link container by its device-linked
/// image when that has SASS for this GPU; otherwise its inputs through the JIT linker
/// (`cuLinkCreate`, `cuLinkAddData` by kind, `cuLinkComplete`).
fn load_module(cu: &Arc<Context>, images: &[Vec<u8>], device_sm: u32) -> ExecResult<sys::CUmodule> {
    use netgpu_image::{Limits, Role, UnitCode};
    let parts: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let units = netgpu_image::units(&parts, &Limits::default()).map_err(|e| {
        debug!(error = %e, "module image refused");
        e.cu_result()
    })?;
    let inputs: Vec<&UnitCode<'_>> = units
        .iter()
        .filter(|u| u.role == Role::Input)
        .map(|u| &u.code)
        .collect();
    let linked = units.iter().find_map(|u| match (&u.role, &u.code) {
        (Role::DeviceLinked, UnitCode::Fatbin(f)) if f.best_elf(device_sm).is_some() => {
            Some(&u.code)
        }
        _ => None,
    });
    let _e = cu.enter()?;
    let mut m = ptr::null_mut();
    let whole: Option<&UnitCode<'_>> = match (inputs.as_slice(), linked) {
        (_, Some(l)) => Some(l),
        ([one], None) => Some(one),
        ([], None) => return Err(CuResult::NO_BINARY_FOR_GPU),
        _ => None,
    };
    if let Some(unit) = whole {
        let (data, _) = prepare(unit);
        // SAFETY: a complete image (NUL-terminated if PTX) that outlives the call; a context
        // is current.
        check(unsafe { sys::cuModuleLoadData(&mut m, data.as_ptr().cast()) })?;
        return Ok(m);
    }
    let mut link = ptr::null_mut();
    // SAFETY: no options; out-pointer to a local.
    check(unsafe { sys::cuLinkCreate_v2(0, ptr::null_mut(), ptr::null_mut(), &mut link) })?;
    let r = (|| {
        for (i, unit) in inputs.iter().enumerate() {
            let (mut data, kind) = prepare(unit);
            let name = CString::new(format!("part{i}")).map_err(|_| CuResult::INVALID_VALUE)?;
            // SAFETY: a live link state; the data and name outlive the call.
            check(unsafe {
                sys::cuLinkAddData_v2(
                    link,
                    kind,
                    data.as_mut_ptr().cast(),
                    data.len(),
                    name.as_ptr(),
                    0,
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            })?;
        }
        let (mut cubin, mut size) = (ptr::null_mut(), 0usize);
        // SAFETY: a live link state; the cubin belongs to it until destroyed below.
        check(unsafe { sys::cuLinkComplete(link, &mut cubin, &mut size) })?;
        // SAFETY: the linked image lives until cuLinkDestroy below.
        check(unsafe { sys::cuModuleLoadData(&mut m, cubin) })
    })();
    // SAFETY: created above, destroyed once.
    unsafe {
        sys::cuLinkDestroy(link);
    }
    r.map(|_| m)
}

/// A unit's bytes as the driver takes them (PTX NUL-terminated), and its JIT input type.
fn prepare(unit: &netgpu_image::UnitCode<'_>) -> (Vec<u8>, sys::CUjitInputType) {
    use netgpu_image::UnitCode;
    use sys::CUjitInputType::*;
    match unit {
        UnitCode::Ptx(text) => {
            let mut v = text.as_bytes().to_vec();
            v.push(0);
            (v, CU_JIT_INPUT_PTX)
        }
        UnitCode::Fatbin(f) => (f.as_bytes().to_vec(), CU_JIT_INPUT_FATBINARY),
        UnitCode::Cubin(b) => (b.to_vec(), CU_JIT_INPUT_CUBIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_driver_is_an_error_not_a_panic() {
        // On machines with a GPU this opens it; on the others it must fail cleanly.
        match CudaExecutor::open(0) {
            Ok(e) => assert_eq!(e.device_info().executor, "cuda"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        assert!(CudaExecutor::open(10_000).is_err());
    }

    #[test]
    fn images_go_to_the_driver_with_their_jit_type() {
        let (v, k) = prepare(&netgpu_image::UnitCode::Ptx(".version 8.0\n"));
        assert_eq!(v.last(), Some(&0), "PTX is NUL-terminated");
        assert_eq!(k, sys::CUjitInputType::CU_JIT_INPUT_PTX);
        let (_, k) = prepare(&netgpu_image::UnitCode::Cubin(b"\x7fELF.."));
        assert_eq!(k, sys::CUjitInputType::CU_JIT_INPUT_CUBIN);
    }
}
