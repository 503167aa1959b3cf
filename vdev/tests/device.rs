//! The device through `vfio_user::Client`, as a VMM drives it: config space, BARs, a full
//! command round trip to a CPU backend on loopback, interrupts through eventfds, resets and
//! every kind of bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{eventfd, wait_eventfd, Harness};
use netgpu_proto::abi::{self, op, queue as qreg, reg, Command, SgEntry};
use netgpu_proto::cuda::CuResult;

const CONFIG: u32 = 7;
const SQ: u64 = 0x10_000;
const CQ: u64 = 0x20_000;

#[test]
fn config_space_identifies_a_3d_controller_with_pcie_and_msix() {
    let mut h = Harness::start("cfg");
    let id = h.read32(CONFIG, 0);
    assert_eq!(id & 0xffff, u32::from(abi::DEFAULT_VENDOR_ID));
    assert_eq!(id >> 16, u32::from(abi::DEFAULT_DEVICE_ID));
    assert_eq!(h.read32(CONFIG, 0x08) >> 8, abi::PCI_CLASS_CODE);
    // Capability list: PCIe, then MSI-X with 65 vectors in BAR4.
    let mut at = h.read32(CONFIG, 0x34) & 0xff;
    let mut caps = Vec::new();
    while at != 0 {
        let w = h.read32(CONFIG, u64::from(at));
        caps.push((w & 0xff, at));
        if w & 0xff == 0x11 {
            assert_eq!((w >> 16) & 0x7ff, abi::MSIX_VECTORS - 1);
            assert_eq!(h.read32(CONFIG, u64::from(at) + 4), abi::MSIX_BAR);
        }
        at = (w >> 8) & 0xff;
    }
    assert_eq!(
        caps.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![0x10, 0x11, 0x01]
    );
    // The config region is 4096 bytes (QEMU drops the PCIe capability otherwise).
    assert_eq!(h.client.region(CONFIG).unwrap().size, 4096);
}

#[test]
fn bar_sizing_by_writing_all_ones_works_as_cloud_hypervisor_does_it() {
    let mut h = Harness::start("bars");
    for (bar, size, prefetch) in [
        (0u32, abi::REGS_BAR_SIZE, false),
        (2, abi::DOORBELL_BAR_SIZE, true),
        (4, abi::MSIX_BAR_SIZE, false),
    ] {
        let off = 0x10 + 4 * u64::from(bar);
        h.write32(CONFIG, off, 0xffff_ffff);
        h.write32(CONFIG, off + 4, 0xffff_ffff);
        let lo = h.read32(CONFIG, off);
        let hi = h.read32(CONFIG, off + 4);
        assert_eq!(lo & 0x7, 0b100, "64-bit memory BAR{bar}");
        assert_eq!(lo & 0x8 != 0, prefetch, "prefetchable BAR{bar}");
        let mask = (u64::from(hi) << 32) | u64::from(lo & !0xf);
        assert_eq!(!mask + 1, size, "BAR{bar} size");
        assert_eq!(h.client.region(bar).unwrap().size, size);
    }
    // The doorbell BAR is mmap-able: one sparse area over the page, with an fd.
    let r = h.client.region(abi::DOORBELL_BAR).unwrap();
    assert!(r.file_offset.is_some());
    assert_eq!(r.sparse_areas.len(), 1);
    assert_eq!(r.sparse_areas[0].size, abi::DOORBELL_BAR_SIZE);
    let irq = h.client.get_irq_info(2).unwrap();
    assert_eq!(irq.count, abi::MSIX_VECTORS);
}

#[test]
fn bar0_reports_magic_version_features_and_remote_gpu() {
    let mut h = Harness::start("bar0");
    assert_eq!(h.read32(0, reg::MAGIC), abi::MAGIC);
    assert_eq!(h.read32(0, reg::VERSION), abi::ABI_VERSION);
    assert_eq!(h.read32(0, reg::DEVICE_FEATURES) as u64, abi::FEATURES_ALL);
    assert_eq!(h.read32(0, reg::MAX_QUEUES), abi::MAX_QUEUES);
    let s = h.wait_status(abi::STATUS_READY);
    assert_eq!(s, abi::STATUS_READY);
    let mut name = [0u8; 64];
    h.client.region_read(0, reg::GPU_NAME, &mut name).unwrap();
    assert!(name.starts_with(b"test cpu"));
    assert_eq!(h.read32(0, reg::GPU_EXECUTOR), abi::EXECUTOR_CPU);
    assert_eq!(h.read32(0, reg::GPU_COMPUTE_CAPABILITY) >> 16, 8);
}

#[test]
fn full_command_round_trip_with_msix_interrupts() {
    let mut h = Harness::start("rt");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    let irq = eventfd();
    h.client
        .set_irqs(2, 0x4 | 0x20, 1, 1, &[irq.as_raw_fd()])
        .unwrap();
    assert_eq!(h.setup_queue(0, SQ, CQ, 8, 1), abi::QSTATUS_ENABLED);

    let mut slot = 0;
    let mut submit = |h: &mut Harness, cmd: Command| {
        h.put_command(SQ, slot, &cmd);
        slot += 1;
        h.ring(0, slot % 8);
        let c = h.wait_completion(CQ, slot - 1, true);
        assert!(
            wait_eventfd(&irq, Duration::from_secs(10)) >= 1,
            "interrupt for {c:?}"
        );
        assert_eq!(c.cid, cmd.cid);
        c
    };
    let c = submit(&mut h, Command::new(op::CTX_CREATE, 1, &[0]));
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let ctx = c.value0;
    let c = submit(&mut h, Command::new(op::MEM_ALLOC, 2, &[ctx, 4096]));
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let dptr = c.value0;
    // Host-to-device from two guest buffers, device-to-host into a third.
    let src: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    h.mem.write_all_at(&src[..1000], 0x40_000).unwrap();
    h.mem.write_all_at(&src[1000..], 0x50_000).unwrap();
    let c = submit(
        &mut h,
        Command::new(op::MEMCPY_HTOD, 3, &[ctx, dptr, 0])
            .with_sg(&[SgEntry::new(0x40_000, 1000), SgEntry::new(0x50_000, 3096)]),
    );
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let c = submit(
        &mut h,
        Command::new(op::MEMCPY_DTOH, 4, &[ctx, dptr, 0])
            .with_sg(&[SgEntry::device_write(0x60_000, 4096)]),
    );
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let mut back = vec![0u8; 4096];
    h.mem.read_exact_at(&mut back, 0x60_000).unwrap();
    assert_eq!(back, src);
    // Memset 32-bit, async, then a synchronising copy back.
    let c = submit(
        &mut h,
        Command::new(op::MEMSET, 5, &[ctx, dptr, 0xdead_beef, 4, 4, 0])
            .with_flags(abi::CMD_FLAG_ASYNC),
    );
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let c = submit(
        &mut h,
        Command::new(op::MEMCPY_DTOH, 6, &[ctx, dptr, 0])
            .with_sg(&[SgEntry::device_write(0x60_000, 16)]),
    );
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let mut b = [0u8; 16];
    h.mem.read_exact_at(&mut b, 0x60_000).unwrap();
    assert_eq!(b, [0xef, 0xbe, 0xad, 0xde].repeat(4)[..]);
    // Device query writes the info record into guest memory.
    let c = submit(
        &mut h,
        Command::new(op::DEVICE_QUERY, 7, &[]).with_sg(&[SgEntry::device_write(0x70_000, 1024)]),
    );
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let mut rec = [0u8; abi::DeviceInfoRecord::SIZE];
    h.mem.read_exact_at(&mut rec, 0x70_000).unwrap();
    assert_eq!(
        abi::DeviceInfoRecord::from_bytes(&rec).name_str(),
        "test cpu"
    );
    // Wrap around the 8-entry ring: the phase flips.
    let c = submit(&mut h, Command::new(op::NOP, 8, &[]));
    assert_eq!(c.sq_head, 0);
    slot = 0;
    h.put_command(SQ, 0, &Command::new(op::MEM_FREE, 9, &[dptr]));
    h.ring(0, 1);
    let c = h.wait_completion(CQ, 0, false);
    assert_eq!((c.cid, CuResult(c.result)), (9, CuResult::SUCCESS));
    let _ = slot;
}

#[test]
fn bad_commands_complete_with_errors_and_the_queue_keeps_going() {
    let mut h = Harness::start("badcmd");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    // Looping indirect table.
    let mut chain = SgEntry::new(0x30_000, 32);
    chain.flags = abi::SG_FLAG_CHAIN;
    let mut t = SgEntry::new(0x40_000, 8).to_bytes().to_vec();
    t.extend_from_slice(&chain.to_bytes());
    h.mem.write_all_at(&t, 0x30_000).unwrap();
    let looping = Command::new(op::MEMCPY_HTOD, 1, &[1, 0, 0]).with_indirect_sg(0x30_000, 2);
    let unmapped = Command::new(op::MEMCPY_HTOD, 2, &[1, 0, 0])
        .with_sg(&[SgEntry::new(common::MEM_SIZE - 8, 64)]);
    let unknown = Command::new(0x7777, 3, &[]);
    let bad_flags = Command::new(op::NOP, 4, &[]).with_flags(0x8000);
    let bad_handle = Command::new(op::MEM_ALLOC, 5, &[0xdead, 64]);
    let cmds = [looping, unmapped, unknown, bad_flags, bad_handle];
    for (i, c) in cmds.iter().enumerate() {
        h.put_command(SQ, i as u32, c);
    }
    h.ring(0, cmds.len() as u32);
    let expect = [
        CuResult::INVALID_VALUE,
        CuResult::INVALID_VALUE,
        CuResult::NOT_SUPPORTED,
        CuResult::NOT_SUPPORTED,
    ];
    for (i, e) in expect.iter().enumerate() {
        let c = h.wait_completion(CQ, i as u32, true);
        assert_eq!(CuResult(c.result), *e, "command {i}");
    }
    let c = h.wait_completion(CQ, 4, true);
    assert_ne!(CuResult(c.result), CuResult::SUCCESS, "unknown context");
    assert_eq!(
        h.read32(0, Harness::qreg(0, qreg::STATUS)),
        abi::QSTATUS_ENABLED
    );
}

#[test]
fn misaligned_unmapped_and_oversized_queues_are_refused() {
    let mut h = Harness::start("badq");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    let err = |h: &mut Harness, q| h.read32(0, Harness::qreg(q, qreg::ERROR));
    assert_eq!(h.setup_queue(0, SQ + 64, CQ, 8, 1), abi::QSTATUS_ERROR);
    assert_eq!(err(&mut h, 0), abi::QERR_RING_MISALIGNED);
    assert_eq!(
        h.setup_queue(1, common::MEM_SIZE, CQ, 8, 1),
        abi::QSTATUS_ERROR
    );
    assert_eq!(err(&mut h, 1), abi::QERR_RING_UNMAPPED);
    assert_eq!(h.setup_queue(2, SQ, CQ, 3, 1), abi::QSTATUS_ERROR);
    assert_eq!(err(&mut h, 2), abi::QERR_BAD_SIZE);
    assert_eq!(h.setup_queue(3, SQ, CQ, 1 << 20, 1), abi::QSTATUS_ERROR);
    assert_eq!(h.setup_queue(4, SQ, CQ, 8, 5000), abi::QSTATUS_ERROR);
    assert_eq!(err(&mut h, 4), abi::QERR_BAD_VECTOR);
    // A doorbell beyond the ring stops the queue with an error.
    assert_eq!(h.setup_queue(5, SQ, CQ, 8, 1), abi::QSTATUS_ENABLED);
    h.ring(5, 8);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.read32(0, Harness::qreg(5, qreg::STATUS)) != abi::QSTATUS_ERROR {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(err(&mut h, 5), abi::QERR_BAD_DOORBELL);
    // Odd-sized and out-of-range register accesses change nothing and do not kill the link.
    h.client.region_write(0, reg::RESET, &[1]).unwrap();
    assert_eq!(h.read32(0, reg::MAGIC), abi::MAGIC);
}

#[test]
fn reset_register_tears_down_the_backend_session_and_frees_memory() {
    let mut h = Harness::start("reset");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_CREATE, 1, &[0]));
    h.ring(0, 1);
    let ctx = h.wait_completion(CQ, 0, true).value0;
    h.put_command(SQ, 1, &Command::new(op::MEM_ALLOC, 2, &[ctx, 1 << 20]));
    h.ring(0, 2);
    assert_eq!(h.wait_completion(CQ, 1, true).result, 0);
    assert!(h.backend.executor.memory_used() >= 1 << 20);
    h.write32(0, reg::RESET, abi::RESET_VALUE);
    // The queue reads ENABLED until its worker has quiesced (no more guest-memory access).
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.read32(0, Harness::qreg(0, qreg::STATUS)) != 0 {
        assert!(
            Instant::now() < deadline,
            "queue did not quiesce after reset"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        h.read32(0, Harness::qreg(0, qreg::SIZE)),
        0,
        "registers back to power-on"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.backend.executor.memory_used() != 0 {
        assert!(Instant::now() < deadline, "session memory not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        h.wait_status(abi::STATUS_READY),
        abi::STATUS_READY,
        "reconnected"
    );
    // The probe closes its session; every queue opens its own.
    wait_sessions(&h, 0);
}

/// Waits until the backend holds `n` sessions.
fn wait_sessions(h: &Harness, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.backend.shared.session_count() != n {
        assert!(
            Instant::now() < deadline,
            "backend holds {} sessions, not {n}",
            h.backend.shared.session_count()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn vmm_disconnect_frees_the_session_and_a_new_client_is_served() {
    let mut h = Harness::start("disc");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_CREATE, 1, &[0]));
    h.ring(0, 1);
    assert_eq!(h.wait_completion(CQ, 0, true).result, 0);
    wait_sessions(&h, 1);
    h.client.shutdown().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.backend.shared.session_count() != 0 {
        assert!(Instant::now() < deadline, "backend session leaked");
        std::thread::sleep(Duration::from_millis(10));
    }
    h.client = vfio_user::Client::new(&h.socket).unwrap();
    assert_eq!(h.read32(0, reg::MAGIC), abi::MAGIC);
    assert_eq!(h.wait_status(abi::STATUS_READY), abi::STATUS_READY);
}

#[test]
fn unmapping_ring_memory_stops_the_queue_instead_of_faulting() {
    let mut h = Harness::start("unmap");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.client.dma_unmap(0, common::MEM_SIZE).unwrap();
    h.ring(0, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.read32(0, Harness::qreg(0, qreg::STATUS)) != abi::QSTATUS_ERROR {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        h.read32(0, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_RING_FAULT
    );
}

#[test]
fn fast_doorbells_in_the_shared_page_are_polled_while_the_queue_is_busy() {
    let mut h = Harness::start_with("fastdb", |c| c.poll = Duration::from_secs(2));
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    h.write64(0, reg::DRIVER_FEATURES, abi::FEATURE_FAST_DOORBELLS);
    assert_eq!(
        h.setup_queue(3, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    // The page the VMM maps into the guest: the memfd sent with BAR2's region info.
    let page = h
        .client
        .region(abi::DOORBELL_BAR)
        .unwrap()
        .file_offset
        .as_ref()
        .unwrap()
        .file()
        .try_clone()
        .unwrap();
    let at = 3 * abi::fastdb::STRIDE;
    let polling = |page: &std::fs::File| {
        let mut b = [0u8; 4];
        page.read_exact_at(&mut b, at + abi::fastdb::POLLING)
            .unwrap();
        u32::from_le_bytes(b)
    };
    assert_eq!(polling(&page), 0, "idle queue: not polling");
    // First submission: store the tail, see POLLING = 0, ring the wake-up doorbell.
    h.put_command(SQ, 0, &Command::new(op::NOP, 1, &[]));
    page.write_all_at(&1u32.to_le_bytes(), at).unwrap();
    h.ring(3, 1);
    assert_eq!(h.wait_completion(CQ, 0, true).cid, 1);
    assert_eq!(polling(&page), 1, "busy queue: device polls the page");
    // Second submission: a plain store to the page, no trapped doorbell at all.
    h.put_command(SQ, 1, &Command::new(op::NOP, 2, &[]));
    page.write_all_at(&2u32.to_le_bytes(), at).unwrap();
    assert_eq!(h.wait_completion(CQ, 1, true).cid, 2);
}

#[test]
fn the_device_memory_limit_holds_across_queues_and_returns_with_a_closed_queue() {
    let mut h = Harness::start_with("quota", |c| c.memory_quota = 1 << 20);
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    let (sq2, cq2) = (SQ + 0x40_000, CQ + 0x40_000);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    assert_eq!(
        h.setup_queue(1, sq2, cq2, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let run = |h: &mut Harness, q: u32, sq: u64, cq: u64, slot: u32, cmd: Command| {
        h.put_command(sq, slot, &cmd);
        h.ring(q, slot + 1);
        h.wait_completion(cq, slot, true)
    };
    let c0 = run(&mut h, 0, SQ, CQ, 0, Command::new(op::CTX_CREATE, 1, &[0])).value0;
    let c1 = run(
        &mut h,
        1,
        sq2,
        cq2,
        0,
        Command::new(op::CTX_CREATE, 1, &[0]),
    )
    .value0;
    assert_eq!(
        run(
            &mut h,
            0,
            SQ,
            CQ,
            1,
            Command::new(op::MEM_ALLOC, 2, &[c0, 768 << 10])
        )
        .result,
        0
    );
    // The second process's allocation would exceed the device's 1 MiB.
    let r = run(
        &mut h,
        1,
        sq2,
        cq2,
        1,
        Command::new(op::MEM_ALLOC, 2, &[c1, 512 << 10]),
    );
    assert_eq!(r.result, CuResult::OUT_OF_MEMORY.0);
    let info = run(
        &mut h,
        1,
        sq2,
        cq2,
        2,
        Command::new(op::MEM_GET_INFO, 3, &[]),
    );
    assert_eq!(
        (info.value0, info.value1),
        (256 << 10, 1 << 20),
        "free/total as the device sees it"
    );
    // Closing the first queue gives its memory back to the device once it has stopped.
    h.write32(abi::REGS_BAR, Harness::qreg(0, qreg::ENABLE), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::STATUS)) != 0 {
        assert!(Instant::now() < deadline, "queue 0 did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = run(
        &mut h,
        1,
        sq2,
        cq2,
        3,
        Command::new(op::MEM_ALLOC, 4, &[c1, 512 << 10]),
    );
    assert_eq!(r.result, 0, "the closed queue's memory is available again");
}
