//! 64 MiB host-to-device and device-to-host copies through vdev (guest memory, doorbell,
//! completion, CPU backend on loopback) against raw TCP loopback measured in the same run, and
//! the peak of heap memory vdev's own threads hold during a copy.
//!
//! `cargo bench -p netgpu-vdev --bench copies` (`ITERS`, `MIB` to change the defaults of 8
//! and 64; `TLS=1`: the backend's mutual-TLS listener and vdev's `[tls]`, certificates from a
//! throwaway CA, against the same raw TCP baseline). The guest side is simulated as in the
//! test harness: the data lives in a memfd passed with `DMA_MAP`, named by an indirect
//! scatter list of 16 KiB entries (4096 of them for 64 MiB), the doorbell is a trapped
//! `REGION_WRITE`, and the "guest" sleeps until the queue's MSI-X interrupt (an eventfd given
//! with `SET_IRQS`, as QEMU gives KVM's irqfd) and then reads the completion from the ring.
//! Besides the wall clock it prints the CPU time each copy cost vdev and the backend (the
//! process's, less the guest thread's) against the raw copy's. The raw baseline writes the
//! same number of bytes from one buffer into another over a fresh loopback TCP connection, as
//! the backend would receive them; each round times raw TCP, the copy to the device and the
//! copy back in turn, and the per-round ratios are printed besides the ratio of the medians.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventfd, memfd, socket_path, start_backend_with, wait_eventfd, TOKEN};
use netgpu_proto::abi::{self, op, queue as qreg, reg, Command, Completion, SgEntry};
use netgpu_vdev::{Device, DeviceConfig, OnDisconnect, Source};
use vmm_sys_util::eventfd::EventFd;

thread_local! {
    /// Set on vdev's threads (its runtime and its message loop).
    static VDEV: Cell<bool> = const { Cell::new(false) };
}

/// Heap bytes vdev's threads hold now and at most since the last reset.
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Bytes vdev's threads allocated in blocks of 1 MiB or more (a staging buffer would be one).
static LARGE: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn on_vdev() -> bool {
    VDEV.try_with(|v| v.get()).unwrap_or(false)
}

// SAFETY: every call forwards to the system allocator with the caller's arguments; the
// counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if on_vdev() {
            let now = LIVE.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
            if l.size() >= 1 << 20 {
                LARGE.fetch_add(l.size(), Ordering::Relaxed);
            }
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if on_vdev() {
            LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SQ: u64 = 0x10_000;
const CQ: u64 = 0x20_000;
const TABLE: u64 = 0x40_000;
const ENTRY: u32 = 16 << 10;
const DATA: u64 = 1 << 20;

/// CPU time of the whole process and of the calling thread.
fn cpu() -> (Duration, Duration) {
    let clock = |id| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(id, &mut t) };
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    (
        clock(libc::CLOCK_PROCESS_CPUTIME_ID),
        clock(libc::CLOCK_THREAD_CPUTIME_ID),
    )
}

/// CPU the process spent since `since` (from [`cpu`]), without the calling thread's (the
/// polling "guest").
fn others_since(since: (Duration, Duration)) -> Duration {
    let now = cpu();
    (now.0 - since.0).saturating_sub(now.1 - since.1)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One raw loopback transfer of `buf.len()` bytes on a fresh connection, the receiver reading
/// into its own buffer and answering one byte. (A connection kept for the whole run was
/// measured too: it was slower, 40-51 ms against 23-24 ms for 64 MiB on an idle machine, with
/// 1.4-1.8x the CPU, so it is not the limit.)
fn raw_tcp(buf: &[u8], into: &mut [u8]) -> Duration {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let n = into.len();
    std::thread::scope(|s| {
        let rx = s.spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut got = 0;
            while got < n {
                got += c.read(&mut into[got..]).unwrap();
            }
            c.write_all(&[1]).unwrap(); // the reply
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let t = Instant::now();
        c.write_all(buf).unwrap();
        let mut ack = [0u8; 1];
        c.read_exact(&mut ack).unwrap();
        let d = t.elapsed();
        let _ = rx.join();
        d
    })
}

fn main() {
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mib: u64 = std::env::var("MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let len = mib << 20;
    let mem_size = DATA + 2 * len;
    // The backend on a runtime of its own, vdev on another whose threads are counted.
    let brt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls = std::env::var("TLS").is_ok_and(|v| v == "1");
    let pki = common::tls::Pki::new("bench");
    let sized = |c: &mut netgpu_backend::config::Config| {
        c.session_memory_quota = bytesize::ByteSize::b(2 * len);
        c.cpu.total_memory = bytesize::ByteSize::b(4 * len);
    };
    // The in-process backend serves while `backend` lives.
    let (backend, client_tls) = if tls {
        let b = common::tls::start_backend(&brt, &pki, "bench", sized);
        (b, Some(pki.client("bench")))
    } else {
        (start_backend_with(&brt, sized), None)
    };
    let vrt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| VDEV.with(|v| v.set(true)))
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = DeviceConfig {
        name: "bench".into(),
        backend: backend.addr.clone(),
        token: TOKEN.into(),
        ..DeviceConfig::default()
    };
    cfg.transport.tls = client_tls;
    let socket = socket_path("copies");
    let source = Source::bind(&socket).unwrap();
    let stop = Arc::new(EventFd::new(libc::EFD_CLOEXEC).unwrap());
    let mut device = Device::new(cfg, vrt.handle().clone()).unwrap();
    let stop2 = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        VDEV.with(|v| v.set(true));
        netgpu_vdev::run(&mut device, source, &stop2, OnDisconnect::Wait).unwrap();
    });
    let mut client = vfio_user::Client::new(&socket).unwrap();
    let mem = memfd(mem_size);
    let r32 = |c: &mut vfio_user::Client, off: u64| {
        let mut b = [0u8; 4];
        c.region_read(abi::REGS_BAR, off, &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    let w = |c: &mut vfio_user::Client, off: u64, v: &[u8]| {
        c.region_write(abi::REGS_BAR, off, v).unwrap();
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while r32(&mut client, reg::STATUS) & abi::STATUS_READY == 0 {
        assert!(Instant::now() < deadline, "device not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    client.dma_map(0, 0, mem_size, mem.as_raw_fd()).unwrap();
    // MSI-X vector 1 (index 2) triggers this eventfd: ACTION_TRIGGER | DATA_EVENTFD.
    let irq = eventfd();
    client
        .set_irqs(2, 0x4 | 0x20, 1, 1, &[irq.as_raw_fd()])
        .unwrap();
    let q = |f: u64| reg::QUEUE_REGS_BASE + f;
    w(&mut client, q(qreg::SQ_BASE), &SQ.to_le_bytes());
    w(&mut client, q(qreg::CQ_BASE), &CQ.to_le_bytes());
    w(&mut client, q(qreg::SIZE), &64u32.to_le_bytes());
    w(&mut client, q(qreg::MSIX_VECTOR), &1u32.to_le_bytes());
    w(&mut client, q(qreg::ENABLE), &1u32.to_le_bytes());
    assert_eq!(r32(&mut client, q(qreg::STATUS)), abi::QSTATUS_ENABLED);
    let mut tail = 0u32;
    let mut phase = true;
    let mut run = |client: &mut vfio_user::Client, mut cmd: Command| -> (Completion, Duration) {
        let slot = tail;
        cmd.cid = slot;
        mem.write_all_at(&cmd.to_bytes(), SQ + u64::from(slot) * 128)
            .unwrap();
        tail = (tail + 1) % 64;
        let t = Instant::now();
        w(client, reg::DOORBELL_BASE, &tail.to_le_bytes());
        let mut b = [0u8; Completion::SIZE];
        loop {
            mem.read_exact_at(&mut b, CQ + u64::from(slot) * 32)
                .unwrap();
            let c = Completion::from_bytes(&b);
            if c.phase() == phase {
                let d = t.elapsed();
                if tail == 0 {
                    phase = !phase;
                }
                return (c, d);
            }
            // Asleep until the interrupt, as a real guest: on two cores a polling "guest"
            // took CPU from vdev and the backend (spinning: 0.43-0.65x raw TCP; polling
            // every 20 us: 0.74-0.85x in the same minutes).
            assert!(
                wait_eventfd(&irq, Duration::from_secs(30)) > 0,
                "no interrupt within 30 s"
            );
        }
    };
    let (c, _) = run(&mut client, Command::new(op::CTX_CREATE, 0, &[0]));
    let ctx = c.value0;
    let (c, _) = run(&mut client, Command::new(op::MEM_ALLOC, 0, &[ctx, len]));
    assert_eq!(c.result, 0, "allocation");
    let ptr = c.value0;
    // Scatter lists: 16 KiB entries, the first half of the data area for host-to-device,
    // the second (device-writable) for device-to-host.
    let entries = (len / u64::from(ENTRY)) as u32;
    let table = |base: u64, write: bool| -> Vec<u8> {
        let mut t = Vec::new();
        for i in 0..entries {
            let a = base + u64::from(i) * u64::from(ENTRY);
            let e = if write {
                SgEntry::device_write(a, ENTRY)
            } else {
                SgEntry::new(a, ENTRY)
            };
            t.extend_from_slice(&e.to_bytes());
        }
        t
    };
    let tbl_len = u64::from(entries) * 16;
    mem.write_all_at(&table(DATA, false), TABLE).unwrap();
    mem.write_all_at(&table(DATA + len, true), TABLE + tbl_len)
        .unwrap();
    let src: Vec<u8> = (0..len).map(|i| ((i * 31) >> 7) as u8).collect();
    mem.write_all_at(&src, DATA).unwrap();
    let htod = Command::new(op::MEMCPY_HTOD, 0, &[ctx, ptr, 0]).with_indirect_sg(TABLE, entries);
    let dtoh =
        Command::new(op::MEMCPY_DTOH, 0, &[ctx, ptr, 0]).with_indirect_sg(TABLE + tbl_len, entries);
    // Warm up, then measure.
    run(&mut client, htod);
    run(&mut client, dtoh);
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    LARGE.store(0, Ordering::Relaxed);
    // Each round times raw TCP, then the copy to the device, then the copy back, so that the
    // ratios compare figures of the same moment (a shared machine's load drifts).
    let mut into = vec![0u8; len as usize];
    raw_tcp(&src, &mut into);
    let (mut up, mut down, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let (mut up_cpu, mut down_cpu, mut raw_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut up_ratio, mut down_ratio) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let c0 = cpu().0;
        let r = raw_tcp(&src, &mut into);
        raw_cpu.push(cpu().0 - c0);
        raw.push(r);
        let c0 = cpu();
        let (c, d) = run(&mut client, htod);
        up_cpu.push(others_since(c0));
        assert_eq!(c.result, 0);
        up.push(d);
        up_ratio.push(r.as_secs_f64() / d.as_secs_f64());
        let c0 = cpu();
        let (c, d) = run(&mut client, dtoh);
        down_cpu.push(others_since(c0));
        assert_eq!(c.result, 0);
        down.push(d);
        down_ratio.push(r.as_secs_f64() / d.as_secs_f64());
    }
    let peak = PEAK.load(Ordering::Relaxed);
    let large = LARGE.load(Ordering::Relaxed);
    let mut back = vec![0u8; len as usize];
    mem.read_exact_at(&mut back, DATA + len).unwrap();
    assert!(back == src, "the copy came back changed");
    let ratios = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (ur, dr) = (ratios(up_ratio), ratios(down_ratio));
    let (u, d, r) = (median(up), median(down), median(raw));
    let (uc, dc, rc) = (median(up_cpu), median(down_cpu), median(raw_cpu));
    let gbs = |t: Duration| len as f64 / t.as_secs_f64() / 1e9;
    println!(
        "{mib} MiB copies, {entries} scatter-gather entries of {} KiB, median of {iters}{}:",
        ENTRY >> 10,
        if tls {
            ", vdev to backend over TLS 1.3 (AES-128-GCM)"
        } else {
            ""
        }
    );
    println!(
        "raw TCP loopback:        {:>7.2} ms  {:>6.2} GB/s",
        r.as_secs_f64() * 1e3,
        gbs(r)
    );
    for (what, t, (mid, lo, hi)) in [("host-to-device", u, ur), ("device-to-host", d, dr)] {
        println!(
            "{what} via vdev: {:>7.2} ms  {:>6.2} GB/s  ({:.2}x raw TCP; per round median {mid:.2}x, {lo:.2}-{hi:.2}x)",
            t.as_secs_f64() * 1e3,
            gbs(t),
            r.as_secs_f64() / t.as_secs_f64(),
        );
    }
    // CPU time does not depend on how the scheduler shares a loaded machine, wall time does.
    println!(
        "CPU per copy (vdev and the backend; raw TCP: both ends): raw {:.1} ms, host-to-device {:.1} ms ({:.2}x raw), device-to-host {:.1} ms ({:.2}x raw)",
        rc.as_secs_f64() * 1e3,
        uc.as_secs_f64() * 1e3,
        rc.as_secs_f64() / uc.as_secs_f64(),
        dc.as_secs_f64() * 1e3,
        rc.as_secs_f64() / dc.as_secs_f64()
    );
    println!(
        "peak heap held by vdev's threads during the copies: {:.1} KiB ({:.4} of the copy size); blocks of 1 MiB or more: {large} bytes",
        peak as f64 / 1024.0,
        peak as f64 / len as f64
    );
    drop(client);
    let _ = stop.write(1);
    let _ = server.join();
    let _ = std::fs::remove_file(&socket);
}
