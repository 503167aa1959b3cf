//! How results of work that finishes later reach the session, and the host buffers bulk data
//! moves through.
//!
//! - [`Completion`]: the one-shot result of one request. An engine method that takes one calls
//!   it exactly once, on whatever thread the work finishes (at once, with a validation error,
//!   or later from a pool thread). A completion dropped without a result reports
//!   `CUDA_ERROR_ILLEGAL_STATE`, so a bug can never leave a client waiting forever.
//! - [`Sink`]: where completions go (the session's reply writer; a channel in tests).
//! - [`HostBuf`]: host bytes of a copy: owned, or borrowed from device memory (zero-copy paths
//!   of the CPU executor) or from pinned staging memory (CUDA executor), with a release action
//!   that runs when the session is done with them.
//! - [`Signal`]: a one-shot event with callbacks, the building block of fences and joins.

use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DevPtr, FunctionInfo, Handle};

use super::ExecResult;

/// What a completed request returns.
pub enum Output {
    Done,
    Handle(Handle),
    DevPtr(DevPtr),
    Function(FunctionInfo),
    /// Bytes for the reply's data section (a device-to-host copy).
    Data(HostBuf),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Done => write!(f, "Done"),
            Output::Handle(h) => write!(f, "Handle({h:#x})"),
            Output::DevPtr(p) => write!(f, "DevPtr({p:#x})"),
            Output::Function(i) => write!(f, "Function({:#x})", i.handle),
            Output::Data(d) => write!(f, "Data({} bytes)", d.len()),
        }
    }
}

/// How the session answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sent with `FLAG_NO_REPLY`: a failure is kept for the next synchronising request.
    NoReply,
    /// Answered with its own result.
    Reply,
    /// A synchronising request: answered with a kept failure of earlier `NO_REPLY` work
    /// instead of its own result, if there is one when it completes.
    SyncReply,
}

/// Receives the results of completions.
pub trait Sink: Send + Sync {
    fn complete(&self, id: u64, mode: Mode, result: ExecResult<Output>);
    /// A failure of stream-ordered work that has no completion of its own (a launch fault):
    /// reported by the next synchronising request.
    fn deferred(&self, error: CuResult);
}

/// The one-shot result of a request; see the module docs.
pub struct Completion {
    sink: Option<Arc<dyn Sink>>,
    id: u64,
    mode: Mode,
}

impl Completion {
    pub fn new(sink: Arc<dyn Sink>, id: u64, mode: Mode) -> Completion {
        Completion {
            sink: Some(sink),
            id,
            mode,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn complete(mut self, result: ExecResult<Output>) {
        if let Some(s) = self.sink.take() {
            s.complete(self.id, self.mode, result);
        }
    }

    pub fn done(self) {
        self.complete(Ok(Output::Done))
    }

    pub fn fail(self, e: CuResult) {
        self.complete(Err(e))
    }

    /// Completes with `Done` or the error.
    pub fn result(self, r: ExecResult<()>) {
        self.complete(r.map(|_| Output::Done))
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(s) = self.sink.take() {
            s.complete(self.id, self.mode, Err(CuResult::ILLEGAL_STATE));
        }
    }
}

enum Backing {
    Owned(Vec<u8>),
    /// Memory owned elsewhere, kept alive by `_keep` while this buffer exists.
    Borrowed {
        ptr: NonNull<u8>,
        len: usize,
        _keep: Box<dyn Send>,
    },
}

/// Host bytes of a copy; see the module docs.
pub struct HostBuf {
    backing: Backing,
    on_release: Option<Box<dyn FnOnce() + Send>>,
}

// SAFETY: an owned buffer is a Vec; a borrowed one points into memory that its creator
// guarantees (see `HostBuf::borrowed`) stays valid and unaliased until release, whichever
// thread holds the buffer.
unsafe impl Send for HostBuf {}

impl HostBuf {
    pub fn from_vec(v: Vec<u8>) -> HostBuf {
        HostBuf {
            backing: Backing::Owned(v),
            on_release: None,
        }
    }

    /// A buffer over memory owned elsewhere. `on_release` runs when the buffer is dropped.
    ///
    /// # Safety
    /// `[ptr, ptr+len)` must stay valid while `keep` lives, and nothing else may read or write
    /// it until `on_release` runs (the creator holds whatever lock guarantees that).
    pub unsafe fn borrowed(
        ptr: NonNull<u8>,
        len: usize,
        keep: Box<dyn Send>,
        on_release: Option<Box<dyn FnOnce() + Send>>,
    ) -> HostBuf {
        HostBuf {
            backing: Backing::Borrowed {
                ptr,
                len,
                _keep: keep,
            },
            on_release,
        }
    }

    /// Adds an action to run when the buffer is released (after any earlier one).
    pub fn then(mut self, f: impl FnOnce() + Send + 'static) -> HostBuf {
        let prev = self.on_release.take();
        self.on_release = Some(Box::new(move || {
            if let Some(p) = prev {
                p();
            }
            f();
        }));
        self
    }

    pub fn len(&self) -> usize {
        match &self.backing {
            Backing::Owned(v) => v.len(),
            Backing::Borrowed { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.backing {
            Backing::Owned(v) => v,
            // SAFETY: valid and unaliased until release (the contract of `borrowed`).
            Backing::Borrowed { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.backing {
            Backing::Owned(v) => v,
            // SAFETY: as in `as_slice`; `&mut self` makes this the only access through it.
            Backing::Borrowed { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
        }
    }

    /// Takes the bytes out as a vector (copying borrowed ones) and releases the buffer.
    pub fn into_vec(mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.backing, Backing::Owned(Vec::new())) {
            Backing::Owned(v) => v,
            b @ Backing::Borrowed { .. } => {
                self.backing = b;
                self.as_slice().to_vec()
            }
        }
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        if let Some(f) = self.on_release.take() {
            f();
        }
    }
}

type Callback = Box<dyn FnOnce() + Send>;

enum SignalState {
    Pending(Vec<Callback>),
    Fired,
}

/// A one-shot event: callbacks registered before it fires run on the firing thread, after it
/// fires they run at once on the registering thread. Never call into it holding a lock a
/// callback might take.
pub struct Signal {
    state: Mutex<SignalState>,
    cv: Condvar,
}

impl Signal {
    pub fn new() -> Arc<Signal> {
        Arc::new(Signal {
            state: Mutex::new(SignalState::Pending(Vec::new())),
            cv: Condvar::new(),
        })
    }

    /// A signal that has already fired.
    pub fn fired() -> Arc<Signal> {
        Arc::new(Signal {
            state: Mutex::new(SignalState::Fired),
            cv: Condvar::new(),
        })
    }

    pub fn fire(&self) {
        let cbs = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::replace(&mut *st, SignalState::Fired) {
                SignalState::Pending(cbs) => cbs,
                SignalState::Fired => Vec::new(),
            }
        };
        self.cv.notify_all();
        for cb in cbs {
            cb();
        }
    }

    pub fn is_fired(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            SignalState::Fired
        )
    }

    pub fn on_fire(&self, f: impl FnOnce() + Send + 'static) {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let SignalState::Pending(cbs) = &mut *st {
                cbs.push(Box::new(f));
                return;
            }
        }
        f();
    }

    /// Blocks until fired or `timeout` passes; true if fired.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if matches!(*st, SignalState::Fired) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Fires `then` once every one of `count` arrivals has called [`JoinCounter::arrive`].
pub struct JoinCounter {
    left: Mutex<usize>,
    then: Mutex<Option<Callback>>,
}

impl JoinCounter {
    /// With `count` 0, `then` runs at once.
    pub fn new(count: usize, then: impl FnOnce() + Send + 'static) -> Arc<JoinCounter> {
        let j = Arc::new(JoinCounter {
            left: Mutex::new(count),
            then: Mutex::new(Some(Box::new(then))),
        });
        if count == 0 {
            j.run();
        }
        j
    }

    pub fn arrive(&self) {
        let zero = {
            let mut l = self.left.lock().unwrap_or_else(|p| p.into_inner());
            *l = l.saturating_sub(1);
            *l == 0
        };
        if zero {
            self.run();
        }
    }

    fn run(&self) {
        let f = self.then.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = f {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Seen = (u64, Mode, Result<String, CuResult>);
    struct Collect(Mutex<Vec<Seen>>);
    impl Sink for Collect {
        fn complete(&self, id: u64, mode: Mode, r: ExecResult<Output>) {
            self.0
                .lock()
                .unwrap()
                .push((id, mode, r.map(|o| format!("{o:?}"))));
        }
        fn deferred(&self, _: CuResult) {}
    }

    #[test]
    fn a_dropped_completion_reports_illegal_state_once() {
        let s = Arc::new(Collect(Mutex::new(Vec::new())));
        drop(Completion::new(s.clone(), 7, Mode::Reply));
        Completion::new(s.clone(), 8, Mode::Reply).done();
        let got = s.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (7, Mode::Reply, Err(CuResult::ILLEGAL_STATE)),
                (8, Mode::Reply, Ok("Done".into()))
            ]
        );
    }

    #[test]
    fn signals_run_callbacks_once_before_or_after_firing() {
        let n = Arc::new(AtomicUsize::new(0));
        let s = Signal::new();
        let n1 = n.clone();
        s.on_fire(move || {
            n1.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        s.fire();
        s.fire();
        let n2 = n.clone();
        s.on_fire(move || {
            n2.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 11);
        assert!(s.wait_timeout(Duration::from_millis(1)));
    }

    #[test]
    fn a_join_fires_after_the_last_arrival() {
        let n = Arc::new(AtomicUsize::new(0));
        let n1 = n.clone();
        let j = JoinCounter::new(2, move || {
            n1.fetch_add(1, Ordering::SeqCst);
        });
        j.arrive();
        assert_eq!(n.load(Ordering::SeqCst), 0);
        j.arrive();
        j.arrive();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let n2 = n.clone();
        JoinCounter::new(0, move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn host_buffers_release_once_and_copy_out() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut backing = vec![1u8, 2, 3];
        let ptr = NonNull::new(backing.as_mut_ptr()).unwrap();
        let n1 = n.clone();
        // SAFETY: `backing` outlives the buffer and is not touched while it exists.
        let b = unsafe {
            HostBuf::borrowed(
                ptr,
                3,
                Box::new(()),
                Some(Box::new(move || {
                    n1.fetch_add(1, Ordering::SeqCst);
                })),
            )
        };
        let n2 = n.clone();
        let b = b.then(move || {
            n2.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(b.as_slice(), &[1, 2, 3]);
        assert_eq!(b.into_vec(), vec![1, 2, 3]);
        assert_eq!(n.load(Ordering::SeqCst), 11);
        drop(backing);
    }
}
