//! The command pipeline through a VMM's eyes: many commands in flight per queue, completions
//! in readiness order, copies straight between guest memory and the backend, every request
//! through `WIRE_REQUEST`, and the security findings of issue 12 that live in vdev (each of
//! these tests failed on the vdev before the pipeline): writes only into DEVICE_WRITE
//! entries (1), nothing written after DMA_UNMAP is answered (3), one queue's broken session
//! never takes the device down (4), a reused queue id never hangs (5), queues above 31
//! interrupt (7), a stopped queue's session is closed at once (10).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::fake::{Event, FakeBackend};
use common::{eventfd, wait_eventfd, Harness};
use netgpu_proto::abi::codec::{self, EncodeOptions, GuestBuffer, GuestCommand};
use netgpu_proto::abi::{self, op, queue as qreg, reg, Command, Completion, SgEntry};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameHeader, FLAG_CONSOLE_PENDING};
use netgpu_proto::wire::ops::{self, Reply, Request};

const SQ: u64 = 0x10_000;
const CQ: u64 = 0x20_000;
const SQ2: u64 = 0x30_000;
const CQ2: u64 = 0x38_000;

fn status(h: &mut Harness, q: u32) -> u32 {
    h.read32(abi::REGS_BAR, Harness::qreg(q, qreg::STATUS))
}

fn wait_queue_status(h: &mut Harness, q: u32, want: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = status(h, q);
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {q} STATUS {s:#x}, expected {want:#x}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The next request the fake backend sees, skipping closed connections (the probe's).
fn next_request(fake: &FakeBackend) -> (u64, u64, Request, Vec<u8>) {
    loop {
        match fake.next(Duration::from_secs(10)) {
            Some(Event::Request {
                conn,
                id,
                request,
                data,
                ..
            }) => return (conn, id, request, data),
            Some(Event::Closed { .. }) => continue,
            None => panic!("the backend saw no request"),
        }
    }
}

/// Whether a request reaches the fake backend within `t`.
fn request_within(fake: &FakeBackend, t: Duration) -> Option<(u64, u64, Request)> {
    let deadline = Instant::now() + t;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match fake.next(left) {
            Some(Event::Request {
                conn, id, request, ..
            }) => return Some((conn, id, request)),
            Some(Event::Closed { .. }) => continue,
            None => return None,
        }
    }
    None
}

fn wait_closed(fake: &FakeBackend, conn: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(Event::Closed { conn: c }) = fake.next(left) {
            if c == conn {
                return;
            }
        }
    }
    panic!("the queue's backend connection {conn} was not closed");
}

fn fake_device(tag: &str, features: u64) -> (Harness, FakeBackend) {
    let (mut h, fake) = Harness::start_fake(tag, 1 << 20, |_| {});
    assert_eq!(h.wait_status(abi::STATUS_READY), abi::STATUS_READY);
    h.map_memory();
    h.write64(abi::REGS_BAR, reg::DRIVER_FEATURES, features);
    (h, fake)
}

#[test]
fn commands_are_in_flight_together_and_complete_in_readiness_order() {
    let (mut h, fake) = fake_device("ooo", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[5]));
    h.put_command(SQ, 1, &Command::new(op::MEM_GET_INFO, 2, &[]));
    h.ring(0, 2);
    // Both reach the backend before either is answered: the slow synchronize does not hold
    // back the small call behind it.
    let (c1, id1, r1, _) = next_request(&fake);
    assert_eq!(r1, Request::CtxSynchronize { ctx: 5 });
    let (c2, id2, r2, _) = next_request(&fake);
    assert_eq!(r2, Request::MemGetInfo);
    assert_eq!(c1, c2, "one session per queue");
    fake.reply(
        c2,
        id2,
        CuResult::SUCCESS,
        &Reply::MemInfo {
            free: 10,
            total: 20,
        },
        &[],
    );
    let c = h.wait_completion(CQ, 0, true);
    assert_eq!((c.cid, c.value0, c.value1), (2, 10, 20));
    fake.reply(
        c1,
        id1,
        CuResult::ILLEGAL_ADDRESS,
        &Reply::Error("x".into()),
        &[],
    );
    let c = h.wait_completion(CQ, 1, true);
    assert_eq!((c.cid, CuResult(c.result)), (1, CuResult::ILLEGAL_ADDRESS));
}

#[test]
fn without_out_of_order_completions_keep_submission_order() {
    let (mut h, fake) = fake_device("inorder", 0);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[5]));
    h.put_command(SQ, 1, &Command::new(op::MEM_GET_INFO, 2, &[]));
    h.put_command(SQ, 2, &Command::new(op::NOP, 3, &[]));
    h.ring(0, 3);
    let (c1, id1, _, _) = next_request(&fake);
    let (c2, id2, _, _) = next_request(&fake);
    fake.reply(
        c2,
        id2,
        CuResult::SUCCESS,
        &Reply::MemInfo { free: 1, total: 2 },
        &[],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!h.completion(CQ, 0).phase(), "held back behind command 1");
    fake.reply(c1, id1, CuResult::SUCCESS, &Reply::Done, &[]);
    let cids: Vec<u32> = (0..3).map(|s| h.wait_completion(CQ, s, true).cid).collect();
    assert_eq!(cids, vec![1, 2, 3]);
}

#[test]
fn no_completion_is_written_after_dma_unmap_is_answered() {
    let (mut h, fake) = fake_device("unmap-inflight", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[5]));
    h.ring(0, 1);
    let (conn, id, _, _) = next_request(&fake);
    // The VMM takes the memory back while the command runs...
    h.client.dma_unmap(0, common::MEM_SIZE).unwrap();
    // ... and the backend answers afterwards.
    fake.reply(conn, id, CuResult::SUCCESS, &Reply::Done, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let mut slot = [0u8; Completion::SIZE];
    h.mem.read_exact_at(&mut slot, CQ).unwrap();
    assert_eq!(
        slot,
        [0u8; Completion::SIZE],
        "a completion landed after DMA_UNMAP"
    );
    wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(5));
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_RING_FAULT
    );
}

#[test]
fn an_oversized_reply_fails_one_command_and_nothing_else() {
    let (mut h, fake) = fake_device("oversized", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    assert_eq!(
        h.setup_queue(1, SQ2, CQ2, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::MEM_GET_INFO, 1, &[]));
    h.ring(0, 1);
    let (conn, id, _, _) = next_request(&fake);
    // A reply whose control section exceeds the 64 KiB limit (a kernel with 20 000
    // parameters): valid frame header, then 70 000 bytes of control and 10 of data.
    let mut raw = FrameHeader::reply(id, CuResult::SUCCESS, 70_000, 10)
        .encode()
        .to_vec();
    raw.resize(raw.len() + 70_010, 0x5a);
    fake.send_raw(conn, raw);
    let c = h.wait_completion(CQ, 0, true);
    assert_eq!(c.cid, 1);
    assert_ne!(CuResult(c.result), CuResult::SUCCESS);
    // The same session goes on: the next command of the queue is answered.
    h.put_command(SQ, 1, &Command::new(op::MEM_GET_INFO, 2, &[]));
    h.ring(0, 2);
    let (conn2, id2, _, _) = next_request(&fake);
    assert_eq!(conn2, conn);
    fake.reply(
        conn,
        id2,
        CuResult::SUCCESS,
        &Reply::MemInfo { free: 1, total: 1 },
        &[],
    );
    assert_eq!(h.wait_completion(CQ, 1, true).result, 0);
    assert_eq!(status(&mut h, 0), abi::QSTATUS_ENABLED);
    assert_eq!(h.read32(abi::REGS_BAR, reg::STATUS), abi::STATUS_READY);
    // And another process's queue never noticed.
    h.put_command(SQ2, 0, &Command::new(op::NOP, 7, &[]));
    h.ring(1, 1);
    assert_eq!(h.wait_completion(CQ2, 0, true).cid, 7);
}

#[test]
fn a_lost_backend_session_fails_that_queue_only_and_a_new_enable_reconnects() {
    let (mut h, fake) = fake_device("lost", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    assert_eq!(
        h.setup_queue(1, SQ2, CQ2, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[1]));
    h.ring(0, 1);
    let (conn0, _, _, _) = next_request(&fake);
    fake.close(conn0);
    wait_queue_status(&mut h, 0, abi::QSTATUS_ERROR, Duration::from_secs(5));
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::ERROR)),
        abi::QERR_BACKEND_LOST
    );
    assert_eq!(
        h.read32(abi::REGS_BAR, reg::STATUS),
        abi::STATUS_READY,
        "one queue's lost session does not make the device FATAL"
    );
    h.put_command(SQ2, 0, &Command::new(op::MEM_GET_INFO, 2, &[]));
    h.ring(1, 1);
    let (conn1, id, _, _) = next_request(&fake);
    assert_ne!(conn1, conn0);
    fake.reply(
        conn1,
        id,
        CuResult::SUCCESS,
        &Reply::MemInfo { free: 1, total: 1 },
        &[],
    );
    assert_eq!(h.wait_completion(CQ2, 0, true).result, 0);
    // The next process on queue 0 gets a fresh session.
    h.write32(abi::REGS_BAR, Harness::qreg(0, qreg::ENABLE), 0);
    wait_queue_status(&mut h, 0, 0, Duration::from_secs(5));
    h.mem
        .write_all_at(&[0u8; 8 * Completion::SIZE], CQ)
        .unwrap();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::MEM_GET_INFO, 3, &[]));
    h.ring(0, 1);
    let (conn2, id, _, _) = next_request(&fake);
    assert!(conn2 != conn0 && conn2 != conn1);
    fake.reply(
        conn2,
        id,
        CuResult::SUCCESS,
        &Reply::MemInfo { free: 1, total: 1 },
        &[],
    );
    assert_eq!(h.wait_completion(CQ, 0, true).cid, 3);
}

#[test]
fn a_disabled_queue_drops_its_work_at_once_closes_its_session_and_can_be_reused() {
    let (mut h, fake) = fake_device("reuse", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    // A command that never finishes (a kernel that runs for hours).
    h.put_command(SQ, 0, &Command::new(op::CTX_SYNCHRONIZE, 1, &[1]));
    h.ring(0, 1);
    let (conn, _, _, _) = next_request(&fake);
    // The process is killed: the module disables the queue and waits for ENABLED to drop.
    h.write32(abi::REGS_BAR, Harness::qreg(0, qreg::ENABLE), 0);
    wait_queue_status(&mut h, 0, 0, Duration::from_secs(2));
    // Its backend session is closed, so the backend cancels the work (finding 10).
    wait_closed(&fake, conn, Duration::from_secs(5));
    // The next process gets the same queue id and a working queue, not a hang.
    h.mem
        .write_all_at(&[0u8; 8 * Completion::SIZE], CQ)
        .unwrap();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::NOP, 2, &[]));
    h.put_command(SQ, 1, &Command::new(op::MEM_GET_INFO, 3, &[]));
    h.ring(0, 2);
    assert_eq!(h.wait_completion(CQ, 0, true).cid, 2);
    let (conn2, id, _, _) = next_request(&fake);
    assert_ne!(conn2, conn);
    fake.reply(
        conn2,
        id,
        CuResult::SUCCESS,
        &Reply::MemInfo { free: 1, total: 1 },
        &[],
    );
    assert_eq!(h.wait_completion(CQ, 1, true).cid, 3);
}

#[test]
fn the_device_never_writes_an_entry_without_device_write() {
    let (mut h, fake) = fake_device("directions", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    // MODULE_GET_FUNCTION with one read-only 64-byte name buffer and a user-chosen name
    // length of 4: the old device split the list at 4 and wrote the parameter table into the
    // rest of the read-only buffer.
    let mut name = b"kern".to_vec();
    name.resize(64, 0xaa);
    h.mem.write_all_at(&name, 0x40_000).unwrap();
    h.put_command(
        SQ,
        0,
        &Command::new(op::MODULE_GET_FUNCTION, 1, &[7, 4]).with_sg(&[SgEntry::new(0x40_000, 64)]),
    );
    // A device-to-host copy into a buffer pinned read-only.
    h.mem.write_all_at(&[0xcc; 16], 0x50_000).unwrap();
    h.put_command(
        SQ,
        1,
        &Command::new(op::MEMCPY_DTOH, 2, &[1, 0x1000, 0]).with_sg(&[SgEntry::new(0x50_000, 16)]),
    );
    h.ring(0, 2);
    // Whatever reaches the backend is answered as a real one would.
    while let Some((conn, id, req)) = request_within(&fake, Duration::from_millis(500)) {
        let (reply, data) = match req {
            Request::ModuleGetFunction { .. } => (
                Reply::Function(ops::FunctionInfo {
                    handle: 9,
                    params: vec![ops::ParamInfo { offset: 0, size: 8 }; 4],
                    param_buffer_size: 32,
                    attributes: vec![],
                }),
                vec![],
            ),
            _ => (Reply::Done, vec![0xbb; 16]),
        };
        fake.reply(conn, id, CuResult::SUCCESS, &reply, &data);
    }
    for (slot, cid) in [(0, 1), (1, 2)] {
        let c = h.wait_completion(CQ, slot, true);
        assert_eq!((c.cid, CuResult(c.result)), (cid, CuResult::INVALID_VALUE));
    }
    let mut back = vec![0u8; 64];
    h.mem.read_exact_at(&mut back, 0x40_000).unwrap();
    assert_eq!(back, name, "the read-only name buffer was written");
    let mut back = [0u8; 16];
    h.mem.read_exact_at(&mut back, 0x50_000).unwrap();
    assert_eq!(
        back, [0xcc; 16],
        "the read-only copy destination was written"
    );
}

#[test]
fn queues_above_31_raise_intx_and_latch_a_cause_bit() {
    let mut h = Harness::start("intx40");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    let intx = eventfd();
    h.client
        .set_irqs(0, 0x4 | 0x20, 0, 1, &[intx.as_raw_fd()])
        .unwrap();
    assert_eq!(h.setup_queue(40, SQ, CQ, 8, 41), abi::QSTATUS_ENABLED);
    h.put_command(SQ, 0, &Command::new(op::NOP, 5, &[]));
    h.ring(40, 1);
    assert_eq!(h.wait_completion(CQ, 0, true).cid, 5);
    assert!(
        wait_eventfd(&intx, Duration::from_secs(5)) >= 1,
        "INTx for queue 40"
    );
    // (bit 31 may be set too: the device event of becoming READY)
    let cause = h.read32(abi::REGS_BAR, reg::INTR_STATUS);
    assert_eq!(cause & !abi::INTR_DEVICE_EVENT, abi::intr_queue_bit(40));
}

#[test]
fn console_output_waiting_on_the_backend_reaches_the_guest() {
    let (mut h, fake) = fake_device("console", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    h.put_command(SQ, 0, &Command::new(op::STREAM_SYNCHRONIZE, 1, &[3]));
    h.ring(0, 1);
    let (conn, id, _, _) = next_request(&fake);
    fake.reply_flags(
        conn,
        id,
        CuResult::SUCCESS,
        FLAG_CONSOLE_PENDING,
        &Reply::Done,
        &[],
    );
    let c = h.wait_completion(CQ, 0, true);
    assert_ne!(c.flags & abi::CQE_FLAG_CONSOLE_PENDING, 0);
}

/// Guest addresses for a codec-built command: prefix, data, scratch/output.
const PREFIX_AT: u64 = 0x60_000;
const DATA_AT: u64 = 0x70_000;
const OUT_AT: u64 = 0x80_000;

/// Lays out `gc`'s buffers in guest memory as the kernel module would (outputs with
/// DEVICE_WRITE) and submits it in `slot`; returns the completion and the output bytes.
fn guest_call(
    h: &mut Harness,
    slot: u32,
    gc: &GuestCommand,
    data: &[u8],
    out_len: usize,
) -> (Completion, Vec<u8>) {
    let mut sg = Vec::new();
    let mut room = 0;
    for b in &gc.buffers {
        match *b {
            GuestBuffer::Prefix => {
                h.mem.write_all_at(&gc.prefix, PREFIX_AT).unwrap();
                sg.push(SgEntry::new(PREFIX_AT, gc.prefix.len() as u32));
            }
            GuestBuffer::Data => {
                h.mem.write_all_at(data, DATA_AT).unwrap();
                sg.push(SgEntry::new(DATA_AT, data.len() as u32));
            }
            GuestBuffer::Output => {
                room = out_len;
                sg.push(SgEntry::device_write(OUT_AT, out_len as u32));
            }
            GuestBuffer::Scratch(n) => {
                room = n as usize;
                sg.push(SgEntry::device_write(OUT_AT, n as u32));
            }
        }
    }
    let mut cmd = gc.command.with_sg(&sg);
    cmd.cid = 100 + slot;
    h.put_command(SQ, slot, &cmd);
    h.ring(0, (slot + 1) % 8);
    let c = h.wait_completion(CQ, slot, true);
    let mut out = vec![0u8; room];
    h.mem.read_exact_at(&mut out, OUT_AT).unwrap();
    (c, out)
}

#[test]
fn every_request_can_travel_as_a_wire_request_through_the_codec() {
    let mut h = Harness::start("wire");
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    h.write64(
        abi::REGS_BAR,
        reg::DRIVER_FEATURES,
        abi::FEATURE_WIRE_REQUEST | abi::FEATURE_OUT_OF_ORDER,
    );
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let opts = EncodeOptions {
        wire: true,
        post: false,
    };
    let slot = std::cell::Cell::new(0u32);
    let next = || {
        let s = slot.get();
        slot.set(s + 1);
        s
    };
    let call = |h: &mut Harness, req: Request, data: &[u8], out_len: usize| {
        let gc = codec::encode_request(&req, data.len() as u64, out_len as u64, opts).unwrap();
        let (c, out) = guest_call(h, next(), &gc, data, out_len);
        let scratch = if gc
            .buffers
            .iter()
            .any(|b| matches!(b, GuestBuffer::Scratch(_)))
        {
            &out[..]
        } else {
            &[]
        };
        (
            gc.command.opcode,
            codec::decode_completion(&gc, &c, scratch),
            out,
        )
    };
    // DeviceQuery goes as a wire request (its fixed record drops attributes).
    let (opcode, r, _) = call(&mut h, Request::DeviceQuery, &[], 0);
    assert_eq!(opcode, op::WIRE_REQUEST);
    match r.unwrap().reply {
        Reply::Device(d) => assert_eq!(d.name, "test cpu"),
        other => panic!("{other:?}"),
    }
    let (_, r, _) = call(&mut h, Request::CtxCreate { flags: 0 }, &[], 0);
    let Reply::Handle(ctx) = r.unwrap().reply else {
        panic!()
    };
    let (_, r, _) = call(&mut h, Request::MemAlloc { ctx, size: 4096 }, &[], 0);
    let Reply::DevPtr(ptr) = r.unwrap().reply else {
        panic!()
    };
    // Host to device and back through WIRE_REQUEST frames built by hand (the codec would
    // pick the fixed opcodes for these).
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    let htod = Request::MemcpyHtoD {
        ctx,
        dst: ptr,
        stream: 0,
    };
    let prefix = ops::encode(&htod).unwrap();
    let gc = GuestCommand {
        command: Command::new(op::WIRE_REQUEST, 0, &[prefix.len() as u64]),
        prefix,
        buffers: vec![
            GuestBuffer::Prefix,
            GuestBuffer::Data,
            GuestBuffer::Scratch(codec::reply_room(&htod)),
        ],
        form: codec::ReplyForm::Wire,
    };
    let (c, out) = guest_call(&mut h, next(), &gc, &payload, 0);
    assert_eq!(
        codec::decode_completion(&gc, &c, &out).unwrap().reply,
        Reply::Done
    );
    let dtoh = Request::MemcpyDtoH {
        ctx,
        src: ptr,
        len: 3000,
        stream: 0,
    };
    let prefix = ops::encode(&dtoh).unwrap();
    let gc = GuestCommand {
        command: Command::new(op::WIRE_REQUEST, 0, &[prefix.len() as u64]),
        prefix,
        buffers: vec![
            GuestBuffer::Prefix,
            GuestBuffer::Data,
            GuestBuffer::Scratch(codec::reply_room(&dtoh)),
        ],
        form: codec::ReplyForm::Wire,
    };
    let (c, out) = guest_call(&mut h, next(), &gc, &[], 0);
    let g = codec::decode_completion(&gc, &c, &out).unwrap();
    assert_eq!(&out[g.data], &payload[..]);
    // A stream with a priority has no fixed opcode: it goes as a wire request.
    let (opcode, r, _) = call(
        &mut h,
        Request::StreamCreate {
            ctx,
            flags: 1,
            priority: -1,
        },
        &[],
        0,
    );
    assert_eq!(opcode, op::WIRE_REQUEST);
    assert!(matches!(r.unwrap().reply, Reply::Handle(_)));
}

#[test]
fn copies_larger_than_a_frame_move_straight_between_guest_pages_and_the_backend() {
    let mut h = Harness::start_full(
        "bigcopy",
        |b| b.max_frame_data = bytesize::ByteSize::mib(1),
        |_| {},
    );
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let run = |h: &mut Harness, slot: u32, cmd: Command| {
        h.put_command(SQ, slot, &cmd);
        h.ring(0, slot + 1);
        h.wait_completion(CQ, slot, true)
    };
    let ctx = run(&mut h, 0, Command::new(op::CTX_CREATE, 1, &[0])).value0;
    const LEN: u32 = 0x38_0000; // 3.5 MiB: four frames of at most 1 MiB
    let ptr = run(
        &mut h,
        1,
        Command::new(op::MEM_ALLOC, 2, &[ctx, u64::from(LEN)]),
    )
    .value0;
    let src: Vec<u8> = (0..LEN).map(|i| (i ^ (i >> 9)) as u8).collect();
    let back = h.copy_there_and_back_in_pages(SQ, CQ, ctx, ptr, &src);
    assert!(back == src, "the copy came back changed");
}

#[test]
fn a_queue_holds_at_most_256_commands_waiting_for_the_backend() {
    let (mut h, fake) = fake_device("backpressure", abi::FEATURE_OUT_OF_ORDER);
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 512, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    for i in 0..300u32 {
        h.put_command(SQ, i, &Command::new(op::CTX_SYNCHRONIZE, i, &[1]));
    }
    h.ring(0, 300);
    let mut waiting = Vec::new();
    for _ in 0..256 {
        waiting.push(next_request(&fake));
    }
    assert!(
        request_within(&fake, Duration::from_millis(300)).is_none(),
        "more than 256 commands were sent before any was answered"
    );
    assert_eq!(
        h.read32(abi::REGS_BAR, Harness::qreg(0, qreg::SQ_HEAD)),
        256,
        "the device stopped reading the ring"
    );
    // Each answer lets one more through.
    let (conn, id, _, _) = waiting.remove(0);
    fake.reply(conn, id, CuResult::SUCCESS, &Reply::Done, &[]);
    let (conn, id, _, _) = next_request(&fake);
    fake.reply(conn, id, CuResult::SUCCESS, &Reply::Done, &[]);
    for (conn, id, _, _) in waiting {
        fake.reply(conn, id, CuResult::SUCCESS, &Reply::Done, &[]);
    }
    for _ in 0..43 {
        let (conn, id, _, _) = next_request(&fake);
        fake.reply(conn, id, CuResult::SUCCESS, &Reply::Done, &[]);
    }
    let mut cids: Vec<u32> = (0..300)
        .map(|s| h.wait_completion(CQ, s, true).cid)
        .collect();
    cids.sort();
    assert_eq!(cids, (0..300).collect::<Vec<_>>());
}
