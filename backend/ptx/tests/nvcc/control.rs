//! Launch control: deadlines, cancellation, instruction limits, threads that spin on each
//! other, and concurrent launches of one module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netgpu_ptx::{LaunchError, Module};

use crate::util::*;

/// Spins until the word at the parameter is non-zero (never, here).
const SPIN: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry spin(.param .u64 p)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [p];
$L_loop:
    ld.volatile.global.u32 %r1, [%rd1];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra $L_loop;
    ret;
}
.visible .entry sleepy(.param .u64 p)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [p];
$L_loop:
    nanosleep.u32 1000;
    ld.acquire.gpu.global.u32 %r1, [%rd1];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra $L_loop;
    ret;
}
"#;

/// Thread 0 waits (without a barrier) for a flag thread 1 sets in shared memory after
/// some work; only time slicing lets thread 1 run.
const HANDSHAKE: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry handshake(.param .u64 out)
{
    .shared .align 4 .u32 flag;
    .reg .b64 %rd<2>;
    .reg .b32 %r<6>;
    .reg .pred %p<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra $L_wait;
    setp.ne.u32 %p2, %r1, 1;
    @%p2 bra $L_done;
    mov.u32 %r2, 0;
$L_work:
    add.u32 %r2, %r2, 1;
    setp.lt.u32 %p3, %r2, 50000;
    @%p3 bra $L_work;
    st.volatile.shared.u32 [flag], %r2;
    bra $L_done;
$L_wait:
    ld.volatile.shared.u32 %r3, [flag];
    setp.eq.u32 %p3, %r3, 0;
    @%p3 bra $L_wait;
    st.global.u32 [%rd1], %r3;
$L_done:
    ret;
}
"#;

/// Runs `f` on another thread; fails the test if it has not returned after a minute (a
/// hang guard, not a speed check).
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the launch did not stop")
}

#[test]
fn a_deadline_stops_a_runaway_kernel() {
    let r = within_a_minute(|| {
        let m = Module::load(SPIN).unwrap();
        let gpu = Gpu::new();
        let flag = gpu.zeros(4);
        for kernel in ["spin", "sleepy"] {
            let mut l = Launch::new(&m, kernel, 64, 256);
            l.threads = 4;
            l.opts.deadline = Some(Instant::now() + Duration::from_millis(30));
            let e = l.run(&gpu, &[&u64b(flag)]).unwrap_err();
            if e != LaunchError::Timeout {
                return Err(e);
            }
        }
        Ok(())
    });
    r.unwrap();
    assert_eq!(LaunchError::Timeout.cuda_error(), 702);
}

#[test]
fn cancellation_stops_a_running_kernel() {
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let m = Module::load(SPIN).unwrap();
        let gpu = Gpu::new();
        let flag = gpu.zeros(4);
        let mut l = Launch::new(&m, "spin", 8, 1024);
        l.opts.cancel = Some(&c2);
        tx.send(()).unwrap();
        l.run(&gpu, &[&u64b(flag)])
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    cancel.store(true, Ordering::Relaxed);
    let r = within_a_minute(move || h.join().unwrap());
    assert_eq!(r, Err(LaunchError::Cancelled));
}

#[test]
fn an_instruction_limit_bounds_a_launch() {
    let m = Module::load(SPIN).unwrap();
    let gpu = Gpu::new();
    let flag = gpu.zeros(4);
    let mut l = Launch::new(&m, "spin", 2, 32);
    l.opts.instruction_limit = Some(100_000);
    let out = l.output(&gpu, &[&u64b(flag)]);
    assert_eq!(out.result, Err(LaunchError::InstructionLimit));
    assert!(out.instructions >= 100_000 && out.instructions < 10_000_000);
}

#[test]
fn a_thread_spinning_on_another_lets_it_run() {
    let m = Module::load(HANDSHAKE).unwrap();
    let gpu = Gpu::new();
    let out = gpu.zeros(4);
    within_a_minute(move || {
        Launch::new(&m, "handshake", 1, 64)
            .run(&gpu, &[&u64b(out)])
            .unwrap();
        assert_eq!(gpu.download::<u32>(out, 1)[0], 50_000);
    });
}

#[test]
fn concurrent_launches_of_one_module_share_memory_safely() {
    let m = module("atomics.ptx");
    let gpu = Arc::new(Gpu::new());
    let n = 2000usize;
    let x: Vec<i32> = (0..n as i32).collect();
    let inp = gpu.upload(&x);
    let counters: Vec<u64> = (0..4).map(|_| gpu.zeros(16 * 4)).collect();
    let shared_hist = gpu.zeros(16 * 4);
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let (m, gpu, c) = (m.clone(), gpu.clone(), counters[k]);
            std::thread::spawn(move || {
                let h64 = gpu.zeros(16 * 8);
                let fsum = gpu.zeros(4);
                let mins = gpu.upload(&[i32::MAX]);
                let maxs = gpu.upload(&[i32::MIN]);
                for hist in [c, shared_hist] {
                    Launch::new(&m, "atomics_shared", 8, 256)
                        .run(
                            &gpu,
                            &[
                                &u64b(inp),
                                &i32b(n as i32),
                                &u64b(hist),
                                &u64b(h64),
                                &u64b(fsum),
                                &u64b(mins),
                                &u64b(maxs),
                            ],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let want = vec![(n / 16) as u32; 16];
    for c in counters {
        assert_eq!(gpu.download::<u32>(c, 16), want);
    }
    // Four launches added into the same histogram at once.
    let all: Vec<u32> = want.iter().map(|w| w * 4).collect();
    assert_eq!(gpu.download::<u32>(shared_hist, 16), all);
}

/// `dirty` fills its registers, shared and local memory; `peek` stores what it finds in its
/// own (never written) registers, shared and local memory.
pub(crate) const LEFTOVERS: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry dirty()
{
    .shared .align 4 .b8 sh[1024];
    .local .align 4 .b8 loc[64];
    .reg .b64 %rd<4>;
    .reg .b32 %r<8>;
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, 0x5eC1E7;
    mov.u32 %r3, 0x5eC1E7;
    mov.u32 %r4, 0x5eC1E7;
    mul.wide.u32 %rd1, %r1, 4;
    mov.u64 %rd2, sh;
    add.u64 %rd2, %rd2, %rd1;
    st.shared.u32 [%rd2], %r2;
    mov.u64 %rd3, loc;
    st.local.u32 [%rd3], %r2;
    st.local.u32 [%rd3+60], %r2;
    ret;
}
.visible .entry peek(.param .u64 out)
{
    .shared .align 4 .b8 sh[1024];
    .local .align 4 .b8 loc[64];
    .reg .b64 %rd<8>;
    .reg .b32 %r<8>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 16;
    add.u64 %rd1, %rd1, %rd2;
    mul.wide.u32 %rd3, %r1, 4;
    mov.u64 %rd4, sh;
    add.u64 %rd4, %rd4, %rd3;
    ld.shared.u32 %r2, [%rd4];
    mov.u64 %rd5, loc;
    ld.local.u32 %r3, [%rd5];
    ld.local.u32 %r4, [%rd5+60];
    st.global.u32 [%rd1], %r2;
    st.global.u32 [%rd1+4], %r3;
    st.global.u32 [%rd1+8], %r4;
    st.global.u32 [%rd1+12], %r5;
    ret;
}
"#;

#[test]
fn a_launch_sees_nothing_an_earlier_launch_left_in_registers_shared_or_local_memory() {
    // The interpreter keeps block buffers between launches on a thread: they must come back
    // zeroed, or one session's kernel could read another's data.
    let m = Module::load(LEFTOVERS).unwrap();
    let gpu = Gpu::new();
    for (dirty_block, peek_block, threads) in
        [(256, 256, 1), (256, 64, 1), (32, 256, 1), (256, 256, 2)]
    {
        let mut d = Launch::new(&m, "dirty", 4, dirty_block);
        d.threads = threads;
        d.run(&gpu, &[]).unwrap();
        let out = gpu.zeros(peek_block as usize * 16);
        let mut p = Launch::new(&m, "peek", 1, peek_block);
        p.threads = threads;
        p.run(&gpu, &[&u64b(out)]).unwrap();
        let seen = gpu.download::<u32>(out, peek_block as usize * 4);
        assert!(
            seen.iter().all(|&v| v == 0),
            "leftovers after dirty<<<4,{dirty_block}>>>, peek<<<1,{peek_block}>>>: {:x?}",
            seen.iter().find(|&&v| v != 0)
        );
    }
}

#[test]
fn kernel_ids_name_the_same_kernels_as_their_names() {
    let m = Module::load(SPIN).unwrap();
    for name in ["spin", "sleepy"] {
        let id = m.kernel_id(name).unwrap();
        assert_eq!(m.kernel_by_id(id).unwrap().name, name);
        assert!(std::ptr::eq(
            m.kernel_by_id(id).unwrap(),
            m.kernel(name).unwrap()
        ));
    }
    assert_ne!(m.kernel_id("spin"), m.kernel_id("sleepy"));
    assert_eq!(m.kernel_id("nope"), None);
}

/// `put` stores `v` at `out[%ctaid.x * blockDim + %tid.x]`.
const PUT: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry put(.param .u64 out, .param .u32 v)
{
    .reg .b64 %rd<4>;
    .reg .b32 %r<6>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [v];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mad.lo.u32 %r5, %r3, %r4, %r2;
    mul.wide.u32 %rd2, %r5, 4;
    add.u64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r1;
    ret;
}
"#;

#[test]
fn a_launch_never_reaches_memory_through_an_earlier_launchs_resolved_addresses() {
    // A thread keeps its block between launches, with the allocations its accesses last
    // resolved; a later launch over other memory (another session's) at the same device
    // addresses must resolve them afresh, not write through the earlier host pointers.
    let m = Module::load(PUT).unwrap();
    for (grid, block, threads) in [(1, 1, 1), (4, 32, 1), (8, 32, 2)] {
        let n = (grid * block) as usize;
        let (a, b) = (Gpu::new(), Gpu::new());
        let (pa, pb) = (a.zeros(n * 4), b.zeros(n * 4));
        assert_eq!(pa, pb, "both memories hand out the same first address");
        let mut l = Launch::new(&m, "put", grid, block);
        l.threads = threads;
        l.run(&a, &[&u64b(pa), &1u32.to_le_bytes()]).unwrap();
        l.run(&b, &[&u64b(pb), &2u32.to_le_bytes()]).unwrap();
        assert_eq!(a.download::<u32>(pa, n), vec![1; n], "<<<{grid},{block}>>>");
        assert_eq!(b.download::<u32>(pb, n), vec![2; n], "<<<{grid},{block}>>>");
    }
}
