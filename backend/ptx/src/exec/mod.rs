//! Runs a decoded kernel.
//!
//! Blocks are independent and run in parallel on worker threads: the calling thread and
//! the free threads of a persistent pool ([`pool`]; no thread is started per launch). One
//! block at a time per worker, blocks taken in order, so a block that waits for an earlier
//! one, as CUB's decoupled look-back does, always waits for one that is running or done. A
//! cooperative launch keeps every block resident: the blocks are dealt into fixed shares,
//! each worker interleaves the blocks of the shares it claimed and the calling thread
//! claims every share no pool thread took, so grid-wide barriers work with any number of
//! pool threads free.
//!
//! Within a block ([`block`]), each thread runs on its own ([`thread`]) until it reaches a
//! collective instruction (a barrier or a warp collective), exits, or has used its time
//! slice at a backward branch or `nanosleep` (so a thread spinning on a flag another thread
//! sets lets that thread run). The block scheduler completes each collective once every
//! thread it involves has arrived and resumes them. Threads that can never meet are reported
//! as a deadlock instead of hanging.
//!
//! Memory ([`memory`]): every global access is resolved through [`DeviceMemory`] (whole
//! access inside one allocation, naturally aligned) and performed with an atomic operation
//! of the access width, with the ordering the instruction asks for (`.acquire`, `.release`;
//! fences are sequentially consistent), so racing kernels and cross-block protocols stay
//! well-defined in Rust's memory model. Shared and local accesses are bounds-checked
//! against the block's and the thread's memory.
//!
//! Launch control: a launch stops within one time slice when its cancellation flag is set
//! or its deadline passes, and collects the console output (`printf`) of its threads.

mod block;
mod memory;
mod pool;
mod thread;

pub use pool::{WorkerPool, MAX_POOL_THREADS};

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use crate::decode::Kernel;
use crate::error::LaunchError;
use crate::Module;

use block::Block;

/// Generic addresses in these windows name shared, local or parameter memory (`cvta`), or
/// the cooperative launch's grid workspace; all others are global. All lie far above any
/// device address an executor hands out.
pub const SHARED_WINDOW: u64 = 1 << 62;
pub const LOCAL_WINDOW: u64 = (1 << 62) + (1 << 48);
pub const PARAM_WINDOW: u64 = (1 << 62) + (2 << 48);
pub const GRID_WINDOW: u64 = (1 << 62) + (3 << 48);
const WINDOW_SIZE: u64 = 1 << 40;
/// Bytes of the grid workspace cooperative groups' `grid.sync()` uses (via `%envreg1/2`).
const GRID_WORKSPACE_WORDS: usize = 8;

/// Most shared memory (static + dynamic) one block may use.
pub const MAX_SHARED_MEMORY: u32 = 227 * 1024;
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Resident threads and blocks per multiprocessor, for occupancy and cooperative launches.
pub const MAX_THREADS_PER_SM: u32 = 2048;
pub const MAX_BLOCKS_PER_SM: u32 = 32;
/// Register file, local memory and shared memory one block may take on the host.
pub const MAX_BLOCK_STATE: u64 = 256 << 20;
/// ... and all the blocks one launch keeps at once (its workers' blocks, or every block of
/// a cooperative launch).
pub const MAX_RESIDENT_STATE: u64 = 4 * MAX_BLOCK_STATE;
/// Thread-instructions a thread runs before it yields at a backward branch.
const SLICE: u64 = 1 << 13;
/// How long worker 0 of a cooperative launch leaves shares of blocks to pool threads
/// before it claims the rest itself.
const STEAL_AFTER: std::time::Duration = std::time::Duration::from_millis(2);
/// CUDA's default printf FIFO size (`cudaLimitPrintfFifoSize`).
pub const DEFAULT_CONSOLE_LIMIT: usize = 1 << 20;

/// Device memory as the executor owns it.
pub trait DeviceMemory: Sync {
    /// Host pointer for `[addr, addr+len)` if the whole range lies inside one allocation.
    fn resolve(&self, addr: u64, len: usize) -> Option<NonNull<u8>>;
    /// The allocation containing `addr`: (device base, length, host pointer to the base).
    /// Optional; lets the interpreter keep the last allocation and skip lookups.
    fn region(&self, _addr: u64) -> Option<(u64, usize, NonNull<u8>)> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
    /// Worker threads for blocks; 0 = one per core.
    pub threads: usize,
}

/// How a launch is controlled: cooperative residency, cancellation, a deadline, and limits.
#[derive(Clone, Copy, Debug)]
pub struct LaunchOptions<'a> {
    /// `cuLaunchCooperativeKernel`: all blocks resident, grid-wide barriers work; a grid
    /// larger than [`max_cooperative_blocks`] is refused.
    pub cooperative: bool,
    /// Set by the caller to stop the launch (`LaunchError::Cancelled`).
    pub cancel: Option<&'a AtomicBool>,
    /// When the launch fails with `LaunchError::Timeout`.
    pub deadline: Option<Instant>,
    /// Most console output (`printf`) kept, in bytes (each call also counts 16 bytes, as
    /// CUDA's FIFO holds a header per record); the rest is dropped.
    pub console_limit: usize,
    /// Most thread-instructions the launch may execute (`LaunchError::InstructionLimit`);
    /// for fuzzing and tests.
    pub instruction_limit: Option<u64>,
    /// Multiprocessors the device reports; 0: one per worker thread.
    pub sm_count: u32,
    /// The threads helping the calling thread with a multi-block launch; `None`: the
    /// process's ([`WorkerPool::global`]).
    pub pool: Option<&'a WorkerPool>,
}

impl Default for LaunchOptions<'_> {
    fn default() -> Self {
        LaunchOptions {
            cooperative: false,
            cancel: None,
            deadline: None,
            console_limit: DEFAULT_CONSOLE_LIMIT,
            instruction_limit: None,
            sm_count: 0,
            pool: None,
        }
    }
}

/// What a launch produced, whether it succeeded or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOutput {
    pub result: Result<(), LaunchError>,
    /// Console output: each block's in block order; within a block, between barriers,
    /// warp by warp, each `printf` call of all lanes together (as a GPU prints them).
    pub console: Vec<u8>,
    /// Bytes of console output dropped beyond the limit.
    pub console_dropped: u64,
    /// Thread-instructions executed.
    pub instructions: u64,
}

/// Runs `kernel` over the whole grid. `globals[i]` is the device address of
/// `module.globals()[i]`.
pub fn launch(
    module: &Module,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    globals: &[u64],
    mem: &dyn DeviceMemory,
) -> Result<(), LaunchError> {
    launch_counted(module, kernel, cfg, params, globals, mem).map(|_| ())
}

/// As [`launch`], returning the number of thread-instructions executed (for benchmarks).
pub fn launch_counted(
    module: &Module,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    globals: &[u64],
    mem: &dyn DeviceMemory,
) -> Result<u64, LaunchError> {
    let out = launch_with(
        module,
        kernel,
        cfg,
        params,
        globals,
        mem,
        &LaunchOptions::default(),
    );
    out.result.map(|()| out.instructions)
}

/// Blocks of `threads_per_block` threads using `shared_bytes` of shared memory (static and
/// dynamic) that one multiprocessor holds at once.
pub fn blocks_per_sm(threads_per_block: u32, shared_bytes: u32) -> u32 {
    let warps = threads_per_block.div_ceil(32).max(1);
    let by_threads = MAX_THREADS_PER_SM / (warps * 32);
    let by_shared = MAX_SHARED_MEMORY
        .checked_div(shared_bytes)
        .unwrap_or(u32::MAX);
    by_threads.min(by_shared).min(MAX_BLOCKS_PER_SM)
}

/// Largest grid a cooperative launch of `kernel` may use.
pub fn max_cooperative_blocks(
    kernel: &Kernel,
    block: [u32; 3],
    shared_mem_bytes: u32,
    sm_count: u32,
) -> u64 {
    let threads = block.iter().map(|&d| u64::from(d)).product::<u64>();
    let Ok(threads) = u32::try_from(threads) else {
        return 0;
    };
    let shared = kernel.shared_static.saturating_add(shared_mem_bytes);
    u64::from(blocks_per_sm(threads, shared)) * u64::from(sm_count.max(1))
}

static GRID_IDS: AtomicU64 = AtomicU64::new(1);

/// The host's cores (asked once: the query reads cgroup files).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// One printf call: where it sorts, and its text.
struct Record {
    key: (u64, u32, u32, u32, u32),
    text: Vec<u8>,
}

/// What all workers of a launch share.
struct Ctx<'a> {
    k: &'a Kernel,
    params: &'a [u8],
    globals: &'a [u64],
    mem: &'a dyn DeviceMemory,
    cfg: &'a LaunchConfig,
    opts: &'a LaunchOptions<'a>,
    /// The launch's clock, read the first time a kernel asks for the time (`%clock`,
    /// `%globaltimer`): an instant and the nanoseconds since the Unix epoch then.
    clock: OnceLock<(Instant, u64)>,
    grid_id: u64,
    sm_count: u32,
    /// Set when any worker failed: the others stop.
    stop: AtomicBool,
    executed: AtomicU64,
    console_used: AtomicUsize,
    console_dropped: AtomicU64,
    records: Mutex<Vec<Record>>,
    grid_ws: Option<[AtomicU64; GRID_WORKSPACE_WORDS]>,
}

impl Ctx<'_> {
    /// Counts `delta` more thread-instructions of a worker into the launch's total and
    /// stops a launch that was cancelled, ran out of time or instructions, or that another
    /// worker has failed. The clock is read (for the deadline) each time the launch's total
    /// passes a multiple of [`SLICE`], so a short launch reads it never and a long one about
    /// once per time slice of any of its workers.
    fn check(&self, delta: u64) -> Result<(), LaunchError> {
        let before = self.executed.fetch_add(delta, Relaxed);
        if self.stop.load(Relaxed) {
            return Err(LaunchError::Cancelled);
        }
        if self.opts.cancel.is_some_and(|c| c.load(Relaxed)) {
            return Err(LaunchError::Cancelled);
        }
        let after = before.saturating_add(delta);
        if let Some(d) = self.opts.deadline {
            if before / SLICE != after / SLICE && Instant::now() >= d {
                return Err(LaunchError::Timeout);
            }
        }
        if let Some(limit) = self.opts.instruction_limit {
            if after > limit {
                return Err(LaunchError::InstructionLimit);
            }
        }
        Ok(())
    }

    /// The launch's clock (see `clock`).
    fn clock(&self) -> (Instant, u64) {
        *self.clock.get_or_init(|| {
            let epoch = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (Instant::now(), epoch)
        })
    }

    /// Takes one printf record if it fits under the console limit.
    fn console_reserve(&self, len: usize) -> bool {
        let cost = len + 16;
        let mut used = self.console_used.load(Relaxed);
        loop {
            if used.saturating_add(cost) > self.opts.console_limit {
                self.console_dropped.fetch_add(len as u64, Relaxed);
                return false;
            }
            match self
                .console_used
                .compare_exchange_weak(used, used + cost, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(u) => used = u,
            }
        }
    }
}

fn validate(
    module: &Module,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    globals: &[u64],
    opts: &LaunchOptions,
    sm_count: u32,
) -> Result<(), LaunchError> {
    let bad = |m: String| Err(LaunchError::InvalidConfig(m));
    let nthreads = cfg.block.iter().map(|&d| u64::from(d)).product::<u64>();
    if cfg.block.contains(&0) || cfg.grid.contains(&0) {
        return bad("a grid or block dimension is 0".into());
    }
    if nthreads > u64::from(MAX_THREADS_PER_BLOCK) || cfg.block[2] > 64 {
        return bad(format!(
            "{nthreads} threads per block (at most {MAX_THREADS_PER_BLOCK})"
        ));
    }
    let a = &kernel.attrs;
    if nthreads > u64::from(a.max_threads_per_block) {
        return bad(format!(
            "{nthreads} threads per block, kernel {} allows at most {} (.maxntid/.reqntid)",
            kernel.name, a.max_threads_per_block
        ));
    }
    if let Some(r) = a.reqntid {
        if r != cfg.block {
            return bad(format!(
                "block {:?}, kernel {} requires {r:?} (.reqntid)",
                cfg.block, kernel.name
            ));
        }
    }
    if cfg.grid[1] > 65_535 || cfg.grid[2] > 65_535 || cfg.grid[0] > i32::MAX as u32 {
        return bad("grid larger than 2^31-1 x 65535 x 65535".into());
    }
    let shared = u64::from(kernel.shared_static) + u64::from(cfg.shared_mem_bytes);
    if shared > u64::from(MAX_SHARED_MEMORY) {
        return bad(format!(
            "{shared} bytes of shared memory (at most {MAX_SHARED_MEMORY})"
        ));
    }
    if params.len() < kernel.param_size as usize {
        return bad(format!(
            "parameter buffer of {} bytes, kernel {} needs {}",
            params.len(),
            kernel.name,
            kernel.param_size
        ));
    }
    if globals.len() != module.globals().len() {
        return bad("global variable addresses do not match the module".into());
    }
    let state = block_state_bytes(kernel, nthreads, shared);
    if state > MAX_BLOCK_STATE {
        return Err(LaunchError::OutOfResources(format!(
            "a block of {nthreads} threads needs {state} bytes of registers and local memory (at most {MAX_BLOCK_STATE})"
        )));
    }
    if opts.cooperative {
        let nblocks = cfg.grid.iter().map(|&d| u64::from(d)).product::<u64>();
        let max = max_cooperative_blocks(kernel, cfg.block, cfg.shared_mem_bytes, sm_count);
        if nblocks > max {
            return Err(LaunchError::CooperativeTooLarge {
                blocks: nblocks,
                max,
            });
        }
        // Every block is resident at once: their state together must fit as well.
        let all = state.saturating_mul(nblocks);
        if all > MAX_RESIDENT_STATE {
            return Err(LaunchError::OutOfResources(format!(
                "{nblocks} resident blocks need {all} bytes of registers and local memory (at most {MAX_RESIDENT_STATE})"
            )));
        }
    }
    Ok(())
}

fn block_state_bytes(kernel: &Kernel, nthreads: u64, shared: u64) -> u64 {
    let regs = u64::from(kernel.nregs) * 8 + 16;
    (regs + u64::from(kernel.local_size)).saturating_mul(nthreads) + shared
}

/// Runs `worker(0..workers)`: worker 0 on the calling thread, the others on free threads of
/// `pool` (the process's if `None`); see [`WorkerPool::run`]. One worker runs inline, the
/// pool untouched (the common small launch).
fn run_workers(pool: Option<&WorkerPool>, workers: usize, worker: impl Fn(usize) + Sync) {
    if workers == 1 {
        return worker(0);
    }
    match pool {
        Some(p) => p.run(workers, &worker),
        None => WorkerPool::global().run(workers, &worker),
    }
}

/// Runs `kernel` over the whole grid under `opts`; the output holds the result, the
/// console output and the instruction count.
pub fn launch_with(
    module: &Module,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    params: &[u8],
    globals: &[u64],
    mem: &dyn DeviceMemory,
    opts: &LaunchOptions,
) -> LaunchOutput {
    let mut workers = match cfg.threads {
        0 => cores(),
        n => n,
    };
    let sm_count = if opts.sm_count == 0 {
        workers as u32
    } else {
        opts.sm_count
    };
    let fail = |e| LaunchOutput {
        result: Err(e),
        console: Vec::new(),
        console_dropped: 0,
        instructions: 0,
    };
    if let Err(e) = validate(module, kernel, cfg, params, globals, opts, sm_count) {
        return fail(e);
    }
    let nthreads = cfg.block.iter().map(|&d| u64::from(d)).product::<u64>() as usize;
    let shared_len = (kernel.shared_static + cfg.shared_mem_bytes) as usize;
    let nblocks = cfg.grid.iter().map(|&d| u64::from(d)).product::<u64>();
    // Keep the memory of all workers' blocks within bounds.
    let per_block = block_state_bytes(kernel, nthreads as u64, shared_len as u64).max(1);
    let budget_workers = (MAX_RESIDENT_STATE / per_block).max(1);
    workers = workers
        .min(usize::try_from(nblocks).unwrap_or(usize::MAX))
        .min(usize::try_from(budget_workers).unwrap_or(usize::MAX))
        .max(1);
    let ctx = Ctx {
        k: kernel,
        params,
        globals,
        mem,
        cfg,
        opts,
        clock: OnceLock::new(),
        grid_id: GRID_IDS.fetch_add(1, Relaxed),
        sm_count,
        stop: AtomicBool::new(false),
        executed: AtomicU64::new(0),
        console_used: AtomicUsize::new(0),
        console_dropped: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        grid_ws: opts
            .cooperative
            .then(|| std::array::from_fn(|_| AtomicU64::new(0))),
    };
    let first: Mutex<Option<LaunchError>> = Mutex::new(None);
    let record = |e: LaunchError| {
        let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e);
        ctx.stop.store(true, Relaxed);
    };
    if opts.cooperative {
        // Every block resident: the blocks are dealt into `workers` shares (share s:
        // blocks s, s + W, ...); each worker claims shares and interleaves their blocks.
        // Worker 0 (the calling thread) also claims the shares no pool thread took in
        // time, so grid-wide barriers complete with any number of pool threads free.
        let shares = workers as u64;
        let next_share = AtomicU64::new(0);
        let started = Instant::now();
        let claim = |blocks: &mut Vec<Block>| -> bool {
            if ctx.stop.load(Relaxed) {
                return false;
            }
            let s = next_share.fetch_add(1, Relaxed);
            if s >= shares {
                return false;
            }
            blocks.extend(
                (s..nblocks)
                    .step_by(workers)
                    .map(|id| Block::new(&ctx, nthreads, shared_len, s as usize, id)),
            );
            true
        };
        let worker = |w: usize| {
            let mut blocks: Vec<Block> = Vec::new();
            if !claim(&mut blocks) {
                return;
            }
            loop {
                let mut live = false;
                for b in blocks.iter_mut().filter(|b| !b.done) {
                    live = true;
                    if let Err(e) = b.round(&ctx) {
                        record(e);
                        return;
                    }
                    if b.done {
                        b.finish(&ctx);
                    }
                }
                if w == 0
                    && next_share.load(Relaxed) < shares
                    && (!live || started.elapsed() >= STEAL_AFTER)
                {
                    while claim(&mut blocks) {}
                    continue;
                }
                if !live {
                    break;
                }
            }
        };
        run_workers(opts.pool, workers, worker);
    } else {
        // Blocks are taken in order from one counter by whichever workers run.
        let next = AtomicU64::new(0);
        let worker = |w: usize| {
            if next.load(Relaxed) >= nblocks || ctx.stop.load(Relaxed) {
                // A pool thread that came late: nothing left.
                return;
            }
            let first = next.fetch_add(1, Relaxed);
            if first >= nblocks || ctx.stop.load(Relaxed) {
                return;
            }
            // The worker's block (the thread's resident one) is reset for each next block.
            block::with_block(&ctx, nthreads, shared_len, w, first, |b| loop {
                if let Err(e) = b.run(&ctx) {
                    b.finish(&ctx);
                    record(e);
                    break;
                }
                b.finish(&ctx);
                let id = next.fetch_add(1, Relaxed);
                if id >= nblocks || ctx.stop.load(Relaxed) {
                    break;
                }
                b.reset(&ctx, id);
            });
        };
        run_workers(opts.pool, workers, worker);
    }
    let mut records = ctx.records.into_inner().unwrap_or_else(|p| p.into_inner());
    let console = if records.is_empty() {
        Vec::new()
    } else {
        records.sort_by_key(|r| r.key);
        records.into_iter().flat_map(|r| r.text).collect()
    };
    LaunchOutput {
        result: match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        },
        console,
        console_dropped: ctx.console_dropped.into_inner(),
        instructions: ctx.executed.into_inner(),
    }
}
