//! Doorbell-to-completion latency and commands/s through the vfio-user client, against the
//! bare vfio-user message round trip measured in the same run.
//!
//! `cargo bench -p netgpu-vdev --bench doorbell` (CARGO_TARGET_DIR as usual). The guest side
//! is simulated by the test harness: commands are written into a memfd that was passed with
//! DMA_MAP, the doorbell is a trapped REGION_WRITE (what QEMU sends per guest MMIO write), and
//! the completion is observed by polling the completion ring's phase bit. One backend round
//! trip (`MEM_GET_INFO`) is also timed through a second device whose backend session is TLS
//! (the backend's mutual-TLS listener), interleaved with the plain one, for the ratio.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Harness;
use netgpu_proto::abi::{self, op, reg, Command};

const SQ: u64 = 0x10_000;
const CQ: u64 = 0x20_000;
const SIZE: u32 = 256;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A submission queue's producer state.
struct Ring {
    tail: u32,
    phase: bool,
}

impl Ring {
    /// One command, doorbell to completion.
    fn one(&mut self, h: &mut Harness, opcode: u16) -> Duration {
        let slot = self.tail;
        h.put_command(SQ, slot, &Command::new(opcode, slot, &[]));
        self.tail = (self.tail + 1) % SIZE;
        let t = Instant::now();
        h.ring(0, self.tail);
        let c = h.wait_completion(CQ, slot, self.phase);
        let d = t.elapsed();
        assert_eq!(c.result, 0);
        if self.tail == 0 {
            self.phase = !self.phase;
        }
        d
    }
}

fn main() {
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut h = Harness::start("bench");
    let (mut t, _pki) = Harness::start_tls("bench-tls", "bench", |_| {}, |_| {});
    for h in [&mut h, &mut t] {
        h.wait_status(abi::STATUS_READY);
        h.map_memory();
        assert_eq!(
            h.setup_queue(0, SQ, CQ, SIZE, abi::NO_VECTOR),
            abi::QSTATUS_ENABLED
        );
    }

    // Bare vfio-user round trip: one REGION_READ of a register.
    let mut bare = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(h.read32(abi::REGS_BAR, reg::MAGIC));
        bare.push(t.elapsed());
    }

    // Doorbell to completion, one command at a time.
    let mut ring = Ring {
        tail: 0,
        phase: true,
    };
    let mut tls_ring = Ring {
        tail: 0,
        phase: true,
    };
    let nop: Vec<Duration> = (0..iters).map(|_| ring.one(&mut h, op::NOP)).collect();
    // The plain and the TLS backend round trips interleaved, 10 at a time (the load of a
    // shared machine moves both alike).
    let (mut backend, mut backend_tls) = (Vec::new(), Vec::new());
    for _ in 0..(iters / 40).max(1) {
        backend.extend((0..10).map(|_| ring.one(&mut h, op::MEM_GET_INFO)));
        backend_tls.extend((0..10).map(|_| tls_ring.one(&mut t, op::MEM_GET_INFO)));
    }
    let (mut tail, mut phase) = (ring.tail, ring.phase);

    // Throughput: batches of SIZE/2 NOPs per doorbell.
    let batch = SIZE / 2;
    let rounds = (iters as u32 / batch).max(4);
    let t = Instant::now();
    for _ in 0..rounds {
        let first = tail;
        for _ in 0..batch {
            h.put_command(SQ, tail, &Command::new(op::NOP, tail, &[]));
            tail = (tail + 1) % SIZE;
        }
        h.ring(0, tail);
        let last = (tail + SIZE - 1) % SIZE;
        let p = if last < first { !phase } else { phase };
        h.wait_completion(CQ, last, p);
        if tail < first || tail == 0 {
            phase = !phase;
        }
    }
    let cps = f64::from(rounds * batch) / t.elapsed().as_secs_f64();

    let b = median(bare);
    let n = median(nop);
    let m = median(backend);
    let mt = median(backend_tls);
    println!(
        "vfio-user REGION_READ round trip (median): {:>8.1} us",
        b.as_secs_f64() * 1e6
    );
    println!(
        "doorbell->completion, NOP (median):        {:>8.1} us  ({:.2}x the bare round trip)",
        n.as_secs_f64() * 1e6,
        n.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "doorbell->completion, MEM_GET_INFO via backend on loopback (median): {:>8.1} us",
        m.as_secs_f64() * 1e6
    );
    println!(
        "doorbell->completion, MEM_GET_INFO via backend over TLS 1.3 (median): {:>8.1} us  ({:.2}x plain)",
        mt.as_secs_f64() * 1e6,
        mt.as_secs_f64() / m.as_secs_f64()
    );
    println!("batched NOPs ({batch} per doorbell): {cps:.0} commands/s");
}
