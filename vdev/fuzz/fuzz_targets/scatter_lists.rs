//! A guest-controlled command descriptor and guest memory (which holds indirect tables) fed
//! arbitrary bytes: resolving the list must never panic or loop, every entry lies in mapped
//! guest memory (zero-length entries aside) and in writable memory if it allows device
//! writes; splitting it for any opcode puts inputs first and only device-write entries in
//! the output; reading a resolved input reads exactly its length.
#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netgpu_proto::abi::{codec, op, Command};
use netgpu_vdev::{GuestMemory, SgList};

const BASE: u64 = 0x10000;
const SIZE: u64 = 0x10000;
/// A read-only mapping right after the writable one.
const RO: u64 = BASE + SIZE;

fn memfd(size: u64) -> File {
    // SAFETY: the name is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::memfd_create(c"netgpu-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("memfd size");
    f
}

fn memory() -> &'static GuestMemory {
    static MEM: OnceLock<GuestMemory> = OnceLock::new();
    MEM.get_or_init(|| {
        let mem = GuestMemory::new();
        mem.map(BASE, SIZE, 0, true, Some(memfd(SIZE)))
            .expect("map");
        mem.map(RO, 0x1000, 0, false, Some(memfd(0x1000)))
            .expect("map");
        mem
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < Command::SIZE + 1 {
        return;
    }
    let mut raw = [0u8; Command::SIZE];
    raw.copy_from_slice(&data[1..=Command::SIZE]);
    let cmd = Command::from_bytes(&raw);
    let spec = codec::spec(op::ALL[data[0] as usize % op::ALL.len()]).expect("spec");
    let snap = memory().snapshot();
    // The rest of the input becomes guest memory (indirect tables, chains).
    let rest = &data[Command::SIZE + 1..];
    let n = rest.len().min(SIZE as usize);
    snap.write(BASE, &rest[..n]).expect("guest memory");
    let Ok(list) = SgList::resolve(&cmd, &snap) else {
        return;
    };
    let sum: u64 = list.entries.iter().map(|e| u64::from(e.len)).sum();
    assert_eq!(sum, list.total);
    for e in list.entries.iter().filter(|e| e.len > 0) {
        let end = e
            .addr
            .checked_add(u64::from(e.len))
            .expect("entry end overflows");
        assert!(
            e.addr >= BASE && end <= RO + 0x1000,
            "entry outside guest memory"
        );
        assert!(
            !e.write || end <= RO,
            "a device-write entry in read-only memory"
        );
    }
    let Ok(b) = list.split(&spec) else {
        return;
    };
    assert_eq!(b.input.len() + b.output.len(), list.total);
    let out_entries: u64 = list
        .entries
        .iter()
        .filter(|e| e.write)
        .map(|e| u64::from(e.len))
        .sum();
    assert!(
        b.output.len() <= out_entries,
        "output holds an entry without DEVICE_WRITE"
    );
    if !spec.output {
        assert!(b.output.is_empty());
    }
    if b.input.len() <= SIZE {
        let got = b
            .input
            .gather(&snap, 0, b.input.len())
            .expect("a resolved input reads");
        assert_eq!(got.len() as u64, b.input.len());
    }
});
