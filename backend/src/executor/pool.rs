//! The executor's worker pool: runs stream work, waits for GPU events and performs deferred
//! releases for every session of one executor.
//!
//! The pool is elastic: a job that finds no idle worker gets a new thread (up to `max`), and a
//! worker idle for [`IDLE_TIMEOUT`] exits. A job may therefore run as long as it likes (a
//! one-second kernel, a blocking driver wait) without holding back any other stream or session:
//! a fixed-size pool would let two long kernels stall every other session's copies. When `max`
//! threads are busy, queued jobs wait and run highest priority first, then in submission order.
//!
//! A job that panics is caught and logged; the worker goes on serving (no input may panic the
//! backend, but a bug must not take a pool thread with it).
//!
//! Why not tokio's blocking pool or rayon: tokio's needs a runtime handle in every engine
//! (including the conformance tests' bare engines) and has no priorities; rayon's fixed pool
//! is the head-of-line blocking described above.

use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{error, warn};

/// A worker with nothing to do for this long exits.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queued {
    priority: i32,
    seq: u64,
    job: Job,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.priority == o.priority && self.seq == o.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    /// Max-heap order: higher priority first, then lower sequence number (FIFO).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct State {
    queue: BinaryHeap<Queued>,
    seq: u64,
    threads: usize,
    idle: usize,
}

struct Inner {
    name: String,
    max: usize,
    state: Mutex<State>,
    cv: Condvar,
}

/// A handle to the pool; clones share it.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// A pool of at most `max` threads (at least 1), named `name-N` in thread listings.
    pub fn new(name: &str, max: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                name: name.to_string(),
                max: max.max(1),
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on a pool thread. Higher `priority` runs first when the pool is saturated.
    pub fn submit(&self, priority: i32, job: impl FnOnce() + Send + 'static) {
        let mut st = lock(&self.inner.state);
        let seq = st.seq;
        st.seq += 1;
        st.queue.push(Queued {
            priority,
            seq,
            job: Box::new(job),
        });
        if st.idle >= st.queue.len() {
            drop(st);
            self.inner.cv.notify_one();
            return;
        }
        if st.threads < self.inner.max {
            st.threads += 1;
            let n = st.threads;
            drop(st);
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{n}", self.inner.name))
                .spawn(move || worker(inner));
            if let Err(e) = spawned {
                warn!(pool = %self.inner.name, error = %e, "cannot start a pool thread");
                let mut st = lock(&self.inner.state);
                st.threads -= 1;
                if st.threads == 0 {
                    // Nobody would ever run the queue: run the job here rather than lose it.
                    if let Some(q) = st.queue.pop() {
                        drop(st);
                        run(&self.inner.name, q.job);
                    }
                }
            }
        } else {
            drop(st);
            self.inner.cv.notify_one();
        }
    }

    /// Threads currently alive (busy or idle).
    pub fn threads(&self) -> usize {
        lock(&self.inner.state).threads
    }

    /// Threads currently running a job.
    pub fn busy(&self) -> usize {
        let st = lock(&self.inner.state);
        st.threads - st.idle
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(name: &str, job: Job) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
        error!(pool = %name, "a pool job panicked (a backend bug); the worker goes on");
    }
}

fn worker(inner: Arc<Inner>) {
    let mut st = lock(&inner.state);
    loop {
        if let Some(q) = st.queue.pop() {
            drop(st);
            run(&inner.name, q.job);
            st = lock(&inner.state);
            continue;
        }
        st.idle += 1;
        let (guard, timeout) = inner
            .cv
            .wait_timeout(st, IDLE_TIMEOUT)
            .unwrap_or_else(|p| p.into_inner());
        st = guard;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_long_job_does_not_hold_back_others() {
        let pool = Pool::new("t", 8);
        let (tx, rx) = mpsc::channel();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        pool.submit(0, move || {
            let _ = hold_rx.recv_timeout(Duration::from_secs(10));
        });
        let t = Instant::now();
        pool.submit(0, move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(pool.threads() >= 2);
        hold_tx.send(()).unwrap();
    }

    #[test]
    fn a_saturated_pool_runs_higher_priority_first() {
        let pool = Pool::new("t", 1);
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        pool.submit(0, move || {
            let _ = go_rx.recv_timeout(Duration::from_secs(10));
        });
        for (p, name) in [(0, "low"), (5, "high"), (0, "low2")] {
            let tx = tx.clone();
            pool.submit(p, move || tx.send(name).unwrap());
        }
        go_tx.send(()).unwrap();
        let order: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_pool() {
        let pool = Pool::new("t", 1);
        pool.submit(0, || panic!("boom"));
        let (tx, rx) = mpsc::channel();
        pool.submit(0, move || tx.send(1).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    }
}
