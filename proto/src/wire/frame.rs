//! Frame layout: a fixed 24-byte little-endian header, a control section (postcard) and a
//! data section (raw bytes).
//!
//! ```text
//! offset size field
//!   0     2   magic        0x474e ("NG")
//!   2     1   kind         1 request, 2 reply, 3 goodbye (peer closes after it)
//!   3     1   flags        bit 0: NO_REPLY (request is stream-ordered; do not answer)
//!                            bit 1: CONSOLE_PENDING (reply: kernel console output is waiting)
//!   4     4   ctrl_len     bytes of control section that follow the header
//!   8     4   data_len     bytes of data section that follow the control section
//!  12     4   status       CUresult of a reply (0 in requests)
//!  16     8   request_id   chosen by the client, echoed in the reply
//! ```

use crate::cuda::CuResult;
use thiserror::Error;

pub const MAGIC: u16 = 0x474e;
pub const HEADER_LEN: usize = 24;
/// The request is stream-ordered: execute it in order but send no reply. A failure is
/// remembered by the session and returned by the next synchronising request.
pub const FLAG_NO_REPLY: u8 = 1;
/// Reply flag: the session holds kernel console output (device-side `printf`) that the
/// client has not read yet; it takes it with `ConsoleRead`. Set on replies only.
pub const FLAG_CONSOLE_PENDING: u8 = 1 << 1;
const KNOWN_FLAGS: u8 = FLAG_NO_REPLY | FLAG_CONSOLE_PENDING;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Request = 1,
    Reply = 2,
    /// Sent by the backend before it closes a connection on its own (shutdown, protocol
    /// violation); `status` says why.
    Goodbye = 3,
    /// Protocol version 3: sent by the backend, no sections, request id 0, while it reads
    /// none of the session's requests because the session's queued work is at its bound
    /// (about every 500 ms), so that a client watching for a silent backend sees it alive.
    /// Clients skip it.
    Busy = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub flags: u8,
    pub ctrl_len: u32,
    pub data_len: u32,
    pub status: CuResult,
    pub request_id: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad frame magic {0:#06x}: the peer does not speak the netgpu protocol")]
    BadMagic(u16),
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    #[error("unknown frame flags {0:#04x}")]
    BadFlags(u8),
    #[error("a busy frame with sections or flags")]
    BusyWithSections,
    #[error("control section of {len} bytes exceeds the limit of {max}")]
    CtrlTooLarge { len: u32, max: u32 },
    #[error("data section of {len} bytes exceeds the limit of {max}")]
    DataTooLarge { len: u32, max: u32 },
}

impl FrameHeader {
    pub fn request(request_id: u64, flags: u8, ctrl_len: u32, data_len: u32) -> Self {
        FrameHeader {
            kind: FrameKind::Request,
            flags,
            ctrl_len,
            data_len,
            status: CuResult::SUCCESS,
            request_id,
        }
    }

    pub fn reply(request_id: u64, status: CuResult, ctrl_len: u32, data_len: u32) -> Self {
        FrameHeader {
            kind: FrameKind::Reply,
            flags: 0,
            ctrl_len,
            data_len,
            status,
            request_id,
        }
    }

    pub fn goodbye(status: CuResult, ctrl_len: u32) -> Self {
        FrameHeader {
            kind: FrameKind::Goodbye,
            flags: 0,
            ctrl_len,
            data_len: 0,
            status,
            request_id: 0,
        }
    }

    /// A [`FrameKind::Busy`] frame.
    pub fn busy() -> Self {
        FrameHeader {
            kind: FrameKind::Busy,
            flags: 0,
            ctrl_len: 0,
            data_len: 0,
            status: CuResult::SUCCESS,
            request_id: 0,
        }
    }

    pub fn no_reply(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }

    pub fn console_pending(&self) -> bool {
        self.flags & FLAG_CONSOLE_PENDING != 0
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2] = self.kind as u8;
        b[3] = self.flags;
        b[4..8].copy_from_slice(&self.ctrl_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.data_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.status.0.to_le_bytes());
        b[16..24].copy_from_slice(&self.request_id.to_le_bytes());
        b
    }

    /// Decodes and validates a header against the receiver's limits. A header error leaves
    /// the stream unsynchronised: the receiver must close the connection.
    pub fn decode(b: &[u8; HEADER_LEN], max_ctrl: u32, max_data: u32) -> Result<Self, FrameError> {
        let le16 = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let le32 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let magic = le16(0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let kind = match b[2] {
            1 => FrameKind::Request,
            2 => FrameKind::Reply,
            3 => FrameKind::Goodbye,
            4 => FrameKind::Busy,
            k => return Err(FrameError::BadKind(k)),
        };
        let flags = b[3];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::BadFlags(flags));
        }
        let ctrl_len = le32(4);
        if ctrl_len > max_ctrl {
            return Err(FrameError::CtrlTooLarge {
                len: ctrl_len,
                max: max_ctrl,
            });
        }
        let data_len = le32(8);
        if data_len > max_data {
            return Err(FrameError::DataTooLarge {
                len: data_len,
                max: max_data,
            });
        }
        if kind == FrameKind::Busy && (ctrl_len != 0 || data_len != 0 || flags != 0) {
            return Err(FrameError::BusyWithSections);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[16..24]);
        Ok(FrameHeader {
            kind,
            flags,
            ctrl_len,
            data_len,
            status: CuResult(le32(12)),
            request_id: u64::from_le_bytes(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = FrameHeader::request(0x1122_3344_5566_7788, FLAG_NO_REPLY, 17, 4096);
        let d = FrameHeader::decode(&h.encode(), 100, 1 << 20).unwrap();
        assert_eq!(d, h);
        assert!(d.no_reply());
        let r = FrameHeader::reply(9, CuResult::ILLEGAL_ADDRESS, 0, 0);
        assert_eq!(FrameHeader::decode(&r.encode(), 100, 100).unwrap(), r);
    }

    #[test]
    fn garbage_and_oversized_headers_are_refused() {
        let mut b = FrameHeader::request(1, 0, 1, 1).encode();
        b[0] = b'G';
        b[1] = b'E';
        assert_eq!(
            FrameHeader::decode(&b, 10, 10),
            Err(FrameError::BadMagic(0x4547))
        );
        let mut b = FrameHeader::request(1, 0, 1, 1).encode();
        b[2] = 9;
        assert_eq!(FrameHeader::decode(&b, 10, 10), Err(FrameError::BadKind(9)));
        // A busy frame carries nothing.
        let busy = FrameHeader::busy().encode();
        assert_eq!(FrameHeader::decode(&busy, 10, 10), Ok(FrameHeader::busy()));
        let mut b = busy;
        b[8] = 1;
        assert_eq!(
            FrameHeader::decode(&b, 10, 10),
            Err(FrameError::BusyWithSections)
        );
        let mut b = FrameHeader::request(1, 0, 1, 1).encode();
        b[3] = 0x80;
        assert_eq!(
            FrameHeader::decode(&b, 10, 10),
            Err(FrameError::BadFlags(0x80))
        );
        let b = FrameHeader::request(1, 0, 11, 1).encode();
        assert_eq!(
            FrameHeader::decode(&b, 10, 10),
            Err(FrameError::CtrlTooLarge { len: 11, max: 10 })
        );
        let b = FrameHeader::request(1, 0, 1, u32::MAX).encode();
        assert!(matches!(
            FrameHeader::decode(&b, 10, 10),
            Err(FrameError::DataTooLarge { .. })
        ));
    }
}
