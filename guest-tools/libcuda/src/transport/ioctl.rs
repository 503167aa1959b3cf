//! The kernel module's ioctls (`include/uapi/netgpu.h`): `SUBMIT` (blocking), `QUEUE`
//! (non-blocking, returns the sequence number of the first command) and `WAIT` (reaps
//! completions of queued commands by sequence number). Errors are the module's errno.

use std::os::fd::RawFd;

use netgpu_proto::abi::{uapi, Command, Completion};

/// One command slot: `struct netgpu_ioc_cmd`.
pub type Slot = [u8; uapi::CMD_SIZE];

const fn ioc_rw(nr: u32, size: usize) -> u32 {
    (3 << 30) | ((size as u32) << 16) | ((b'N' as u32) << 8) | nr
}

/// `struct netgpu_ioc_queue`.
#[repr(C)]
struct IocQueue {
    cmds: u64,
    count: u32,
    flags: u32,
    seq: u64,
}

/// `struct netgpu_ioc_reap`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IocReap {
    seq: u64,
    state: u32,
    reserved: u32,
    cpl: [u8; Completion::SIZE],
}

/// `struct netgpu_ioc_wait`.
#[repr(C)]
struct IocWait {
    reaps: u64,
    count: u32,
    flags: u32,
    timeout_ns: i64,
    done: u32,
    reserved: u32,
}

#[repr(C)]
struct IocSubmit {
    cmds: u64,
    count: u32,
    flags: u32,
}

/// `NETGPU_IOC_QUEUE` / `NETGPU_IOC_WAIT` (the header's `_IOWR('N', 2|3, ...)`).
const IOC_QUEUE: u32 = ioc_rw(2, std::mem::size_of::<IocQueue>());
const IOC_WAIT: u32 = ioc_rw(3, std::mem::size_of::<IocWait>());
const REAP_DONE: u32 = 1;
const REAP_LOST: u32 = 3;
const WAIT_ANY: u32 = 1;
/// `NETGPU_MAX_WAIT`.
const MAX_WAIT: usize = 128;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn completion(slot: &Slot) -> Completion {
    let mut b = [0u8; Completion::SIZE];
    b.copy_from_slice(&slot[Command::SIZE..]);
    Completion::from_bytes(&b)
}

/// Submits at most `MAX_BATCH` commands and waits for them; their completions.
pub fn submit(fd: RawFd, cmds: &mut [Slot]) -> Result<Vec<Completion>, i32> {
    let mut s = IocSubmit {
        cmds: cmds.as_mut_ptr() as u64,
        count: cmds.len() as u32,
        flags: 0,
    };
    // SAFETY: `s` names `cmds`, initialised slots of the layout the module expects (struct
    // netgpu_ioc_cmd, checked by the ABI test); every buffer they name outlives this call.
    let r = unsafe { libc::ioctl(fd, uapi::IOC_SUBMIT as _, &mut s as *mut IocSubmit) };
    if r != 0 {
        return Err(errno());
    }
    Ok(cmds.iter().map(completion).collect())
}

/// Queues at most `MAX_BATCH` commands; the sequence number of the first. The buffers they
/// name must stay valid until each is reaped.
pub fn queue(fd: RawFd, cmds: &mut [Slot]) -> Result<u64, i32> {
    let mut q = IocQueue {
        cmds: cmds.as_mut_ptr() as u64,
        count: cmds.len() as u32,
        flags: 0,
        seq: 0,
    };
    // SAFETY: as in `submit`; the module copies the descriptors and writes only `q.seq`.
    let r = unsafe { libc::ioctl(fd, IOC_QUEUE as _, &mut q as *mut IocQueue) };
    if r != 0 {
        return Err(errno());
    }
    Ok(q.seq)
}

/// What became of a queued command.
pub enum Reaped {
    Done(Completion),
    /// Still running (only when not blocking).
    Pending,
    /// It will never complete (the queue failed), or the module does not know it.
    Lost,
}

/// Reaps the commands `seqs`: `block` waits until none is pending; otherwise it takes those
/// that completed and leaves the others pending.
pub fn wait(fd: RawFd, seqs: &[u64], block: bool) -> Result<Vec<Reaped>, i32> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(MAX_WAIT) {
        let mut reaps: Vec<IocReap> = chunk
            .iter()
            .map(|&seq| IocReap {
                seq,
                state: 0,
                reserved: 0,
                cpl: [0; Completion::SIZE],
            })
            .collect();
        loop {
            let mut w = IocWait {
                reaps: reaps.as_mut_ptr() as u64,
                count: reaps.len() as u32,
                flags: if block { 0 } else { WAIT_ANY },
                timeout_ns: if block { -1 } else { 0 },
                done: 0,
                reserved: 0,
            };
            // SAFETY: `w` names `reaps`, `count` initialised entries the module reads and
            // writes; both live across the call.
            let r = unsafe { libc::ioctl(fd, IOC_WAIT as _, &mut w as *mut IocWait) };
            if r == 0 {
                break;
            }
            match errno() {
                libc::EINTR => continue,
                libc::ETIMEDOUT if !block => {
                    for r in &mut reaps {
                        r.state = 0;
                    }
                    break;
                }
                e => return Err(e),
            }
        }
        out.extend(reaps.iter().map(|r| match r.state {
            REAP_DONE => {
                let mut s: Slot = [0; uapi::CMD_SIZE];
                s[Command::SIZE..].copy_from_slice(&r.cpl);
                Reaped::Done(completion(&s))
            }
            0 => Reaped::Pending,
            REAP_LOST => Reaped::Lost,
            _ => Reaped::Lost,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_and_numbers_are_the_headers() {
        // include/uapi/netgpu.h: queue 24 bytes, reap 48, wait 32; 'N' 0x02 / 0x03, _IOWR.
        assert_eq!(std::mem::size_of::<IocQueue>(), 24);
        assert_eq!(std::mem::size_of::<IocReap>(), 48);
        assert_eq!(std::mem::size_of::<IocWait>(), 32);
        assert_eq!(IOC_QUEUE, 0xC018_4E02);
        assert_eq!(IOC_WAIT, 0xC020_4E03);
        assert_eq!(ioc_rw(1, uapi::SUBMIT_SIZE), uapi::IOC_SUBMIT);
    }
}
