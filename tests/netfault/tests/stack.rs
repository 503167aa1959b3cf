//! The whole stack (netgpu-client, the fault proxy, the backend) under faults on loopback:
//! latency only slows things down, a reset or a cut fails what waits within seconds, a
//! backend restart leaves new sessions working, and the backend frees everything each time.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{fnv, pattern, Backend, BackendProcess, Spin, Stack, TOKEN};
use netgpu_client::{Client, CuResult};
use netgpu_netfault::{Dir, Fault};

const FIVE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_ms_round_trips_only_slow_copies_and_kernels_down() {
    let s = Stack::start().await;
    let c = s.client().await;
    s.proxy.set(Fault::Delay(Duration::from_millis(25)));
    let ctx = c.ctx_create(0).await.unwrap();
    let len = 8 << 20;
    let data = pattern(len, 7);
    let p = c.mem_alloc(ctx, len as u64).await.unwrap();
    let t = Instant::now();
    c.memcpy_htod(ctx, p, &data, 0).await.unwrap();
    let back = c.memcpy_dtoh(ctx, p, len as u64, 0).await.unwrap();
    assert_eq!(fnv(&back), fnv(&data), "data intact through the delay");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "two round trips at least"
    );
    let spin = Spin::load(&c).await;
    spin.launch(&c, 1000).await;
    c.ctx_synchronize(spin.ctx).await.unwrap();
    let r = c.memcpy_dtoh(spin.ctx, spin.out, 4, 0).await.unwrap();
    assert_eq!(u32::from_le_bytes(r.try_into().unwrap()), 1000);
    drop(c);
    assert_eq!(s.backend.wait_idle(FIVE).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_copy_fails_the_copy_at_once_and_frees_the_session() {
    let s = Stack::start().await;
    let c = s.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let len = 64 << 20;
    let p = c.mem_alloc(ctx, len as u64).await.unwrap();
    let data = pattern(len, 1);
    let copy = {
        let c = c.clone();
        tokio::spawn(async move { c.memcpy_htod(ctx, p, &data, 0).await })
    };
    // Reset once part of the copy has gone through.
    while s
        .proxy
        .stats()
        .bytes_up
        .load(std::sync::atomic::Ordering::Relaxed)
        < (1 << 20)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.proxy.set(Fault::Reset);
    let t = Instant::now();
    let e = tokio::time::timeout(FIVE, copy)
        .await
        .expect("the copy hangs")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    assert!(t.elapsed() < FIVE);
    // Later calls fail at once too.
    assert_eq!(
        c.null().await.unwrap_err().cuda_result(),
        CuResult::DEVICE_UNAVAILABLE
    );
    assert_eq!(
        s.backend.wait_idle(FIVE).await,
        (0, 0),
        "the backend freed the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_kernel_fails_the_synchronize_and_frees_the_session() {
    let s = Stack::start().await;
    let c = s.client().await;
    let spin = Spin::load(&c).await;
    let n = spin.calibrate(&c, Duration::from_secs(2)).await;
    spin.launch(&c, n).await;
    let sync = {
        let c = c.clone();
        let ctx = spin.ctx;
        tokio::spawn(async move { c.ctx_synchronize(ctx).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.proxy.set(Fault::Reset);
    let e = tokio::time::timeout(FIVE, sync)
        .await
        .expect("the synchronize hangs")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    // The kernel may finish its run first; then the session goes.
    assert_eq!(s.backend.wait_idle(Duration::from_secs(10)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_cut_halfway_fails_the_connect_and_leaks_nothing() {
    let s = Stack::start().await;
    s.proxy.set(Fault::CutAfter {
        dir: Dir::Up,
        bytes: 20,
    });
    let t = Instant::now();
    let e = Client::connect(&s.proxy.addr().to_string(), TOKEN)
        .await
        .err()
        .unwrap();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    assert!(t.elapsed() < FIVE);
    // And when the answer is cut.
    s.proxy.set(Fault::CutAfter {
        dir: Dir::Down,
        bytes: 10,
    });
    let e = Client::connect(&s.proxy.addr().to_string(), TOKEN)
        .await
        .err()
        .unwrap();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    s.proxy.set(Fault::Pass);
    let c = s.client().await;
    c.null().await.unwrap();
    drop(c);
    assert_eq!(s.backend.wait_idle(FIVE).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_crash_fails_what_waits_and_new_sessions_work_after_restart() {
    let mut b = BackendProcess::start("127.0.0.1:0".parse().unwrap());
    let addr = b.addr;
    let c = Client::connect(&addr.to_string(), TOKEN).await.unwrap();
    let spin = Spin::load(&c).await;
    let n = spin.calibrate(&c, Duration::from_secs(2)).await;
    spin.launch(&c, n).await;
    let sync = {
        let c = c.clone();
        let ctx = spin.ctx;
        tokio::spawn(async move { c.ctx_synchronize(ctx).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.kill();
    let t = Instant::now();
    let e = tokio::time::timeout(FIVE, sync)
        .await
        .expect("the synchronize hangs")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    assert!(t.elapsed() < FIVE);
    assert_eq!(
        c.null().await.unwrap_err().cuda_result(),
        CuResult::DEVICE_UNAVAILABLE
    );
    // The backend comes back on the same address: new sessions work.
    let _b2 = BackendProcess::start(addr);
    let c2 = Client::connect(&addr.to_string(), TOKEN).await.unwrap();
    let ctx = c2.ctx_create(0).await.unwrap();
    let p = c2.mem_alloc(ctx, 4096).await.unwrap();
    let d = pattern(4096, 3);
    c2.memcpy_htod(ctx, p, &d, 0).await.unwrap();
    assert_eq!(c2.memcpy_dtoh(ctx, p, 4096, 0).await.unwrap(), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_backend_stop_says_goodbye_and_frees_everything() {
    let mut b = Backend::start("127.0.0.1:0".parse().unwrap()).await;
    let c = Client::connect(&b.addr.to_string(), TOKEN).await.unwrap();
    let ctx = c.ctx_create(0).await.unwrap();
    c.mem_alloc(ctx, 1 << 20).await.unwrap();
    b.stop().await;
    let e = c.null().await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("shutting down"), "{e}");
    assert_eq!(b.wait_idle(FIVE).await, (0, 0));
}

fn with_liveness() -> netgpu_client::ClientOptions {
    netgpu_client::ClientOptions {
        liveness: Some(netgpu_client::Liveness::default()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_without_rst_fails_waiting_calls_within_five_seconds() {
    let s = Stack::start().await;
    let c = Client::connect_with(&s.proxy.addr().to_string(), TOKEN, with_liveness())
        .await
        .unwrap();
    let ctx = c.ctx_create(0).await.unwrap();
    let len = 64 << 20;
    let p = c.mem_alloc(ctx, len as u64).await.unwrap();
    // An idle connection is not probed: quiet is fine.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.null().await.unwrap();
    // Stall mid-copy: nothing forwarded, no FIN, no RST.
    let data = pattern(len, 5);
    let copy = {
        let c = c.clone();
        tokio::spawn(async move { c.memcpy_htod(ctx, p, &data, 0).await })
    };
    while s
        .proxy
        .stats()
        .bytes_up
        .load(std::sync::atomic::Ordering::Relaxed)
        < (1 << 20)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.proxy.set(Fault::Stall);
    let t = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(10), copy)
        .await
        .expect("the copy hangs")
        .unwrap()
        .unwrap_err();
    let took = t.elapsed();
    eprintln!("stalled copy failed after {took:?}: {e}");
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    assert!(took < FIVE, "{took:?}");
    assert!(e.to_string().contains("sent nothing"), "{e}");
    // A waiting call on a fresh session through the stalled proxy fails the same way.
    let addr = s.proxy.addr().to_string();
    let opts = netgpu_client::ClientOptions {
        connect_timeout: Duration::from_secs(2),
        ..with_liveness()
    };
    let c2 = Client::connect_with(&addr, TOKEN, opts);
    let r = tokio::time::timeout(FIVE, c2).await.expect("connect hangs");
    assert!(r.is_err(), "a stalled handshake fails");
    // Healed: the backend dropped nothing it should keep, and new sessions work.
    s.proxy.set(Fault::Reset);
    drop(c);
    assert_eq!(
        s.backend.wait_idle(FIVE).await,
        (0, 0),
        "the stalled session was freed"
    );
    s.proxy.set(Fault::Pass);
    s.client().await.null().await.unwrap();
}

/// A small call waiting on a stalled link fails too: the watchdog's own probe is accepted by
/// the local socket, which must not count as the backend being alive (it did, and the call
/// was probed forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_fails_a_small_waiting_call_within_five_seconds() {
    let s = Stack::start().await;
    let c = Client::connect_with(&s.proxy.addr().to_string(), TOKEN, with_liveness())
        .await
        .unwrap();
    c.ctx_create(0).await.unwrap();
    s.proxy.set(Fault::Stall);
    let t = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(15), c.mem_get_info())
        .await
        .expect("the small call hangs under the stall")
        .unwrap_err();
    let took = t.elapsed();
    eprintln!("stalled small call failed after {took:?}: {e}");
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE, "{e}");
    assert!(took < FIVE, "{took:?}");
    s.proxy.set(Fault::Reset);
    drop(c);
    assert_eq!(
        s.backend.wait_idle(FIVE).await,
        (0, 0),
        "the session was freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_keeps_a_session_that_waits_for_a_long_kernel() {
    // The backend answers the watchdog's probes while the kernel runs, so a synchronize
    // longer than the liveness timeout is not mistaken for a dead connection.
    let s = Stack::start().await;
    let c = Client::connect_with(&s.proxy.addr().to_string(), TOKEN, with_liveness())
        .await
        .unwrap();
    let spin = Spin::load(&c).await;
    let n = spin.calibrate(&c, Duration::from_secs(5)).await;
    spin.launch(&c, n).await;
    let t = Instant::now();
    c.ctx_synchronize(spin.ctx).await.unwrap();
    eprintln!("synchronized a {:?} kernel with liveness on", t.elapsed());
    let r = c.memcpy_dtoh(spin.ctx, spin.out, 4, 0).await.unwrap();
    assert_eq!(u32::from_le_bytes(r.try_into().unwrap()), n);
}
