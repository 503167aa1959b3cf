//! The worker threads multi-block launches run their blocks on.
//!
//! A launch with `W` workers runs worker 0 on the calling thread and offers workers
//! `1..W` to a pool of persistent threads ([`WorkerPool`]); pool threads that are free take
//! them, the others do not wait for them. The launch returns once its own worker has
//! returned and every pool thread that took one of its workers has returned too; a worker
//! no pool thread took before then never runs. So a launch never waits for a pool thread
//! to become free: with every pool thread busy (another stream's launch, on another
//! calling thread), the calling thread runs all blocks itself. The launch code is written
//! for any number of workers actually showing up: blocks are taken from one counter, and
//! a cooperative launch's shares of blocks are claimed from one counter, worker 0 claiming
//! every share nobody took (see `super::launch_with`).
//!
//! Which pool: [`WorkerPool::global`], one per process, unless a launch names its own
//! ([`super::LaunchOptions::pool`]). One per process because cores are a per-process
//! resource: every executor, session and stream of a process launching on its own pool
//! would only oversubscribe the same cores. Its threads are started lazily, up to the
//! largest `workers - 1` a launch asked for (`LaunchConfig::threads`, or one per core the
//! process may use; capped at [`MAX_POOL_THREADS`]), and park on a condition variable when
//! idle (no spinning). An owned pool ([`WorkerPool::new`]) is for callers that want their
//! launches isolated from the rest of the process (tests, a bounded tenant); dropping it
//! stops and joins its threads.
//!
//! Hand-written rather than `rayon`: a rayon scope waits for every job it spawned, so a
//! launch would wait for pool threads busy with another launch (head-of-line blocking
//! between streams); here an offered worker that no thread took is withdrawn instead.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Most threads one pool starts.
pub const MAX_POOL_THREADS: usize = 256;

/// A set of persistent worker threads for launches; see the module docs.
pub struct WorkerPool {
    shared: Arc<Shared>,
    /// Threads of an owned pool, joined on drop (the global pool is never dropped).
    handles: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// Idle pool threads wait here for a job (or the shutdown).
    wake: Condvar,
    name: &'static str,
}

#[derive(Default)]
struct State {
    /// Launches offering workers, oldest first.
    jobs: VecDeque<Arc<Job>>,
    threads: usize,
    idle: usize,
    /// Pool threads running a launch's worker now.
    busy: usize,
    shutdown: bool,
}

/// One launch's offer of workers `1..=wanted`.
struct Job {
    /// The launch's worker function, its lifetime erased (see [`WorkerPool::run`]).
    work: *const (dyn Fn(usize) + Sync + 'static),
    st: Mutex<JobState>,
    /// The launch's calling thread waits here for the pool threads running its workers.
    done: Condvar,
}

// SAFETY: `work` points to a `Sync` closure (callable from any thread); it is dereferenced
// only by pool threads that took a worker of the job while it was offered, and the thread
// that offered it (`WorkerPool::run`) does not return before those have finished (see
// there). The rest of `Job` is `Send + Sync` by itself.
unsafe impl Send for Job {}
// SAFETY: as above.
unsafe impl Sync for Job {}

#[derive(Default)]
struct JobState {
    /// Workers still offered.
    wanted: usize,
    /// The next worker index handed out.
    next: usize,
    /// Pool threads running a worker of this job.
    running: usize,
    /// The first panic of a worker on a pool thread (a bug of the interpreter; re-raised
    /// on the calling thread as `std::thread::scope` would).
    panic: Option<Box<dyn Any + Send>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkerPool {
    /// A pool whose threads are started as launches need them (none now).
    pub fn new() -> WorkerPool {
        WorkerPool::named("ptx-pool")
    }

    fn named(name: &'static str) -> WorkerPool {
        WorkerPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                name,
            }),
            handles: Mutex::new(Vec::new()),
        }
    }

    /// The process's pool, used by launches that name none.
    pub fn global() -> &'static WorkerPool {
        static GLOBAL: std::sync::OnceLock<WorkerPool> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| WorkerPool::named("ptx-worker"))
    }

    /// Threads started so far.
    pub fn threads(&self) -> usize {
        lock(&self.shared.state).threads
    }

    /// Threads running a launch's worker right now.
    pub fn busy(&self) -> usize {
        lock(&self.shared.state).busy
    }

    /// Runs `worker(0)` on the calling thread and offers `worker(1)` .. `worker(workers - 1)`
    /// to free pool threads; returns when `worker(0)` and every offered worker a pool
    /// thread took have returned. Workers not taken by then never run: `worker` must get
    /// all the work done from any subset of its indices that includes 0.
    pub(super) fn run(&self, workers: usize, worker: &(dyn Fn(usize) + Sync)) {
        if workers <= 1 {
            return worker(0);
        }
        let wanted = workers - 1;
        // SAFETY: only the lifetime is changed (same layout). The pointer is dereferenced
        // by pool threads that took a worker while the job was in the queue, and `Offer`'s
        // drop (on return and on unwind alike) takes the job out of the queue and then
        // waits until no pool thread runs a worker of it, so no dereference outlives this
        // call, during which `worker` is borrowed.
        let work: &'static (dyn Fn(usize) + Sync + 'static) = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(worker)
        };
        let job = Arc::new(Job {
            work,
            st: Mutex::new(JobState {
                wanted,
                next: 1,
                ..JobState::default()
            }),
            done: Condvar::new(),
        });
        let mut offer = Offer {
            pool: self,
            job,
            withdrawn: false,
        };
        self.post(&offer.job, wanted);
        worker(0);
        if let Some(p) = offer.withdraw() {
            resume_unwind(p);
        }
    }

    /// Queues `job` and wakes (or starts) threads for its `wanted` workers.
    fn post(&self, job: &Arc<Job>, wanted: usize) {
        let mut st = lock(&self.shared.state);
        st.jobs.push_back(job.clone());
        let wake = wanted.min(st.idle);
        for _ in 0..wake {
            self.shared.wake.notify_one();
        }
        // The pool grows to the most workers one launch offers, not to the sum of all
        // launches running at once: a launch's calling thread works too, so launches at
        // once never wait for each other, and cores are not oversubscribed further.
        let want = wanted.min(MAX_POOL_THREADS);
        while st.threads < want {
            let shared = self.shared.clone();
            let n = st.threads;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{n}", self.shared.name))
                .spawn(move || pool_thread(&shared));
            match spawned {
                Ok(h) => {
                    st.threads += 1;
                    lock(&self.handles).push(h);
                }
                // No thread: the launch runs on the threads there are.
                Err(_) => break,
            }
        }
    }
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("WorkerPool")
            .field("name", &self.shared.name)
            .field("threads", &st.threads)
            .field("busy", &st.busy)
            .finish()
    }
}

impl Default for WorkerPool {
    fn default() -> Self {
        WorkerPool::new()
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_all();
        for h in std::mem::take(&mut *lock(&self.handles)) {
            let _ = h.join();
        }
    }
}

/// A posted job; dropping it withdraws the job and waits for its running workers.
struct Offer<'a> {
    pool: &'a WorkerPool,
    job: Arc<Job>,
    withdrawn: bool,
}

impl Offer<'_> {
    /// Withdraws the job, waits for the pool threads running its workers and returns the
    /// first panic one of them raised.
    fn withdraw(&mut self) -> Option<Box<dyn Any + Send>> {
        self.withdrawn = true;
        {
            let mut st = lock(&self.pool.shared.state);
            st.jobs.retain(|j| !Arc::ptr_eq(j, &self.job));
        }
        // No thread can take a worker now (they take them only from the queue).
        let mut js = lock(&self.job.st);
        js.wanted = 0;
        while js.running > 0 {
            js = self.job.done.wait(js).unwrap_or_else(|p| p.into_inner());
        }
        js.panic.take()
    }
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        // On unwind from worker 0: the pool threads must not outlive the borrow.
        if !self.withdrawn {
            let _ = self.withdraw();
        }
    }
}

fn pool_thread(shared: &Shared) {
    let mut st = lock(&shared.state);
    loop {
        if st.shutdown {
            st.threads -= 1;
            return;
        }
        let Some(job) = st.jobs.front().cloned() else {
            st.idle += 1;
            st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
            continue;
        };
        let index = {
            let mut js = lock(&job.st);
            if js.wanted == 0 {
                None
            } else {
                js.wanted -= 1;
                js.running += 1;
                js.next += 1;
                Some((js.next - 1, js.wanted == 0))
            }
        };
        let Some((index, last)) = index else {
            st.jobs.pop_front();
            continue;
        };
        if last {
            st.jobs.pop_front();
        }
        st.busy += 1;
        drop(st);
        // SAFETY: this thread took a worker of `job` while it was queued (`running` counts
        // it), so the launch that offered it is still inside `WorkerPool::run`, waiting
        // for `running` to reach 0 before its closure goes away.
        let work = unsafe { &*job.work };
        let r = catch_unwind(AssertUnwindSafe(|| work(index)));
        // Not busy before the launch can see its worker done (so `busy` never counts a
        // thread of a launch that has returned).
        st = lock(&shared.state);
        st.busy -= 1;
        let mut js = lock(&job.st);
        if let Err(p) = r {
            js.panic.get_or_insert(p);
        }
        js.running -= 1;
        if js.running == 0 {
            job.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[test]
    fn every_worker_index_runs_at_most_once_and_worker_0_always() {
        let pool = WorkerPool::new();
        for workers in [1, 2, 3, 8] {
            for _ in 0..50 {
                let seen: Vec<AtomicUsize> = (0..workers).map(|_| AtomicUsize::new(0)).collect();
                pool.run(workers, &|w| {
                    seen[w].fetch_add(1, SeqCst);
                });
                assert_eq!(seen[0].load(SeqCst), 1);
                assert!(seen.iter().all(|s| s.load(SeqCst) <= 1));
            }
        }
        assert!(pool.threads() <= 7, "{} threads", pool.threads());
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn a_panicking_pool_worker_reaches_the_caller_and_the_pool_goes_on() {
        let pool = WorkerPool::new();
        let started = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, &|w| {
                if w == 0 {
                    // Give the pool thread the time to take worker 1.
                    while started.load(SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                } else {
                    started.store(1, SeqCst);
                    panic!("worker {w}");
                }
            })
        }));
        assert!(r.is_err());
        let ran = AtomicUsize::new(0);
        pool.run(2, &|_| {
            ran.fetch_add(1, SeqCst);
        });
        assert!(ran.load(SeqCst) >= 1);
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn dropping_an_owned_pool_joins_its_threads() {
        let pool = WorkerPool::new();
        let n = AtomicUsize::new(0);
        pool.run(4, &|_| {
            n.fetch_add(1, SeqCst);
        });
        let shared = pool.shared.clone();
        assert!(pool.threads() >= 1);
        drop(pool);
        assert_eq!(lock(&shared.state).threads, 0);
        assert_eq!(Arc::strong_count(&shared), 1);
    }
}
