//! Surviving the network (issue 9): a backend that dies, restarts, wedges, or a network that
//! stalls without a FIN or RST. In every case the queue whose session died fails its waiting
//! commands (the queue reads ERROR / `QERR_BACKEND_LOST`, which the kernel module turns into
//! an error for every waiting call) within seconds, the device stays READY, and the queue
//! enabled next (the guest's next process) opens a fresh session and works, without a reset.
//!
//! The backends: the scripted fake (a wedged backend that answers nothing), the CPU backend
//! behind the `netgpu-netfault` proxy (a stalled network), and a real `netgpu-backend`
//! process killed with SIGKILL in the middle of a kernel and restarted on the same port.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::fake::{Event, FakeBackend};
use common::{submit_call, Harness, TOKEN};
use netgpu_netfault::{Fault, FaultProxy};
use netgpu_proto::abi::{self, op, queue as qreg, reg, Command, Completion};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Reply, Request};
use netgpu_vdev::Liveness;
use std::os::unix::fs::FileExt;

const SQ: u64 = 0x10_000;
const CQ: u64 = 0x20_000;

/// Fast watchdog settings so the tests take a second, not the default three.
const FAST: Liveness = Liveness {
    probe_after: Duration::from_millis(300),
    timeout: Duration::from_millis(1500),
};

fn status(h: &mut Harness, q: u32) -> u32 {
    h.read32(abi::REGS_BAR, Harness::qreg(q, qreg::STATUS))
}

/// Waits for queue `q`'s STATUS to read `want`; returns how long it took.
fn wait_queue_status(h: &mut Harness, q: u32, want: u32, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = status(h, q);
        if s == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "queue {q} STATUS {s:#x}, expected {want:#x}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the kernel module does when the next process opens the device: disable the old
/// queue, wait for ENABLED to drop, clear the completion ring, enable again.
fn reopen(h: &mut Harness, q: u32) -> u32 {
    h.write32(abi::REGS_BAR, Harness::qreg(q, qreg::ENABLE), 0);
    wait_queue_status(h, q, 0, Duration::from_secs(5));
    h.mem
        .write_all_at(&[0u8; 8 * Completion::SIZE], CQ)
        .unwrap();
    h.setup_queue(q, SQ, CQ, 8, abi::NO_VECTOR)
}

fn next_request(fake: &FakeBackend) -> (u64, u64, Request) {
    loop {
        match fake.next(Duration::from_secs(10)) {
            Some(Event::Request {
                conn, id, request, ..
            }) => return (conn, id, request),
            Some(Event::Closed { .. }) => continue,
            None => panic!("the backend saw no request"),
        }
    }
}

fn ready(h: &mut Harness, features: u64) {
    assert_eq!(h.wait_status(abi::STATUS_READY), abi::STATUS_READY);
    h.map_memory();
    h.write64(abi::REGS_BAR, reg::DRIVER_FEATURES, features);
}

#[test]
fn a_wedged_backend_fails_the_waiting_commands_and_the_next_process_gets_a_new_session() {
    let (mut h, fake) = Harness::start_fake("wedged", 1 << 20, |c| {
        c.transport.liveness = Some(FAST);
    });
    ready(&mut h, abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[1]));
    h.ring(0, 1);
    let (conn, _, _) = next_request(&fake);
    // The backend stops answering anything, its connection stays open: no FIN, no RST, and
    // TCP keepalive would be answered by its kernel.
    fake.set_mute(true);
    let took = wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(10));
    eprintln!(
        "wedged backend: queue in ERROR after {took:?} (watchdog timeout {:?})",
        FAST.timeout
    );
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_BACKEND_LOST
    );
    assert_eq!(h.read32(abi::REGS_BAR, reg::STATUS), abi::STATUS_READY);
    // The waiting command never completed (the driver fails it from the queue's ERROR).
    assert!(!h.completion(CQ, 0).phase());
    // The guest's next process: a fresh session, no device reset.
    fake.set_mute(false);
    assert_eq!(reopen(&mut h, 0), abi::QSTATUS_ENABLED);
    h.put_command(SQ, 0, &Command::new(op::MEM_GET_INFO, 2, &[]));
    h.ring(0, 1);
    let (conn2, id, req) = next_request(&fake);
    assert_eq!(req, Request::MemGetInfo);
    assert_ne!(conn2, conn, "a new session");
    fake.reply(
        conn2,
        id,
        CuResult::SUCCESS,
        &Reply::MemInfo { free: 1, total: 2 },
        &[],
    );
    let c = h.wait_completion(CQ, 0, true);
    assert_eq!((c.cid, c.result), (2, 0));
}

#[test]
fn a_long_wait_on_a_backend_that_answers_probes_is_not_cut_short() {
    let (mut h, fake) = Harness::start_fake("patient", 1 << 20, |c| {
        c.transport.liveness = Some(FAST);
    });
    ready(&mut h, abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[1]));
    h.ring(0, 1);
    let (conn, id, _) = next_request(&fake);
    // A kernel running twice the watchdog's timeout: the backend answers the probes (Null,
    // answered by the fake as by the real dispatcher), so the session stays.
    std::thread::sleep(FAST.timeout * 2);
    assert_eq!(status(&mut h, 0), abi::QSTATUS_ENABLED);
    fake.reply(conn, id, CuResult::SUCCESS, &Reply::Done, &[]);
    let c = h.wait_completion(CQ, 0, true);
    assert_eq!((c.cid, c.result), (1, 0));
    // The probes were never passed on as requests of the guest's.
    assert!(fake.next(Duration::from_millis(50)).is_none());
}

#[test]
fn a_stalled_network_fails_the_waiting_call_and_a_healed_one_serves_the_next_process() {
    let mut proxy = None;
    let mut h = Harness::start_with("stall", |c| {
        let upstream: SocketAddr = c.backend.parse().unwrap();
        let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap();
        c.backend = p.addr().to_string();
        c.transport.liveness = Some(FAST);
        proxy = Some(p);
    });
    let proxy = proxy.unwrap();
    ready(
        &mut h,
        abi::FEATURE_OUT_OF_ORDER | abi::FEATURE_WIRE_REQUEST,
    );
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let gc = submit_call(&mut h, 0, SQ, 0, &Request::MemGetInfo, &[], 0);
    assert!(h.finish_call(CQ, 0, &gc).is_ok());
    let accepted = proxy.stats().accepted.load(Ordering::Relaxed);
    // Partition: nothing gets through either way, every connection stays open.
    proxy.set(Fault::Stall);
    let _ = submit_call(&mut h, 0, SQ, 1, &Request::MemGetInfo, &[], 0);
    let took = wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(10));
    eprintln!("stalled network: queue in ERROR after {took:?}");
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_BACKEND_LOST
    );
    assert!(
        !h.completion(CQ, 1).phase(),
        "the stalled call never completed"
    );
    // The network heals; the next process works.
    proxy.set(Fault::Pass);
    assert_eq!(reopen(&mut h, 0), abi::QSTATUS_ENABLED);
    let gc = submit_call(&mut h, 0, SQ, 0, &Request::MemGetInfo, &[], 0);
    let r = h.finish_call(CQ, 0, &gc).unwrap();
    assert!(matches!(r.reply, Reply::MemInfo { .. }));
    assert!(proxy.stats().accepted.load(Ordering::Relaxed) > accepted);
}

/// A kernel that spins for its `ns` parameter (the PTX `%globaltimer`).
const SPIN: &str = ".version 7.0\n.target sm_50\n.address_size 64\n.visible .entry spin(.param .u64 ns)\n{\n.reg .u64 %t0, %t1, %d, %n;\n.reg .pred %p;\nld.param.u64 %n, [ns];\nmov.u64 %t0, %globaltimer;\nLOOP:\nmov.u64 %t1, %globaltimer;\nsub.u64 %d, %t1, %t0;\nsetp.lt.u64 %p, %d, %n;\n@%p bra LOOP;\nret;\n}\n";

/// The `netgpu-backend` binary of this workspace (built once for these tests).
fn backend_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Process::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "netgpu-backend",
            "--bin",
            "netgpu-backend",
        ]);
        // The variables cargo sets for this test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...) look
        // like changed inputs to build scripts and would rebuild half the workspace.
        let keep = ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_INCREMENTAL"];
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_")
                && !keep.contains(&k.as_str())
                && !k.starts_with("CARGO_BUILD_")
            {
                build.env_remove(k);
            }
        }
        let ok = build.status().unwrap().success();
        assert!(ok, "cannot build netgpu-backend");
        // target/debug/deps/<this test> -> target/debug/netgpu-backend
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(|d| d.parent())
            .unwrap()
            .join("netgpu-backend");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
}

/// A real backend process on `addr` (CPU executor, plain TCP on loopback).
struct BackendProcess {
    child: Child,
}

impl BackendProcess {
    fn start(addr: SocketAddr, token_file: &std::path::Path) -> BackendProcess {
        let bin = backend_binary();
        let help = Process::new(bin).arg("--help").output().unwrap();
        let mut cmd = Process::new(bin);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .args(["--executor", "cpu", "--log", "warn"])
            .arg("--token-file")
            .arg(token_file)
            .stdin(Stdio::null());
        // Backends with TLS refuse plain TCP unless told it is loopback development.
        if String::from_utf8_lossy(&help.stdout).contains("--insecure-plain-loopback") {
            cmd.arg("--insecure-plain-loopback");
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "backend did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BackendProcess { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn call(h: &mut Harness, slot: u32, req: &Request, data: &[u8]) -> Reply {
    let gc = submit_call(h, 0, SQ, slot, req, data, 0);
    h.finish_call(CQ, slot, &gc)
        .unwrap_or_else(|e| panic!("{req:?}: {e:?}"))
        .reply
}

#[test]
fn a_backend_killed_mid_kernel_and_restarted_serves_the_next_process_without_a_reset() {
    let addr = free_port();
    let dir = std::env::temp_dir().join(format!("vdev-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut backend = BackendProcess::start(addr, &token);
    let mut h = Harness::start_with("restart", |c| c.backend = addr.to_string());
    ready(
        &mut h,
        abi::FEATURE_OUT_OF_ORDER | abi::FEATURE_WIRE_REQUEST,
    );
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let Reply::Handle(ctx) = call(&mut h, 0, &Request::CtxCreate { flags: 0 }, &[]) else {
        panic!()
    };
    let mut ptx = SPIN.as_bytes().to_vec();
    ptx.push(0);
    let load = Request::ModuleLoad {
        ctx,
        parts: vec![ptx.len() as u32],
    };
    let Reply::Handle(module) = call(&mut h, 1, &load, &ptx) else {
        panic!()
    };
    let get = Request::ModuleGetFunction {
        module,
        name: "spin".into(),
    };
    let func = match call(&mut h, 2, &get, &[]) {
        Reply::Function(f) => f.handle,
        other => panic!("{other:?}"),
    };
    // A 60 s kernel, then a synchronize that waits for it.
    let launch = Request::LaunchKernel {
        func,
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
        stream: 0,
        flags: 0,
    };
    let ns = 60_000_000_000u64.to_le_bytes();
    let _launch = submit_call(&mut h, 0, SQ, 3, &launch, &ns, 0);
    let _sync = submit_call(&mut h, 0, SQ, 4, &Request::CtxSynchronize { ctx }, &[], 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&mut h, 0), abi::QSTATUS_ENABLED, "the kernel runs");
    backend.kill();
    let took = wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(5));
    eprintln!("killed backend: queue in ERROR after {took:?}");
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_BACKEND_LOST
    );
    assert!(
        !h.completion(CQ, 4).phase(),
        "the synchronize never completed"
    );
    assert_eq!(h.read32(abi::REGS_BAR, reg::STATUS), abi::STATUS_READY);
    // A process started while the backend is down fails at once (connection refused) ...
    // (The refused connect may already have put the queue in ERROR when STATUS is read.)
    let st = reopen(&mut h, 0);
    assert!(
        st == abi::QSTATUS_ENABLED || st == abi::QSTATUS_ERROR,
        "{st:#x}"
    );
    let _ = submit_call(&mut h, 0, SQ, 0, &Request::MemGetInfo, &[], 0);
    wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(5));
    // ... and once it is back, the next one works, on the same device, without a reset.
    let _backend = BackendProcess::start(addr, &token);
    assert_eq!(reopen(&mut h, 0), abi::QSTATUS_ENABLED);
    assert!(matches!(
        call(&mut h, 0, &Request::MemGetInfo, &[]),
        Reply::MemInfo { .. }
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_device_whose_backend_was_down_at_start_becomes_ready_when_it_comes_up() {
    let addr = free_port();
    let mut h = Harness::start_with("late", |c| c.backend = addr.to_string());
    // Nobody listens: the probe fails, the device reads FATAL (unreachable) ...
    assert_eq!(h.wait_status(abi::STATUS_FATAL), abi::STATUS_FATAL);
    assert_eq!(
        h.read32(abi::REGS_BAR, reg::FATAL_REASON),
        abi::FATAL_BACKEND_UNREACHABLE
    );
    // ... and a process that tries now is refused at once.
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ERROR
    );
    std::thread::sleep(Duration::from_millis(1200)); // a few retries fail too
    assert_eq!(h.read32(abi::REGS_BAR, reg::STATUS), abi::STATUS_FATAL);

    // The backend comes up on that address: READY within the retry interval, no reset.
    let started = Instant::now();
    let _backend = common::start_backend_with(&h.rt, |c| c.listen = addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.read32(abi::REGS_BAR, reg::STATUS) != abi::STATUS_READY {
        assert!(Instant::now() < deadline, "the device stayed FATAL");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("backend up: device READY after {:?}", started.elapsed());
    assert_ne!(h.read32(abi::REGS_BAR, reg::GPU_NAME), 0, "GPU_* filled in");
    h.write64(
        abi::REGS_BAR,
        reg::DRIVER_FEATURES,
        abi::FEATURE_OUT_OF_ORDER | abi::FEATURE_WIRE_REQUEST,
    );
    assert_eq!(reopen(&mut h, 0), abi::QSTATUS_ENABLED);
    assert!(matches!(
        call(&mut h, 0, &Request::MemGetInfo, &[]),
        Reply::MemInfo { .. }
    ));
}

/// Issue 9 over TLS: a partition (a stall without FIN or RST) while a copy's records are in
/// flight fails the waiting call within 5 s (the watchdog; the kernel module then fails the
/// process's call), nothing is written into the guest's completion ring for it, and once the
/// network heals the next process's session (a new TLS handshake) copies data unchanged.
#[test]
fn over_tls_a_stall_mid_copy_fails_the_call_and_the_healed_network_serves_the_next_process() {
    use common::tls::Pki;
    use netgpu_proto::abi::SgEntry;
    const LEN: u32 = 0x38_0000;
    let mut proxy = None;
    let (mut h, _pki): (Harness, Pki) = Harness::start_tls(
        "stall-tls",
        "tenant-s",
        |b| b.max_frame_data = bytesize::ByteSize::mib(1),
        |c| {
            let upstream: SocketAddr = c.backend.parse().unwrap();
            let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap();
            c.backend = p.addr().to_string();
            c.transport.liveness = Some(FAST);
            proxy = Some(p);
        },
    );
    let proxy = proxy.unwrap();
    assert_eq!(h.wait_status(abi::STATUS_READY), abi::STATUS_READY);
    h.map_memory();
    let src: Vec<u8> = (0..LEN).map(|i| (i ^ (i >> 7) ^ (i >> 19)) as u8).collect();
    h.mem.write_all_at(&src, 0x10_0000).unwrap();
    let open = |h: &mut Harness| -> (u64, u64) {
        let ctx = h.run_first_lap(SQ, CQ, 0, &Command::new(op::CTX_CREATE, 1, &[0]));
        assert_eq!(CuResult(ctx.result), CuResult::SUCCESS);
        let alloc = Command::new(op::MEM_ALLOC, 2, &[ctx.value0, u64::from(LEN)]);
        let ptr = h.run_first_lap(SQ, CQ, 1, &alloc);
        assert_eq!(CuResult(ptr.result), CuResult::SUCCESS);
        (ctx.value0, ptr.value0)
    };
    let htod = |ctx, ptr| {
        Command::new(op::MEMCPY_HTOD, 3, &[ctx, ptr, 0]).with_sg(&[SgEntry::new(0x10_0000, LEN)])
    };
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let (ctx, ptr) = open(&mut h);
    let c = h.run_first_lap(SQ, CQ, 2, &htod(ctx, ptr));
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);

    // Partition, then a copy: its records fill the socket buffers and stop.
    proxy.set(Fault::Stall);
    h.put_command(SQ, 3, &htod(ctx, ptr));
    h.ring(0, 4);
    let took = wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(10));
    eprintln!("stalled TLS copy: queue in ERROR after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_BACKEND_LOST
    );
    assert!(
        !h.completion(CQ, 3).phase(),
        "the stalled copy never completed"
    );

    // The network heals: the next process gets a new TLS session and copies both ways.
    proxy.set(Fault::Pass);
    assert_eq!(reopen(&mut h, 0), abi::QSTATUS_ENABLED);
    let (ctx, ptr) = open(&mut h);
    let c = h.run_first_lap(SQ, CQ, 2, &htod(ctx, ptr));
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let dtoh = Command::new(op::MEMCPY_DTOH, 4, &[ctx, ptr, 0])
        .with_sg(&[SgEntry::device_write(0x48_0000, LEN)]);
    let c = h.run_first_lap(SQ, CQ, 3, &dtoh);
    assert_eq!(
        (CuResult(c.result), c.value0),
        (CuResult::SUCCESS, u64::from(LEN))
    );
    let mut back = vec![0u8; LEN as usize];
    h.mem.read_exact_at(&mut back, 0x48_0000).unwrap();
    assert!(back == src, "the copy came back changed");
}
