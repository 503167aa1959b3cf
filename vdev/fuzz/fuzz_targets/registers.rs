//! Sequences of VMM accesses to the device fed arbitrary bytes: config space, BAR0 registers
//! (queue setup, enables, doorbells, resets), the doorbell page and the MSI-X BAR, mixed with
//! DMA maps and unmaps. Nothing may panic; the register file keeps answering (MAGIC reads
//! "NGPU" and out-of-range reads all ones after any sequence).
#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netgpu_proto::abi;
use netgpu_vdev::{Device, DeviceConfig};

/// A runtime that is never driven: tasks the device spawns (the backend probe after a reset,
/// queue workers) are queued and dropped with it, so a run is deterministic and touches no
/// network; what is fuzzed is the register file and the device state machine.
fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn memfd() -> &'static File {
    static F: OnceLock<File> = OnceLock::new();
    F.get_or_init(|| {
        // SAFETY: the name is NUL-terminated; the result is checked before use.
        let fd = unsafe { libc::memfd_create(c"netgpu-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(1 << 20).expect("memfd size");
        f
    })
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) | u16::from(self.u8()?) << 8)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Offsets worth hitting: the register blocks, and anything else.
fn offset(region: u32, sel: u16) -> u64 {
    let sel = u64::from(sel);
    match region {
        abi::REGS_BAR => match sel % 4 {
            0 => sel % 0xc0,
            1 => abi::reg::QUEUE_REGS_BASE + (sel >> 2) % (64 * 0x40),
            2 => abi::reg::DOORBELL_BASE + (sel >> 2) % (64 * 8),
            _ => sel >> 2,
        },
        _ => sel,
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = DeviceConfig {
        name: "fuzz".into(),
        backend: "127.0.0.1:1".into(),
        ..DeviceConfig::default()
    };
    let rt = idle_runtime();
    let Ok(mut dev) = Device::new(cfg, rt.handle().clone()) else {
        return;
    };
    let mut inp = Input(data);
    let mut ops = 0;
    while let Some(kind) = inp.u8() {
        ops += 1;
        if ops > 64 {
            break;
        }
        let region = [0u32, 2, 4, 7, 1, 3, 9][usize::from(kind >> 4) % 7];
        match kind % 6 {
            0 | 1 => {
                let Some(sel) = inp.u16() else { break };
                let len = usize::from(inp.u8().unwrap_or(4) % 9).max(1);
                let off = offset(region, sel);
                if kind % 6 == 0 {
                    let mut buf = vec![0u8; len];
                    dev.region_read(region, off, &mut buf);
                } else {
                    let v = inp.bytes(len).to_vec();
                    dev.region_write(region, off, &v);
                }
            }
            2 => {
                let (Some(page), Some(pages), Some(w)) = (inp.u8(), inp.u8(), inp.u8()) else {
                    break;
                };
                let addr = u64::from(page) * 4096;
                let size = u64::from(pages % 16) * 4096;
                let f = memfd().try_clone().expect("dup");
                let _ =
                    dev.shared()
                        .memory()
                        .map(addr, size, addr % (1 << 19), w & 1 == 1, Some(f));
            }
            3 => {
                let (Some(page), Some(pages)) = (inp.u8(), inp.u8()) else {
                    break;
                };
                let _ = dev
                    .shared()
                    .memory()
                    .unmap(u64::from(page) * 4096, u64::from(pages) * 4096);
            }
            4 => dev.reset(),
            _ => {
                // A full queue setup from the input, then enable it.
                let Some(q) = inp.u8() else { break };
                let block = abi::reg::QUEUE_REGS_BASE + u64::from(q % 64) * 0x40;
                let v = inp.bytes(20).to_vec();
                for (i, chunk) in v.chunks(4).enumerate() {
                    if chunk.len() == 4 {
                        dev.region_write(abi::REGS_BAR, block + 4 * i as u64, chunk);
                    }
                }
                dev.region_write(
                    abi::REGS_BAR,
                    block + abi::queue::ENABLE,
                    &1u32.to_le_bytes(),
                );
            }
        }
    }
    let mut magic = [0u8; 4];
    dev.region_read(abi::REGS_BAR, abi::reg::MAGIC, &mut magic);
    assert_eq!(&magic, b"NGPU");
    let mut out = [0u8; 4];
    dev.region_read(abi::REGS_BAR, abi::REGS_BAR_SIZE, &mut out);
    assert_eq!(out, [0xff; 4]);
    dev.disconnect();
    drop(dev);
    drop(rt);
});
