//! Thin, owning wrappers around CUDA driver objects, and the waits the CUDA engine uses.
//!
//! - [`Context`]: a CUDA context. Every driver call that uses it goes through
//!   [`Context::enter`], which makes it current on the calling thread and holds a read lock;
//!   [`Context::kill`] takes the write lock, destroys the context at once (stopping its
//!   kernels: the kernel time limit and session teardown use it) and makes every later
//!   `enter` fail, so no thread ever uses a destroyed context and the objects below skip
//!   their own destruction (the driver freed them with the context).
//! - [`Stream`], [`Event`], [`Module`]: destroyed on drop, reference-counted by queued work.
//! - [`wait_event`]: polls an event (spinning briefly, then sleeping with back-off) so a wait
//!   can be cancelled and timed: a blocking `cuEventSynchronize` could be neither.
//! - [`Raw`]: entry points whose enum arguments must take any value (`cuDeviceGetAttribute`
//!   for attribute numbers newer than cudarc's bindings), resolved from the same library.

use std::ffi::c_int;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cudarc::driver::sys;
use netgpu_proto::cuda::CuResult;

use crate::executor::ExecResult;

pub fn check(r: sys::CUresult) -> ExecResult<()> {
    CuResult(r as u32).ok()
}

/// Entry points called with plain integers for their enum arguments.
pub struct Raw {
    pub device_attribute: unsafe extern "C" fn(*mut c_int, c_int, sys::CUdevice) -> u32,
    pub func_attribute: unsafe extern "C" fn(*mut c_int, c_int, sys::CUfunction) -> u32,
    pub func_set_attribute: unsafe extern "C" fn(sys::CUfunction, c_int, c_int) -> u32,
}

/// The raw entry points, once libcuda is loaded (`None` if a symbol is missing).
pub fn raw() -> Option<&'static Raw> {
    static RAW: OnceLock<Option<Raw>> = OnceLock::new();
    RAW.get_or_init(|| {
        // SAFETY: only called after `is_culib_present()` succeeded (the executor checks it
        // first); the symbols are looked up by name with the signatures of `cuda.h`, in which
        // these enum parameters are C ints.
        unsafe {
            let lib = sys::culib();
            Some(Raw {
                device_attribute: *lib.get(b"cuDeviceGetAttribute\0").ok()?,
                func_attribute: *lib.get(b"cuFuncGetAttribute\0").ok()?,
                func_set_attribute: *lib.get(b"cuFuncSetAttribute\0").ok()?,
            })
        }
    })
    .as_ref()
}

/// A CUDA context; see the module docs.
pub struct Context {
    raw: sys::CUcontext,
    /// `true` once destroyed.
    dead: RwLock<bool>,
}

// SAFETY: a CUDA context may be used from any thread; all use goes through `enter`, which
// makes it current on the calling thread and excludes `kill`.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

/// Proof that a context is current on this thread and alive.
pub struct Entered<'a>(#[allow(dead_code)] RwLockReadGuard<'a, bool>);

impl Context {
    pub fn create(dev: sys::CUdevice) -> ExecResult<Arc<Context>> {
        let mut c = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; `dev` was obtained from cuDeviceGet.
        check(unsafe { sys::cuCtxCreate_v2(&mut c, 0, dev) })?;
        Ok(Arc::new(Context {
            raw: c,
            dead: RwLock::new(false),
        }))
    }

    /// Makes the context current on this thread; fails once it is destroyed.
    pub fn enter(&self) -> ExecResult<Entered<'_>> {
        let g = self.dead.read().unwrap_or_else(|p| p.into_inner());
        if *g {
            return Err(CuResult::CONTEXT_IS_DESTROYED);
        }
        // SAFETY: the context is alive (checked under the lock that `kill` needs).
        check(unsafe { sys::cuCtxSetCurrent(self.raw) })?;
        Ok(Entered(g))
    }

    /// Destroys the context now (waiting for driver calls in progress on other threads).
    pub fn kill(&self) {
        let mut g = self.dead.write().unwrap_or_else(|p| p.into_inner());
        if !*g {
            *g = true;
            // SAFETY: the context was created by `create` and is destroyed once; nothing uses
            // it any more (every use holds the read lock we now exclude).
            unsafe {
                sys::cuCtxDestroy_v2(self.raw);
            }
        }
    }

    fn alive(&self) -> bool {
        !*self.dead.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw driver pointer that may cross threads (it is only used with its context entered).
#[derive(Clone, Copy)]
pub struct Ptr<T>(pub *mut T);
// SAFETY: driver handles are plain identifiers valid from any thread.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Ptr<T> {}

macro_rules! owned {
    ($name:ident, $raw:ty, $destroy:path) => {
        pub struct $name {
            pub raw: Ptr<$raw>,
            pub ctx: Arc<Context>,
        }

        impl Drop for $name {
            fn drop(&mut self) {
                if !self.ctx.alive() {
                    return;
                }
                if let Ok(_e) = self.ctx.enter() {
                    // SAFETY: created in this context, destroyed once, context alive.
                    unsafe {
                        $destroy(self.raw.0);
                    }
                }
            }
        }
    };
}

owned!(Stream, sys::CUstream_st, sys::cuStreamDestroy_v2);
owned!(Event, sys::CUevent_st, sys::cuEventDestroy_v2);
owned!(Module, sys::CUmod_st, sys::cuModuleUnload);

impl Stream {
    /// The null stream of a context (never destroyed).
    pub fn null() -> Ptr<sys::CUstream_st> {
        Ptr(std::ptr::null_mut())
    }
}

impl Event {
    /// A new event in `ctx` (`flags`: `CU_EVENT_*`).
    pub fn create(ctx: &Arc<Context>, flags: u32) -> ExecResult<Event> {
        let _e = ctx.enter()?;
        let mut ev = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; the context is current.
        check(unsafe { sys::cuEventCreate(&mut ev, flags) })?;
        Ok(Event {
            raw: Ptr(ev),
            ctx: ctx.clone(),
        })
    }

    /// An event marking everything queued on `stream` so far.
    pub fn fence(ctx: &Arc<Context>, stream: Ptr<sys::CUstream_st>) -> ExecResult<Event> {
        const DISABLE_TIMING: u32 = 2;
        let ev = Event::create(ctx, DISABLE_TIMING)?;
        let _e = ctx.enter()?;
        // SAFETY: event and stream belong to the current context.
        check(unsafe { sys::cuEventRecord(ev.raw.0, stream.0) })?;
        Ok(ev)
    }

    /// `Ok(true)` when the event's work is done.
    pub fn query(&self) -> ExecResult<bool> {
        let _e = self.ctx.enter()?;
        // SAFETY: a live event of the current context.
        match check(unsafe { sys::cuEventQuery(self.raw.0) }) {
            Ok(()) => Ok(true),
            Err(e) if e == CuResult::NOT_READY => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Why a wait ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The driver reported an error (a sticky one poisons the context).
    Failed(CuResult),
    /// The session ended.
    Cancelled,
    /// The wait outlasted the session's kernel time limit.
    TimedOut,
}

/// Waits until `ev` completes, polling: busy (yielding) for the first 100 µs, then sleeping
/// 20 µs doubling to 1 ms. Stops when `cancelled()` says so or after `limit`.
pub fn wait_event(
    ev: &Event,
    cancelled: impl Fn() -> bool,
    limit: Option<Duration>,
) -> Result<(), WaitEnd> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(20);
    loop {
        match ev.query() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(WaitEnd::Failed(e)),
        }
        if cancelled() {
            return Err(WaitEnd::Cancelled);
        }
        let waited = start.elapsed();
        if limit.is_some_and(|l| waited > l) {
            return Err(WaitEnd::TimedOut);
        }
        if waited < Duration::from_micros(100) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}
