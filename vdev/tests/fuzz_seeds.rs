//! Seed corpora of the fuzz targets in `vdev/fuzz` (`vdev/fuzz/seeds/<target>/`): valid
//! inputs in each target's input format, so fuzzing starts from commands, rings and access
//! sequences that reach deep. `cargo test -p netgpu-vdev --test fuzz_seeds -- --ignored`
//! writes them; the ordinary test checks every target has seeds and that the ring seeds run
//! through the device's checks cleanly.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use netgpu_proto::abi::{self, codec, op, queue as qreg, reg, Command, SgEntry};
use netgpu_proto::wire::ops::{self, Reply, Request};

const TARGETS: &[&str] = &[
    "vfio_messages",
    "scatter_lists",
    "registers",
    "command_rings",
    "codec",
];

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

/// `scatter_lists`: [opcode selector][command][guest memory at 0x10000].
fn scatter_seeds() -> Vec<Vec<u8>> {
    let sel = |o: u16| op::ALL.iter().position(|&x| x == o).unwrap() as u8;
    let mut out = Vec::new();
    let inline = Command::new(op::MODULE_GET_FUNCTION, 1, &[1, 8])
        .with_sg(&[SgEntry::new(0x10100, 8), SgEntry::device_write(0x10200, 64)]);
    let mut s = vec![sel(op::MODULE_GET_FUNCTION)];
    s.extend_from_slice(&inline.to_bytes());
    out.push(s);
    let mut chain = SgEntry::new(0x10800, 32);
    chain.flags = abi::SG_FLAG_CHAIN;
    let ind = Command::new(op::MEMCPY_DTOH, 2, &[1, 0, 0]).with_indirect_sg(0x10400, 3);
    let mut mem = vec![0u8; 0x1000];
    let put = |mem: &mut Vec<u8>, at: usize, es: &[SgEntry]| {
        for (i, e) in es.iter().enumerate() {
            mem[at + 16 * i..at + 16 * (i + 1)].copy_from_slice(&e.to_bytes());
        }
    };
    put(
        &mut mem,
        0x400,
        &[SgEntry::device_write(0x10c00, 16), chain],
    );
    put(
        &mut mem,
        0x800,
        &[
            SgEntry::device_write(0x10d00, 16),
            SgEntry::device_write(0x10e00, 16),
        ],
    );
    let mut cmd = ind;
    cmd.sg[0] = SgEntry::new(0x10400, 32);
    let mut s = vec![sel(op::MEMCPY_DTOH)];
    s.extend_from_slice(&cmd.to_bytes());
    s.extend_from_slice(&mem);
    out.push(s);
    out
}

/// `registers`: a sequence of operations (kind byte, then its fields).
fn register_seeds() -> Vec<Vec<u8>> {
    let mut seq = Vec::new();
    // Map 64 pages at 0, writable.
    seq.extend_from_slice(&[2, 0, 64, 1]);
    // Features: write DRIVER_FEATURES (region 0: kind high nibble 0), offset selector 0x10*4.
    let w = |seq: &mut Vec<u8>, sel: u16, v: &[u8]| {
        seq.push(1);
        seq.extend_from_slice(&sel.to_le_bytes());
        seq.push(v.len() as u8);
        seq.extend_from_slice(v);
    };
    w(
        &mut seq,
        (reg::DRIVER_FEATURES as u16) * 4,
        &(abi::FEATURES_ALL as u32).to_le_bytes(),
    );
    // Queue 3 fully set up and enabled: SQ 0x1000, CQ 0x2000, size 8, vector 4.
    seq.extend_from_slice(&[5, 3]);
    for v in [0x1000u32, 0, 0x2000, 0, 8] {
        seq.extend_from_slice(&v.to_le_bytes());
    }
    // Its doorbell, and a read of its STATUS (region 0, selector kind 1 for queue blocks).
    let db = ((3 * reg::DOORBELL_STRIDE) as u16) << 2 | 2;
    w(&mut seq, db, &1u32.to_le_bytes());
    let st = ((3 * reg::QUEUE_REGS_STRIDE + qreg::STATUS) as u16) << 2 | 1;
    seq.extend_from_slice(&[0]);
    seq.extend_from_slice(&st.to_le_bytes());
    seq.push(4);
    // Config space BAR sizing (region 7: kind high nibble 3 -> index 3 in the region list).
    seq.push(0x31);
    seq.extend_from_slice(&0x10u16.to_le_bytes());
    seq.push(4);
    seq.extend_from_slice(&[0xff; 4]);
    // Reset, then unmap.
    seq.push(4);
    seq.extend_from_slice(&[3, 0, 64]);
    vec![seq]
}

/// `command_rings`: 8 header bytes, read-only memory (ring, tables, inputs), writable memory
/// (completion ring at its start, outputs), then the backend's script. Read-only memory is
/// 0x0..0x4000, writable 0x4000..0x8000.
fn ring_seeds() -> Vec<Vec<u8>> {
    let mut ro = vec![0u8; 0x4000];
    let mut slot = 0usize;
    let mut put = |ro: &mut Vec<u8>, c: Command| {
        ro[slot * 128..slot * 128 + 128].copy_from_slice(&c.to_bytes());
        slot += 1;
    };
    put(&mut ro, Command::new(op::NOP, 1, &[]));
    put(&mut ro, Command::new(op::CTX_CREATE, 2, &[0]));
    put(&mut ro, Command::new(op::MEM_ALLOC, 3, &[1, 4096]));
    ro[0x2000..0x2010].copy_from_slice(b"0123456789abcdef");
    put(
        &mut ro,
        Command::new(op::MEMCPY_HTOD, 4, &[1, 0x1000, 0]).with_sg(&[SgEntry::new(0x2000, 16)]),
    );
    put(
        &mut ro,
        Command::new(op::MEMCPY_DTOH, 5, &[1, 0x1000, 0])
            .with_sg(&[SgEntry::device_write(0x4400, 16)]),
    );
    ro[0x2100..0x2104].copy_from_slice(b"kern");
    put(
        &mut ro,
        Command::new(op::MODULE_GET_FUNCTION, 6, &[2, 4])
            .with_sg(&[SgEntry::new(0x2100, 4), SgEntry::device_write(0x4800, 64)]),
    );
    let prefix = ops::encode(&Request::MemGetInfo).unwrap();
    ro[0x2200..0x2200 + prefix.len()].copy_from_slice(&prefix);
    put(
        &mut ro,
        Command::new(op::WIRE_REQUEST, 7, &[prefix.len() as u64]).with_sg(&[
            SgEntry::new(0x2200, prefix.len() as u32),
            SgEntry::device_write(0x4c00, 64),
        ]),
    );
    put(
        &mut ro,
        Command::new(op::LAUNCH_KERNEL, 8, &[3, 1, 1 << 32, 1, 0, 0])
            .with_sg(&[SgEntry::new(0x2000, 8)])
            .with_flags(abi::CMD_FLAG_ASYNC),
    );
    let tail = slot as u8;
    // size 16 (1 << (1 + 3)), tail, ro length, rw length 0x100 (<< 8), out of order, ...
    let ro_len = ro.len() as u16;
    let mut s = vec![3, tail, (ro_len >> 8) as u8, ro_len as u8, 1, 1, 1, 0];
    s.extend_from_slice(&ro);
    s.extend_from_slice(&vec![0u8; 0x100]);
    // Script: status 0, value, reply kind (Done, Handle, DevPtr, raw...), data len, console.
    for kind in [1u8, 2, 0, 0, 5, 3, 0] {
        s.extend_from_slice(&[0, 7, 0, kind]);
        if kind == 5 {
            s.extend_from_slice(&[2, 0]);
        }
        let data: u16 = if kind == 0 { 16 } else { 0 };
        s.extend_from_slice(&data.to_le_bytes());
        s.push(0);
    }
    vec![s]
}

/// `codec`: command, completion, 12 length bytes (input u16, output u32, data u32, prefix
/// length, status), the prefix, then a reply control section.
fn codec_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Every request a guest can send (`netgpu_proto::samples`, the one list), with a data
    // section of its sample's length (at most 16 bytes) and its output size.
    for (req, data, out_len, _, _) in netgpu_proto::samples::samples() {
        let opts = codec::EncodeOptions {
            wire: true,
            post: false,
        };
        let dl = if req.accepts_data() {
            (data.len() as u64).min(16)
        } else {
            0
        };
        let ol = out_len;
        let Ok(gc) = codec::encode_request(&req, dl, ol, opts) else {
            continue;
        };
        let prefix = if gc.command.opcode == op::WIRE_REQUEST {
            gc.prefix.clone()
        } else {
            ops::encode(&req).unwrap()
        };
        let mut s = gc.command.to_bytes().to_vec();
        s.extend_from_slice(&[0u8; 32]);
        let input = (gc.prefix.len() as u64 + dl) as u16;
        s.extend_from_slice(&input.to_le_bytes());
        s.extend_from_slice(&(codec::reply_room(&req) as u32).to_le_bytes());
        s.extend_from_slice(&0u32.to_le_bytes());
        s.push(prefix.len() as u8);
        s.push(0);
        s.extend_from_slice(&prefix);
        s.extend_from_slice(&ops::encode(&Reply::Handle(9)).unwrap());
        out.push(s);
    }
    out
}

/// `vfio_messages`: message bodies (each parser sees every input).
fn vfio_seeds() -> Vec<Vec<u8>> {
    let mut version = vec![0, 0, 0, 0];
    version
        .extend_from_slice(br#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}"#);
    version.push(0);
    let mut dma_map = Vec::new();
    for v in [32u32, 3] {
        dma_map.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0u64, 0x1000_0000, 0x2000] {
        dma_map.extend_from_slice(&v.to_le_bytes());
    }
    let mut region = Vec::new();
    region.extend_from_slice(&0x1000u64.to_le_bytes());
    region.extend_from_slice(&0u32.to_le_bytes());
    region.extend_from_slice(&4u32.to_le_bytes());
    region.extend_from_slice(&[1, 0, 0, 0]);
    vec![version, dma_map, region]
}

fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("vfio_messages", vfio_seeds()),
        ("scatter_lists", scatter_seeds()),
        ("registers", register_seeds()),
        ("command_rings", ring_seeds()),
        ("codec", codec_seeds()),
    ]
}

#[test]
#[ignore = "writes vdev/fuzz/seeds; run after changing an input format"]
fn write_fuzz_seeds() {
    for (target, seeds) in all() {
        let dir = seeds_dir().join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
}

#[test]
fn every_fuzz_target_has_seeds_and_they_match_the_generator() {
    let generated = all();
    for t in TARGETS {
        let dir = seeds_dir().join(t);
        let n = std::fs::read_dir(&dir)
            .map(|d| d.count())
            .unwrap_or_else(|_| panic!("no seeds in {}", dir.display()));
        assert!(n > 0, "no seeds in {}", dir.display());
        let want = &generated.iter().find(|g| g.0 == *t).unwrap().1;
        for (i, s) in want.iter().enumerate() {
            let got = std::fs::read(dir.join(format!("seed-{i:02}"))).unwrap();
            assert!(
                &got == s,
                "{t} seed {i} is stale: run `cargo test -p netgpu-vdev --test fuzz_seeds -- --ignored`"
            );
        }
    }
}

#[test]
fn the_ring_seed_completes_every_command() {
    let seed = &ring_seeds()[0];
    let (head, rest) = seed.split_at(8);
    let ro_len = (usize::from(head[2]) << 8) | usize::from(head[3]);
    let rig = netgpu_vdev::fuzzing::Rig::new().unwrap();
    let mem = Arc::new(netgpu_vdev::GuestMemory::new());
    let ro = memfd_with(&rest[..ro_len], 0x4000);
    let rw = memfd_with(&[], 0x4000);
    mem.map(0, 0x4000, 0, false, Some(ro)).unwrap();
    mem.map(0x4000, 0x4000, 0, true, Some(rw)).unwrap();
    let replies = [
        Reply::Handle(1),
        Reply::DevPtr(0x1000),
        Reply::Done,
        Reply::Done,
        Reply::Function(ops::FunctionInfo {
            handle: 9,
            params: vec![ops::ParamInfo { offset: 0, size: 8 }],
            param_buffer_size: 8,
            attributes: vec![],
        }),
        Reply::MemInfo { free: 1, total: 2 },
    ];
    let mut i = 0;
    let why = netgpu_vdev::fuzzing::ring(
        &rig,
        &mem,
        netgpu_vdev::fuzzing::Ring {
            sq_base: 0,
            cq_base: 0x4000,
            size: 16,
            tail: u32::from(head[1]),
            out_of_order: true,
            max_data: 1 << 20,
            memory_limit: 0,
        },
        |req| {
            let r = &replies[i.min(replies.len() - 1)];
            i += 1;
            let data_len = if matches!(req, Request::MemcpyDtoH { .. }) {
                16
            } else {
                0
            };
            netgpu_vdev::fuzzing::Reply {
                status: 0,
                ctrl: Some(ops::encode(r).unwrap()),
                data_len,
                console: false,
            }
        },
    );
    assert_eq!(why, netgpu_vdev::StopReason::Stopped);
    let mut results = Vec::new();
    let snap = mem.snapshot();
    for slot in 0..u64::from(head[1]) {
        let mut b = [0u8; 32];
        snap.read(0x4000 + slot * 32, &mut b).unwrap();
        let c = abi::Completion::from_bytes(&b);
        results.push((c.cid, c.result));
    }
    results.sort();
    assert_eq!(
        results,
        (1..=8).map(|cid| (cid, 0)).collect::<Vec<_>>(),
        "every seed command succeeds"
    );
}

fn memfd_with(data: &[u8], size: u64) -> std::fs::File {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileExt;
    // SAFETY: the name is NUL-terminated; the result is checked.
    let fd = unsafe { libc::memfd_create(c"seed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor owned by nothing else.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f.write_all_at(data, 0).unwrap();
    f
}
