//! A guest-controlled command descriptor and guest memory (which holds indirect scatter-list
//! tables) fed arbitrary bytes: resolving the list must never panic, loop, or yield an entry
//! outside mapped guest memory (zero-length entries aside); gathering a resolved list reads exactly its total.
#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netgpu_proto::abi::Command;
use netgpu_vdev::GuestMemory;
use netgpu_vdev::SgList;

const BASE: u64 = 0x10000;
const SIZE: u64 = 0x10000;

fn memory() -> &'static GuestMemory {
    static MEM: OnceLock<GuestMemory> = OnceLock::new();
    MEM.get_or_init(|| {
        // SAFETY: the name is NUL-terminated; the result is checked before use.
        let fd = unsafe { libc::memfd_create(c"netgpu-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(SIZE).expect("memfd size");
        let mem = GuestMemory::new();
        mem.map(BASE, SIZE, 0, true, Some(f)).expect("map");
        mem
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < Command::SIZE {
        return;
    }
    let mut raw = [0u8; Command::SIZE];
    raw.copy_from_slice(&data[..Command::SIZE]);
    let cmd = Command::from_bytes(&raw);
    let mem = memory();
    let snap = mem.snapshot();
    // The rest of the input becomes guest memory (indirect tables, chains).
    let rest = &data[Command::SIZE..];
    let n = rest.len().min(SIZE as usize);
    let _ = snap.write(BASE, &rest[..n]);
    if let Ok(list) = SgList::resolve(&cmd, &snap) {
        let sum: u64 = list.entries.iter().map(|&(_, len)| u64::from(len)).sum();
        assert_eq!(sum, list.total);
        // A zero-length entry touches no memory and may name any address.
        for &(addr, len) in list.entries.iter().filter(|e| e.1 > 0) {
            let end = addr.checked_add(u64::from(len)).expect("entry end overflows");
            assert!(addr >= BASE && end <= BASE + SIZE, "entry outside guest memory");
        }
        if list.total <= SIZE {
            let got = list.gather(&snap, 0, list.total).expect("a resolved list gathers");
            assert_eq!(got.len() as u64, list.total);
        }
    }
});
