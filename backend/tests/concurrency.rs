//! The dispatcher over real TCP: requests of one session do not wait for each other's work,
//! streams run concurrently and in order, CUDA's null-stream rules hold, replies come back out
//! of order, and nothing is lost or deadlocked with many threads and streams at once.
//!
//! Concurrency is shown without timed asserts: a kernel that waits for a flag (with a
//! timeout) only sees it when the kernel that sets it runs at the same time.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::kernels::{launch1, read_u32, Arg, Kernels, MS};
use common::{TestBackend, TOKEN};
use netgpu_client::CuResult;
use netgpu_proto::wire::frame::{FrameHeader, FrameKind, FLAG_NO_REPLY};
use netgpu_proto::wire::ops::{self, Reply, Request};
use netgpu_proto::wire::{HEADER_LEN, PROTOCOL_VERSION};

const NON_BLOCKING: u32 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_call_is_answered_while_another_request_waits_for_a_kernel() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let s = c.stream_create(ctx, 0).await.unwrap();
    let flag = c.mem_alloc(ctx, 4).await.unwrap();
    let out = c.mem_alloc(ctx, 4).await.unwrap();
    // The kernel runs until the flag is set (or 10 s pass).
    launch1(
        &c,
        k.wait_flag,
        s,
        &[Arg::U64(flag), Arg::U64(out), Arg::U64(10_000 * MS)],
    )
    .await;
    let c2 = c.clone();
    let sync = tokio::spawn(async move { c2.stream_synchronize(s).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Meanwhile the same session allocates, queries and copies (on a stream of its own: the
    // null stream would wait for `s`).
    let nb = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    for i in 0..20u8 {
        let p = c.mem_alloc(ctx, 64).await.unwrap();
        c.memcpy_htod(ctx, p, &[i; 64], nb).await.unwrap();
        assert_eq!(c.memcpy_dtoh(ctx, p, 64, nb).await.unwrap(), vec![i; 64]);
        c.mem_get_info().await.unwrap();
        c.null().await.unwrap();
    }
    assert!(!sync.is_finished(), "the sync waits for the kernel");
    // Release the kernel through host memory.
    c.memcpy_htod(ctx, flag, &1u32.to_le_bytes(), nb)
        .await
        .unwrap();
    sync.await.unwrap().unwrap();
    assert_eq!(read_u32(&c, ctx, out).await, 1, "the kernel saw the flag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kernels_on_two_streams_run_at_the_same_time() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let s1 = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let s2 = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let flag = c.mem_alloc(ctx, 4).await.unwrap();
    let out = c.mem_alloc(ctx, 4).await.unwrap();
    launch1(
        &c,
        k.wait_flag,
        s1,
        &[Arg::U64(flag), Arg::U64(out), Arg::U64(5_000 * MS)],
    )
    .await;
    launch1(&c, k.set_flag, s2, &[Arg::U64(flag)]).await;
    c.ctx_synchronize(ctx).await.unwrap();
    assert_eq!(
        read_u32(&c, ctx, out).await,
        1,
        "stream 1's kernel saw stream 2's flag"
    );
}

/// `wait_all`: every thread waits (up to `timeout` ns) for the word at `flag`, then stores
/// `flag * 1000 + global thread id` (or 0 when it timed out) at `out`; `fill` stores
/// `3 * global thread id`; `set` stores `v` at `flag`.
const MULTI_BLOCK: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.visible .entry wait_all(.param .u64 flag, .param .u64 out, .param .u64 timeout)
{
    .reg .u64 %f, %o, %t0, %t1, %d, %n, %a;
    .reg .u32 %x, %g, %v;
    .reg .pred %p, %q;
    ld.param.u64 %f, [flag];
    ld.param.u64 %o, [out];
    ld.param.u64 %n, [timeout];
    mov.u32 %g, %ctaid.x;
    mov.u32 %x, %ntid.x;
    mov.u32 %v, %tid.x;
    mad.lo.u32 %g, %g, %x, %v;
    mul.wide.u32 %a, %g, 4;
    add.u64 %o, %o, %a;
    mov.u64 %t0, %globaltimer;
LOOP:
    ld.volatile.global.u32 %x, [%f];
    setp.ne.u32 %p, %x, 0;
    @%p bra SEEN;
    mov.u64 %t1, %globaltimer;
    sub.u64 %d, %t1, %t0;
    setp.lt.u64 %q, %d, %n;
    @%q bra LOOP;
    st.global.u32 [%o], 0;
    ret;
SEEN:
    mad.lo.u32 %v, %x, 1000, %g;
    st.global.u32 [%o], %v;
    ret;
}
.visible .entry fill(.param .u64 out)
{
    .reg .u64 %o, %a;
    .reg .u32 %x, %g, %v;
    ld.param.u64 %o, [out];
    mov.u32 %g, %ctaid.x;
    mov.u32 %x, %ntid.x;
    mov.u32 %v, %tid.x;
    mad.lo.u32 %g, %g, %x, %v;
    mul.wide.u32 %a, %g, 4;
    add.u64 %o, %o, %a;
    mul.lo.u32 %v, %g, 3;
    st.global.u32 [%o], %v;
    ret;
}
.visible .entry set(.param .u64 flag, .param .u32 v)
{
    .reg .u64 %f;
    .reg .u32 %v;
    ld.param.u64 %f, [flag];
    ld.param.u32 %v, [v];
    st.volatile.global.u32 [%f], %v;
    ret;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_block_kernels_on_two_streams_run_at_the_same_time_with_all_workers_busy() {
    // Two workers per launch: stream 1's kernel holds its calling thread and the worker pool's
    // thread until stream 2 has run a multi-block kernel (alone on its calling thread, the
    // pool being busy) and set the flag.
    let b = TestBackend::start_with(|c| c.cpu.threads = 2).await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let m = c.module_load(ctx, MULTI_BLOCK.as_bytes()).await.unwrap();
    let f = |n: &'static str| {
        let c = &c;
        async move { c.module_get_function(m, n).await.unwrap().handle }
    };
    let (wait_all, fill, set) = (f("wait_all").await, f("fill").await, f("set").await);
    let s1 = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let s2 = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let flag = c.mem_alloc(ctx, 4).await.unwrap();
    let (n1, n2) = (4 * 32, 16 * 64);
    let out1 = c.mem_alloc(ctx, n1 * 4).await.unwrap();
    let out2 = c.mem_alloc(ctx, n2 * 4).await.unwrap();
    let p = common::kernels::params;
    c.launch_kernel(
        wait_all,
        [4, 1, 1],
        [32, 1, 1],
        0,
        s1,
        &p(&[Arg::U64(flag), Arg::U64(out1), Arg::U64(20_000 * MS)]),
    )
    .await
    .unwrap();
    c.launch_kernel(fill, [16, 1, 1], [64, 1, 1], 0, s2, &p(&[Arg::U64(out2)]))
        .await
        .unwrap();
    c.launch_kernel(
        set,
        [1, 1, 1],
        [1, 1, 1],
        0,
        s2,
        &p(&[Arg::U64(flag), Arg::U32(7)]),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), c.ctx_synchronize(ctx))
        .await
        .expect("no deadlock")
        .unwrap();
    let words = |b: Vec<u8>| -> Vec<u32> {
        b.chunks(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect()
    };
    let got1 = words(c.memcpy_dtoh(ctx, out1, n1 * 4, 0).await.unwrap());
    let got2 = words(c.memcpy_dtoh(ctx, out2, n2 * 4, 0).await.unwrap());
    let want1: Vec<u32> = (0..n1 as u32).map(|g| 7000 + g).collect();
    let want2: Vec<u32> = (0..n2 as u32).map(|g| 3 * g).collect();
    assert_eq!(got1, want1, "stream 1's blocks saw stream 2's flag");
    assert_eq!(got2, want2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_null_stream_waits_for_blocking_streams_but_not_for_non_blocking_ones() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let blocking = c.stream_create(ctx, 0).await.unwrap();
    let non_blocking = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let m = c.mem_alloc(ctx, 16).await.unwrap();
    let (flag_b, out_b, flag_n, out_n) = (m, m + 4, m + 8, m + 12);
    // A blocking stream's kernel waits for a flag that null-stream work would set: the null
    // stream waits for it, so it times out (2).
    launch1(
        &c,
        k.wait_flag,
        blocking,
        &[Arg::U64(flag_b), Arg::U64(out_b), Arg::U64(300 * MS)],
    )
    .await;
    launch1(&c, k.set_flag, 0, &[Arg::U64(flag_b)]).await;
    // A non-blocking stream's kernel is released by the null stream running beside it (1).
    launch1(
        &c,
        k.wait_flag,
        non_blocking,
        &[Arg::U64(flag_n), Arg::U64(out_n), Arg::U64(5_000 * MS)],
    )
    .await;
    launch1(&c, k.set_flag, 0, &[Arg::U64(flag_n)]).await;
    c.ctx_synchronize(ctx).await.unwrap();
    assert_eq!(
        read_u32(&c, ctx, out_b).await,
        2,
        "null stream ran after the blocking stream"
    );
    assert_eq!(
        read_u32(&c, ctx, out_n).await,
        1,
        "null stream ran beside the non-blocking stream"
    );
    // And blocking-stream work waits for earlier null-stream work.
    let x = c.mem_alloc(ctx, 8).await.unwrap();
    c.memset(ctx, x, 0, 4, 2, 0).await.unwrap();
    launch1(
        &c,
        k.spin_store,
        0,
        &[Arg::U64(100 * MS), Arg::U64(x), Arg::U32(5)],
    )
    .await;
    launch1(&c, k.copy, blocking, &[Arg::U64(x), Arg::U64(x + 4)]).await;
    c.stream_synchronize(blocking).await.unwrap();
    assert_eq!(read_u32(&c, ctx, x + 4).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_wait_event_orders_work_across_streams() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let a = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let bs = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let ev = c.event_create(ctx, 0).await.unwrap();
    let x = c.mem_alloc(ctx, 8).await.unwrap();
    c.memset(ctx, x, 0, 4, 2, 0).await.unwrap();
    launch1(
        &c,
        k.spin_store,
        a,
        &[Arg::U64(150 * MS), Arg::U64(x), Arg::U32(7)],
    )
    .await;
    c.event_record(ev, a).await.unwrap();
    c.stream_wait_event(bs, ev).await.unwrap();
    launch1(&c, k.copy, bs, &[Arg::U64(x), Arg::U64(x + 4)]).await;
    c.stream_synchronize(bs).await.unwrap();
    assert_eq!(read_u32(&c, ctx, x + 4).await, 7, "b waited for a's kernel");
    // Waiting on an event never recorded is a no-op.
    let never = c.event_create(ctx, 0).await.unwrap();
    c.stream_wait_event(bs, never).await.unwrap();
    c.stream_synchronize(bs).await.unwrap();
    // Hostile: unknown stream or event.
    assert_eq!(
        c.raw_call(
            &Request::StreamWaitEvent {
                stream: bs,
                event: 0xdead
            },
            &[],
            false
        )
        .await
        .unwrap()
        .unwrap()
        .0,
        CuResult::INVALID_HANDLE
    );
    assert_eq!(
        c.raw_call(
            &Request::StreamWaitEvent {
                stream: 0xbeef,
                event: ev
            },
            &[],
            false
        )
        .await
        .unwrap()
        .unwrap()
        .0,
        CuResult::INVALID_HANDLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_and_streams_keep_each_streams_order_and_lose_nothing() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let threads = 8;
    let mut tasks = Vec::new();
    for t in 0..threads {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let flags = if t % 2 == 0 { NON_BLOCKING } else { 0 };
            let s = c.stream_create(ctx, flags).await.unwrap();
            let p = c.mem_alloc(ctx, 4).await.unwrap();
            c.memset(ctx, p, 0, 4, 1, s).await.unwrap();
            let mut want = 0u32;
            for round in 0..5u32 {
                // Nine digits per round: *p = *p * 10 + d, in order.
                want = 0;
                c.memset_async(ctx, p, 0, 4, 1, s).await.unwrap();
                for d in 1..=9u32 {
                    launch1(&c, k.mad, s, &[Arg::U64(p), Arg::U32(d)]).await;
                    want = want * 10 + d;
                }
                let got = c.memcpy_dtoh(ctx, p, 4, s).await.unwrap();
                assert_eq!(
                    u32::from_le_bytes(got.try_into().unwrap()),
                    want,
                    "thread {t} round {round}"
                );
            }
            c.stream_synchronize(s).await.unwrap();
            assert_eq!(read_u32(&c, ctx, p).await, want);
            c.stream_destroy(s).await.unwrap();
            c.mem_free(p).await.unwrap();
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no deadlock")
            .unwrap();
    }
    c.ctx_synchronize(ctx).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_launch_the_dispatcher_could_run_itself_waits_for_its_stream() {
    // `mad` cannot loop and runs one thread: on an idle stream the dispatcher runs it at
    // once; behind a running kernel it must still wait its turn.
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let s = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let x = c.mem_alloc(ctx, 4).await.unwrap();
    c.memset(ctx, x, 0, 4, 1, 0).await.unwrap();
    launch1(&c, k.mad, s, &[Arg::U64(x), Arg::U32(1)]).await;
    launch1(
        &c,
        k.spin_store,
        s,
        &[Arg::U64(100 * MS), Arg::U64(x), Arg::U32(7)],
    )
    .await;
    launch1(&c, k.mad, s, &[Arg::U64(x), Arg::U32(3)]).await;
    c.stream_synchronize(s).await.unwrap();
    // 1, then 7 from the spin, then 7 * 10 + 3; a launch that overtook the spin reads 7.
    assert_eq!(read_u32(&c, ctx, x).await, 73);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_come_back_out_of_order_matched_by_request_id() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let s = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    // On a raw connection of its own: a sync on a busy stream, then a Null.
    let mut raw = raw_session(&b);
    let rctx = raw_reply(&mut raw, 2, &Request::CtxCreate { flags: 0 });
    let Some(Reply::Handle(rctx)) = rctx else {
        panic!("{rctx:?}")
    };
    let module = raw_load(&mut raw, rctx);
    let f = match raw_reply(
        &mut raw,
        4,
        &Request::ModuleGetFunction {
            module,
            name: "spin".into(),
        },
    ) {
        Some(Reply::Function(f)) => f.handle,
        other => panic!("{other:?}"),
    };
    let rs = match raw_reply(
        &mut raw,
        5,
        &Request::StreamCreate {
            ctx: rctx,
            flags: 1,
            priority: 0,
        },
    ) {
        Some(Reply::Handle(h)) => h,
        other => panic!("{other:?}"),
    };
    let launch = Request::LaunchKernel {
        func: f,
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
        stream: rs,
        flags: 0,
    };
    send(&mut raw, 6, 0, &launch, &(300 * MS).to_le_bytes());
    send(
        &mut raw,
        7,
        0,
        &Request::StreamSynchronize { stream: rs },
        &[],
    );
    send(&mut raw, 8, 0, &Request::Null, &[]);
    let order: Vec<u64> = (0..3).map(|_| read_frame(&mut raw).0.request_id).collect();
    assert_eq!(order[0], 6, "the launch answers when queued");
    assert_eq!(order[1..], [8, 7], "the Null overtakes the sync");
    c.stream_synchronize(s).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_time_kernels_and_queries_see_pending_work() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let s = c.stream_create(ctx, 0).await.unwrap();
    let (e0, e1) = (
        c.event_create(ctx, 0).await.unwrap(),
        c.event_create(ctx, 0).await.unwrap(),
    );
    c.event_record(e0, s).await.unwrap();
    launch1(&c, k.spin, s, &[Arg::U64(200 * MS)]).await;
    c.event_record(e1, s).await.unwrap();
    c.flush().await.unwrap();
    assert!(
        !c.stream_query(s).await.unwrap(),
        "the kernel is still running"
    );
    assert!(!c.event_query(e1).await.unwrap());
    assert_eq!(
        c.event_elapsed_time(e0, e1)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::NOT_READY
    );
    c.event_synchronize(e1).await.unwrap();
    assert!(c.event_query(e1).await.unwrap());
    assert!(c.stream_query(s).await.unwrap());
    let ms = c.event_elapsed_time(e0, e1).await.unwrap();
    assert!(ms >= 200.0, "the events time the kernel: {ms} ms");
    // Events without timing cannot be timed.
    let nt = c.event_create(ctx, 2).await.unwrap();
    c.event_record(nt, s).await.unwrap();
    c.event_synchronize(nt).await.unwrap();
    assert_eq!(
        c.event_elapsed_time(e0, nt)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_freed_behind_running_work_stays_until_the_work_is_done() {
    let b = TestBackend::start_with(|c| c.session_memory_quota = bytesize::ByteSize::mib(2)).await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let s = c.stream_create(ctx, NON_BLOCKING).await.unwrap();
    let p = c.mem_alloc(ctx, 1 << 20).await.unwrap();
    // The kernel writes p after 200 ms; the free must wait for it (and the kernel must not
    // fault), and a later allocation that needs the memory waits for the free.
    launch1(
        &c,
        k.spin_store,
        s,
        &[Arg::U64(200 * MS), Arg::U64(p), Arg::U32(1)],
    )
    .await;
    c.mem_free_async(p, s).await.unwrap();
    let q = c.mem_alloc(ctx, (1 << 20) + (512 << 10)).await.unwrap();
    c.ctx_synchronize(ctx).await.unwrap();
    assert_eq!(
        c.memcpy_dtoh(ctx, p, 4, 0).await.unwrap_err().cuda_result(),
        CuResult::INVALID_VALUE,
        "freed memory takes no new work"
    );
    c.mem_free(q).await.unwrap();
    // MemFree (synchronous) answers once the memory is gone.
    let r = c.mem_alloc(ctx, 1 << 20).await.unwrap();
    launch1(
        &c,
        k.spin_store,
        s,
        &[Arg::U64(100 * MS), Arg::U64(r), Arg::U32(1)],
    )
    .await;
    c.mem_free(r).await.unwrap();
    assert_eq!(c.mem_get_info().await.unwrap().0, 2 << 20);
    // Hostile frees: interior pointer, double free, a module global, on a bad stream.
    let t = c.mem_alloc(ctx, 64).await.unwrap();
    let err = |r: Option<(CuResult, Option<Reply>, Vec<u8>)>| r.unwrap().0;
    assert_eq!(
        err(c
            .raw_call(
                &Request::MemFreeAsync {
                    ptr: t + 8,
                    stream: s
                },
                &[],
                false
            )
            .await
            .unwrap()),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        err(c
            .raw_call(
                &Request::MemFreeAsync {
                    ptr: t,
                    stream: 0xbad
                },
                &[],
                false
            )
            .await
            .unwrap()),
        CuResult::INVALID_HANDLE
    );
    c.mem_free_async(t, s).await.unwrap();
    assert_eq!(
        err(c
            .raw_call(&Request::MemFreeAsync { ptr: t, stream: s }, &[], false)
            .await
            .unwrap()),
        CuResult::INVALID_VALUE,
        "double free"
    );
    let _ = k.module;
}

/// A raw session of `version` whose dispatcher is held back by a full backlog behind a
/// `ns`-long kernel; returns the kinds of the frames that came before the synchronize's reply.
fn frames_while_held_back(b: &TestBackend, version: u16, ns: u64) -> Vec<FrameKind> {
    let mut raw = raw_session_v(b, version);
    let Some(Reply::Handle(ctx)) = raw_reply(&mut raw, 2, &Request::CtxCreate { flags: 0 }) else {
        panic!("ctx")
    };
    let module = raw_load(&mut raw, ctx);
    let func = |raw: &mut std::net::TcpStream, id, name: &str| match raw_reply(
        raw,
        id,
        &Request::ModuleGetFunction {
            module,
            name: name.into(),
        },
    ) {
        Some(Reply::Function(f)) => f.handle,
        other => panic!("{other:?}"),
    };
    let (spin, inc) = (func(&mut raw, 4, "spin"), func(&mut raw, 5, "inc"));
    let Some(Reply::DevPtr(x)) = raw_reply(&mut raw, 6, &Request::MemAlloc { ctx, size: 4 }) else {
        panic!("alloc")
    };
    let launch = |func| Request::LaunchKernel {
        func,
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
        stream: 0,
        flags: 0,
    };
    send(&mut raw, 7, FLAG_NO_REPLY, &launch(spin), &ns.to_le_bytes());
    let n = netgpu_backend::executor::streams::BACKLOG_LIMIT + 100;
    for i in 0..n as u64 {
        send(
            &mut raw,
            8 + i,
            FLAG_NO_REPLY,
            &launch(inc),
            &x.to_le_bytes(),
        );
    }
    let sync = 8 + n as u64;
    send(&mut raw, sync, 0, &Request::CtxSynchronize { ctx }, &[]);
    let mut before = Vec::new();
    loop {
        let (h, _) = read_any(&mut raw);
        if h.kind == FrameKind::Reply && h.request_id == sync {
            assert_eq!(h.status, CuResult::SUCCESS);
            return before;
        }
        before.push(h.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_frames_go_only_to_clients_of_protocol_3() {
    let b = TestBackend::start().await;
    let b2 = &b;
    let (v3, v2) = tokio::task::block_in_place(|| {
        (
            frames_while_held_back(b2, 3, 1_500 * MS),
            frames_while_held_back(b2, 2, 1_500 * MS),
        )
    });
    assert!(
        v3.len() >= 2 && v3.iter().all(|k| *k == FrameKind::Busy),
        "a version-3 client hears from a backend that holds it back: {v3:?}"
    );
    assert!(
        v2.is_empty(),
        "a version-2 client gets only replies: {v2:?}"
    );
}

// ---- raw protocol helpers (a connection of its own, blocking I/O) ----

fn raw_session(b: &TestBackend) -> std::net::TcpStream {
    raw_session_v(b, PROTOCOL_VERSION)
}

/// A raw session speaking protocol `version`.
fn raw_session_v(b: &TestBackend, version: u16) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Request::Hello {
        version_min: version,
        version_max: version,
        token: TOKEN.into(),
        client: "raw".into(),
        limits: Default::default(),
    };
    send(&mut s, 1, 0, &hello, &[]);
    let (h, r) = read_frame(&mut s);
    assert_eq!(h.status, CuResult::SUCCESS);
    assert!(matches!(r, Some(Reply::Welcome { .. })));
    s
}

fn raw_load(s: &mut std::net::TcpStream, ctx: u64) -> u64 {
    let body = ops::encode(&Request::ModuleLoad { ctx, parts: vec![] }).unwrap();
    let img = common::kernels::PTX.as_bytes();
    s.write_all(&FrameHeader::request(3, 0, body.len() as u32, img.len() as u32).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    s.write_all(img).unwrap();
    match read_frame(s) {
        (h, Some(Reply::Handle(m))) if h.status == CuResult::SUCCESS => m,
        other => panic!("{other:?}"),
    }
}

fn send(s: &mut std::net::TcpStream, id: u64, flags: u8, req: &Request, data: &[u8]) {
    let body = ops::encode(req).unwrap();
    s.write_all(&FrameHeader::request(id, flags, body.len() as u32, data.len() as u32).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    s.write_all(data).unwrap();
}

fn raw_reply(s: &mut std::net::TcpStream, id: u64, req: &Request) -> Option<Reply> {
    send(s, id, 0, req, &[]);
    let (h, r) = read_frame(s);
    assert_eq!((h.request_id, h.status), (id, CuResult::SUCCESS), "{req:?}");
    r
}

fn read_frame(s: &mut std::net::TcpStream) -> (FrameHeader, Option<Reply>) {
    let (h, r) = read_any(s);
    assert_eq!(h.kind, FrameKind::Reply);
    (h, r)
}

/// The next frame of any kind.
fn read_any(s: &mut std::net::TcpStream) -> (FrameHeader, Option<Reply>) {
    let mut hdr = [0u8; HEADER_LEN];
    s.read_exact(&mut hdr).unwrap();
    let h = FrameHeader::decode(&hdr, 1 << 16, 1 << 30).unwrap();
    let mut ctrl = vec![0u8; h.ctrl_len as usize];
    s.read_exact(&mut ctrl).unwrap();
    let mut data = vec![0u8; h.data_len as usize];
    s.read_exact(&mut data).unwrap();
    (h, (!ctrl.is_empty()).then(|| ops::decode(&ctrl).unwrap()))
}
