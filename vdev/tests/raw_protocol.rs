//! Raw vfio-user messages the `vfio_user` client cannot send: the DMA unmap flag bits as
//! QEMU sends them, malformed and oversized messages. The server must answer each with an
//! errno reply (or succeed) and keep the stream in sync.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{memfd, Harness};
use netgpu_proto::abi;
use netgpu_vdev::protocol::{cmd, Header, Out, FLAG_ERROR, FLAG_REPLY, HEADER_LEN};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

struct Raw {
    s: UnixStream,
    id: u16,
}

impl Raw {
    fn send(&mut self, command: u16, body: &[u8], fd: Option<i32>) -> (Header, Vec<u8>) {
        self.send_sized(command, body, (HEADER_LEN + body.len()) as u32, fd)
    }

    fn send_sized(
        &mut self,
        command: u16,
        body: &[u8],
        size: u32,
        fd: Option<i32>,
    ) -> (Header, Vec<u8>) {
        self.id += 1;
        let h = Header {
            message_id: self.id,
            command,
            message_size: size,
            flags: 0,
            error: 0,
        };
        let mut msg = h.to_bytes().to_vec();
        msg.extend_from_slice(body);
        match fd {
            Some(fd) => {
                self.s.send_with_fd(&msg[..], fd).unwrap();
            }
            None => self.s.write_all(&msg).unwrap(),
        }
        let mut hb = [0u8; HEADER_LEN];
        self.s.read_exact(&mut hb).unwrap();
        let r = Header::from_bytes(&hb);
        assert_eq!(r.message_id, self.id);
        assert_ne!(r.flags & FLAG_REPLY, 0);
        let mut body = vec![0u8; r.message_size as usize - HEADER_LEN];
        self.s.read_exact(&mut body).unwrap();
        (r, body)
    }

    fn magic(&mut self) -> u32 {
        let mut b = Out::default();
        b.u64(abi::reg::MAGIC).u32(0).u32(4);
        let (h, body) = self.send(cmd::REGION_READ, &b.0, None);
        assert_eq!(h.flags & FLAG_ERROR, 0);
        u32::from_le_bytes([body[16], body[17], body[18], body[19]])
    }
}

fn errno(h: &Header) -> Option<i32> {
    (h.flags & FLAG_ERROR != 0).then_some(h.error as i32)
}

fn connect(h: &mut Harness) -> Raw {
    h.client.shutdown().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    Raw { s, id: 100 }
}

fn dma_unmap(r: &mut Raw, flags: u32, addr: u64, size: u64) -> Header {
    let mut b = Out::default();
    b.u32(24).u32(flags).u64(addr).u64(size);
    r.send(cmd::DMA_UNMAP, &b.0, None).0
}

fn dma_map(r: &mut Raw, addr: u64, size: u64, fd: Option<i32>) -> Header {
    let mut b = Out::default();
    b.u32(32).u32(3).u64(0).u64(addr).u64(size);
    r.send(cmd::DMA_MAP, &b.0, fd).0
}

#[test]
fn dma_unmap_all_is_bit_one_and_the_crates_bit_two_is_refused() {
    let mut h = Harness::start("rawunmap");
    let mut r = connect(&mut h);
    let m = memfd(1 << 20);
    assert_eq!(
        errno(&dma_map(&mut r, 0, 1 << 20, Some(m.as_raw_fd()))),
        None
    );
    assert_eq!(errno(&dma_map(&mut r, 1 << 20, 1 << 20, None)), None);
    // Overlap refused.
    assert_eq!(
        errno(&dma_map(&mut r, 0x1000, 0x1000, Some(m.as_raw_fd()))),
        Some(libc::EEXIST)
    );
    // vfio_user 0.1.7's UNMAP_ALL (bit 2) is not a flag QEMU sends: refused, nothing unmapped.
    assert_eq!(errno(&dma_unmap(&mut r, 1 << 2, 0, 0)), Some(libc::EINVAL));
    // Dirty bitmap (bit 0) is not supported.
    assert_eq!(
        errno(&dma_unmap(&mut r, 1 << 0, 0, 1 << 20)),
        Some(libc::ENOTSUP)
    );
    // QEMU's unmap-all: bit 1.
    assert_eq!(errno(&dma_unmap(&mut r, 1 << 1, 0, 0)), None);
    // Both mappings are gone.
    assert_eq!(errno(&dma_unmap(&mut r, 0, 0, 1 << 20)), Some(libc::EINVAL));
    assert_eq!(
        errno(&dma_unmap(&mut r, 0, 1 << 20, 1 << 20)),
        Some(libc::EINVAL)
    );
    // A mapping beyond the end of its file would fault on access: refused.
    assert_eq!(
        errno(&dma_map(&mut r, 0, 2 << 20, Some(m.as_raw_fd()))),
        Some(libc::EINVAL)
    );
}

#[test]
fn malformed_messages_get_errno_replies_and_the_stream_stays_in_sync() {
    let mut h = Harness::start("rawbad");
    let mut r = connect(&mut h);
    // VERSION whose size is smaller than its struct (vfio_user 0.1.7 underflows here).
    let (hd, _) = r.send(cmd::VERSION, &[0, 0], None);
    assert_eq!(errno(&hd), Some(libc::EINVAL));
    // VERSION with capabilities that are not NUL-terminated.
    let (hd, body) = r.send(cmd::VERSION, b"\0\0\x01\0{\"capabilities\":{}}", None);
    assert_eq!(errno(&hd), None);
    assert!(body.ends_with(&[0]), "our capabilities are NUL-terminated");
    let caps: serde_json::Value = serde_json::from_slice(&body[4..body.len() - 1]).unwrap();
    assert_eq!(caps["capabilities"]["pgsizes"], 4096);
    // A region read of 4 GiB is refused, not allocated.
    let mut b = Out::default();
    b.u64(0).u32(0).u32(u32::MAX);
    assert_eq!(
        errno(&r.send(cmd::REGION_READ, &b.0, None).0),
        Some(libc::EINVAL)
    );
    // A write whose data length disagrees with its count.
    let mut b = Out::default();
    b.u64(0).u32(0).u32(8).u32(1);
    assert_eq!(
        errno(&r.send(cmd::REGION_WRITE, &b.0, None).0),
        Some(libc::EINVAL)
    );
    // Out-of-range region and offset.
    let mut b = Out::default();
    b.u64(0).u32(9).u32(4);
    assert_eq!(
        errno(&r.send(cmd::REGION_READ, &b.0, None).0),
        Some(libc::EINVAL)
    );
    let mut b = Out::default();
    b.u64(abi::REGS_BAR_SIZE - 2).u32(0).u32(4);
    assert_eq!(
        errno(&r.send(cmd::REGION_READ, &b.0, None).0),
        Some(libc::EINVAL)
    );
    // Unknown command with a body; server-to-client commands from the client.
    assert_eq!(
        errno(&r.send(99, &[1, 2, 3, 4, 5], None).0),
        Some(libc::EINVAL)
    );
    assert_eq!(
        errno(&r.send(cmd::DMA_READ, &[0; 24], None).0),
        Some(libc::EINVAL)
    );
    // SET_IRQS with two action bits; MSI-X vectors beyond the table.
    let mut b = Out::default();
    b.u32(20).u32(0x4 | 0x8 | 0x20).u32(2).u32(0).u32(0);
    assert_eq!(
        errno(&r.send(cmd::DEVICE_SET_IRQS, &b.0, None).0),
        Some(libc::EINVAL)
    );
    let mut b = Out::default();
    b.u32(20)
        .u32(0x4 | 0x20)
        .u32(2)
        .u32(abi::MSIX_VECTORS)
        .u32(1);
    let ev = common::eventfd();
    assert_eq!(
        errno(&r.send(cmd::DEVICE_SET_IRQS, &b.0, Some(ev.as_raw_fd())).0),
        Some(libc::EINVAL)
    );
    // Truncated bodies.
    assert_eq!(
        errno(&r.send(cmd::DMA_MAP, &[0; 8], None).0),
        Some(libc::EINVAL)
    );
    assert_eq!(
        errno(&r.send(cmd::DEVICE_GET_REGION_INFO, &[0; 4], None).0),
        Some(libc::EINVAL)
    );
    // After all that the stream is still in sync.
    assert_eq!(r.magic(), abi::MAGIC);
}

#[test]
fn a_message_claiming_an_absurd_size_drops_the_client_not_the_server() {
    let mut h = Harness::start("rawhuge");
    let mut r = connect(&mut h);
    let hdr = Header {
        message_id: 1,
        command: cmd::REGION_WRITE,
        message_size: u32::MAX,
        flags: 0,
        error: 0,
    };
    r.s.write_all(&hdr.to_bytes()).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(r.s.read(&mut b).unwrap_or(0), 0, "connection closed");
    // The server accepts the next client.
    let s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = Raw { s, id: 1 };
    assert_eq!(r.magic(), abi::MAGIC);
}
