//! Whole submission rings in guest memory fed arbitrary bytes, answered by a scripted backend
//! (also fed arbitrary bytes): every descriptor goes through everything the device does with
//! hostile input (scatter lists, directions, decoding, planning, the memory limit, reply
//! shaping, output and completion writes). Nothing may panic, and the device writes guest
//! memory only where it may: the completion ring and entries that carry DEVICE_WRITE.
//!
//! Layout: the submission ring and every table and input live in a read-only mapping (so the
//! descriptors cannot change under the run and the oracle sees what the device saw); the
//! completion ring and outputs are in a writable one.
#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use netgpu_proto::abi::{Command, Completion};
use netgpu_proto::wire::ops::{self, DeviceInfo, FunctionInfo, ParamInfo, Reply};
use netgpu_vdev::fuzzing::{self, Rig, Ring};
use netgpu_vdev::{GuestMemory, SgList};

const RO: u64 = 0x0;
const RO_SIZE: u64 = 0x4000;
const RW: u64 = 0x4000;
const RW_SIZE: u64 = 0x4000;
const CQ: u64 = RW;

struct World {
    rig: Rig,
    mem: Arc<GuestMemory>,
    ro: File,
    rw: File,
}

fn memfd(size: u64) -> File {
    // SAFETY: the name is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::memfd_create(c"netgpu-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("memfd size");
    f
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let ro = memfd(RO_SIZE);
        let rw = memfd(RW_SIZE);
        let mem = Arc::new(GuestMemory::new());
        mem.map(RO, RO_SIZE, 0, false, Some(ro.try_clone().expect("dup")))
            .expect("map");
        mem.map(RW, RW_SIZE, 0, true, Some(rw.try_clone().expect("dup")))
            .expect("map");
        World {
            rig: Rig::new().expect("rig"),
            mem,
            ro,
            rw,
        }
    })
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
    fn reply(&mut self) -> fuzzing::Reply {
        let status = match self.u8() % 8 {
            0..=4 => 0,
            5 => 1,
            6 => 600,
            _ => 719,
        };
        let v = u64::from(self.u16());
        let ctrl = match self.u8() % 9 {
            0 => Some(ops::encode(&Reply::Done).expect("encode")),
            1 => Some(ops::encode(&Reply::Handle(v)).expect("encode")),
            2 => Some(ops::encode(&Reply::DevPtr(v << 12)).expect("encode")),
            3 => Some(
                ops::encode(&Reply::MemInfo {
                    free: v,
                    total: v * 2,
                })
                .expect("encode"),
            ),
            4 => Some(
                ops::encode(&Reply::Device(DeviceInfo {
                    name: "x".repeat(usize::from(self.u8())),
                    attributes: vec![(1, 2); usize::from(self.u8())],
                    ..DeviceInfo::default()
                }))
                .expect("encode"),
            ),
            5 => Some(
                ops::encode(&Reply::Function(FunctionInfo {
                    handle: v,
                    params: vec![ParamInfo { offset: 0, size: 4 }; usize::from(self.u16() % 2048)],
                    param_buffer_size: 4,
                    attributes: vec![],
                }))
                .expect("encode"),
            ),
            6 => {
                let n = usize::from(self.u8());
                Some((0..n).map(|_| self.u8()).collect())
            }
            7 => Some(Vec::new()),
            _ => None,
        };
        fuzzing::Reply {
            status,
            ctrl,
            data_len: u32::from(self.u16()) % 0x12000,
            console: self.u8() & 1 == 1,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let w = world();
    let (head, rest) = data.split_at(8);
    let size = 1u32 << (1 + head[0] % 6); // 2..64 entries
    let tail = u32::from(head[1]) % size;
    let ro_len = ((usize::from(head[2]) << 8) | usize::from(head[3])).min(rest.len());
    let (ro_bytes, rest) = rest.split_at(ro_len.min(RO_SIZE as usize));
    let rw_len = (usize::from(head[4]) << 8).min(rest.len());
    let (rw_bytes, script) = rest.split_at(rw_len.min(RW_SIZE as usize));
    // Guest memory for this run.
    let mut ro = vec![0u8; RO_SIZE as usize];
    ro[..ro_bytes.len()].copy_from_slice(ro_bytes);
    let mut rw = vec![0u8; RW_SIZE as usize];
    rw[..rw_bytes.len()].copy_from_slice(rw_bytes);
    w.ro.write_all_at(&ro, 0).expect("write");
    w.rw.write_all_at(&rw, 0).expect("write");
    // Where the device may write: the completion ring, and the DEVICE_WRITE entries of the
    // descriptors it will read (they cannot change: the ring and tables are read-only).
    let snap = w.mem.snapshot();
    let mut allowed = vec![(CQ, u64::from(size) * Completion::SIZE as u64)];
    for slot in 0..tail {
        let mut raw = [0u8; Command::SIZE];
        raw.copy_from_slice(&ro[slot as usize * Command::SIZE..][..Command::SIZE]);
        if let Ok(list) = SgList::resolve(&Command::from_bytes(&raw), &snap) {
            allowed.extend(
                list.entries
                    .iter()
                    .filter(|e| e.write)
                    .map(|e| (e.addr, u64::from(e.len))),
            );
        }
    }
    drop(snap);
    let ring = Ring {
        sq_base: RO,
        cq_base: CQ,
        size,
        tail,
        out_of_order: head[5] & 1 == 1,
        max_data: [4096, 1 << 16, 1 << 20][usize::from(head[5] >> 1) % 3],
        memory_limit: [0, 4096, 1 << 30][usize::from(head[6]) % 3],
    };
    let mut script = Script(script);
    let _ = fuzzing::ring(&w.rig, &w.mem, ring, |_| script.reply());
    let mut after = vec![0u8; RW_SIZE as usize];
    w.rw.read_exact_at(&mut after, 0).expect("read");
    let mut back = vec![0u8; RO_SIZE as usize];
    w.ro.read_exact_at(&mut back, 0).expect("read");
    assert!(back == ro, "read-only guest memory changed");
    // Compare in blocks (one memcmp each), then bytes of blocks that differ.
    for (blk, (a, b)) in after.chunks(64).zip(rw.chunks(64)).enumerate() {
        if a == b {
            continue;
        }
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            if x != y {
                let addr = RW + (blk * 64 + i) as u64;
                assert!(
                    allowed.iter().any(|&(s, n)| addr >= s && addr - s < n),
                    "the device wrote {addr:#x}, which no DEVICE_WRITE entry names"
                );
            }
        }
    }
});
