//! vfio-user message formats (server side).
//!
//! The `vfio_user` crate keeps its message structs private and its `Server` cannot be driven
//! one message at a time, so the server loop ([`crate::server`]) parses messages with the
//! types here. Every struct is encoded and decoded field by field in little-endian order, so
//! any byte pattern a client sends decodes to a value (never undefined behaviour) and every
//! length is checked before it is used.

use thiserror::Error;

/// Size of the header every message begins with.
pub const HEADER_LEN: usize = 16;
/// Largest message the server accepts (a region write carries at most this much data).
pub const MAX_MESSAGE: u32 = 1 << 20;
/// Largest region access in one message.
pub const MAX_DATA_XFER: u32 = 1 << 20;
/// Largest number of file descriptors in one message.
pub const MAX_MSG_FDS: u32 = 16;

/// vfio-user commands.
pub mod cmd {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    pub const DMA_READ: u16 = 11;
    pub const DMA_WRITE: u16 = 12;
    pub const DEVICE_RESET: u16 = 13;
    pub const DIRTY_PAGES: u16 = 14;
}

/// Header flag: message type mask.
pub const FLAG_TYPE_MASK: u32 = 0xf;
/// Header flag type: reply.
pub const FLAG_REPLY: u32 = 0x1;
/// Header flag: the sender wants no reply.
pub const FLAG_NO_REPLY: u32 = 0x10;
/// Header flag: the reply is an error (`error` holds an errno).
pub const FLAG_ERROR: u32 = 0x20;

/// `DMA_MAP` flags (from the vfio-user specification; QEMU's values).
pub const DMA_MAP_READ: u32 = 1 << 0;
pub const DMA_MAP_WRITE: u32 = 1 << 1;
/// `DMA_UNMAP` flags. The specification and QEMU use bit 0 for "get dirty bitmap" and
/// bit 1 for "unmap all"; `vfio_user` 0.1.7 names bits 1 and 2, which is wrong.
pub const DMA_UNMAP_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const DMA_UNMAP_ALL: u32 = 1 << 1;

/// `vfio_device_info.flags`.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

/// `vfio_region_info.flags`.
pub const REGION_FLAG_READ: u32 = 1 << 0;
pub const REGION_FLAG_WRITE: u32 = 1 << 1;
pub const REGION_FLAG_MMAP: u32 = 1 << 2;
pub const REGION_FLAG_CAPS: u32 = 1 << 3;
/// Region capability id: sparse mmap areas.
pub const REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;

/// `vfio_irq_info.flags`.
pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const IRQ_INFO_MASKABLE: u32 = 1 << 1;
pub const IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
pub const IRQ_INFO_NORESIZE: u32 = 1 << 3;

/// `vfio_irq_set.flags`.
pub const IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub const IRQ_SET_DATA_BOOL: u32 = 1 << 1;
pub const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const IRQ_SET_ACTION_MASK: u32 = 1 << 3;
pub const IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
pub const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// PCI region indexes (`VFIO_PCI_*_REGION_INDEX`).
pub const PCI_BAR0_REGION: u32 = 0;
pub const PCI_ROM_REGION: u32 = 6;
pub const PCI_CONFIG_REGION: u32 = 7;
pub const PCI_VGA_REGION: u32 = 8;
/// Number of regions a PCI device reports.
pub const PCI_NUM_REGIONS: u32 = 9;

/// PCI irq indexes (`VFIO_PCI_*_IRQ_INDEX`).
pub const PCI_INTX_IRQ: u32 = 0;
pub const PCI_MSI_IRQ: u32 = 1;
pub const PCI_MSIX_IRQ: u32 = 2;
pub const PCI_ERR_IRQ: u32 = 3;
pub const PCI_REQ_IRQ: u32 = 4;
/// Number of irq indexes a PCI device reports.
pub const PCI_NUM_IRQS: u32 = 5;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    #[error("message of {size} bytes is shorter than its {need}-byte body")]
    Short { size: u32, need: usize },
    #[error("message of {0} bytes is larger than the limit")]
    TooLarge(u32),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The header of every message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub message_id: u16,
    pub command: u16,
    /// Size of the whole message including this header.
    pub message_size: u32,
    pub flags: u32,
    pub error: u32,
}

impl Header {
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        Header {
            message_id: u16::from_le_bytes([b[0], b[1]]),
            command: u16::from_le_bytes([b[2], b[3]]),
            message_size: le32(b, 4),
            flags: le32(b, 8),
            error: le32(b, 12),
        }
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&self.message_id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.message_size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    pub fn no_reply(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }

    /// Body length (message size minus header), checked against the message limit.
    pub fn body_len(&self) -> Result<usize> {
        if self.message_size > MAX_MESSAGE {
            return Err(Error::TooLarge(self.message_size));
        }
        (self.message_size as usize)
            .checked_sub(HEADER_LEN)
            .ok_or(Error::Short {
                size: self.message_size,
                need: 0,
            })
    }

    /// A reply header for this request carrying `body_len` bytes after the header.
    pub fn reply(&self, body_len: usize) -> Header {
        Header {
            message_id: self.message_id,
            command: self.command,
            message_size: (HEADER_LEN + body_len) as u32,
            flags: FLAG_REPLY,
            error: 0,
        }
    }

    /// An error reply for this request.
    pub fn error_reply(&self, errno: i32) -> Header {
        Header {
            message_id: self.message_id,
            command: self.command,
            message_size: HEADER_LEN as u32,
            flags: FLAG_REPLY | FLAG_ERROR,
            error: errno as u32,
        }
    }
}

/// A little-endian reader over a message body that fails instead of panicking.
pub struct Body<'a> {
    bytes: &'a [u8],
    at: usize,
    size: u32,
}

impl<'a> Body<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Body {
            bytes,
            at: 0,
            size: (bytes.len() + HEADER_LEN) as u32,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or(Error::Short {
            size: self.size,
            need: usize::MAX,
        })?;
        let s = self.bytes.get(self.at..end).ok_or(Error::Short {
            size: self.size,
            need: end,
        })?;
        self.at = end;
        Ok(s)
    }

    pub fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(le32(self.take(4)?, 0))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let s = self.take(8)?;
        let mut x = [0u8; 8];
        x.copy_from_slice(s);
        Ok(u64::from_le_bytes(x))
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or(&[])
    }
}

/// Little-endian writer for reply bodies.
#[derive(Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// `VERSION` request body.
#[derive(Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    /// JSON capabilities, without the terminating NUL.
    pub capabilities: String,
}

impl Version {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut b = Body::new(body);
        let major = b.u16()?;
        let minor = b.u16()?;
        let rest = b.rest();
        // The capabilities are a NUL-terminated string; tolerate a missing NUL and stop at
        // the first one (vfio_user 0.1.7 unwraps here).
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        Ok(Version {
            major,
            minor,
            capabilities: String::from_utf8_lossy(&rest[..end]).into_owned(),
        })
    }
}

/// `DMA_MAP` request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub offset: u64,
    pub address: u64,
    pub size: u64,
}

impl DmaMap {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut b = Body::new(body);
        Ok(DmaMap {
            argsz: b.u32()?,
            flags: b.u32()?,
            offset: b.u64()?,
            address: b.u64()?,
            size: b.u64()?,
        })
    }
}

/// `DMA_UNMAP` request body (the dirty bitmap, if any, is not supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub address: u64,
    pub size: u64,
}

impl DmaUnmap {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut b = Body::new(body);
        Ok(DmaUnmap {
            argsz: b.u32()?,
            flags: b.u32()?,
            address: b.u64()?,
            size: b.u64()?,
        })
    }

    pub fn encode(&self, out: &mut Out) {
        out.u32(self.argsz)
            .u32(self.flags)
            .u64(self.address)
            .u64(self.size);
    }
}

/// `vfio_region_info` (32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

impl RegionInfo {
    pub const SIZE: usize = 32;

    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut b = Body::new(body);
        Ok(RegionInfo {
            argsz: b.u32()?,
            flags: b.u32()?,
            index: b.u32()?,
            cap_offset: b.u32()?,
            size: b.u64()?,
            offset: b.u64()?,
        })
    }

    pub fn encode(&self, out: &mut Out) {
        out.u32(self.argsz)
            .u32(self.flags)
            .u32(self.index)
            .u32(self.cap_offset)
            .u64(self.size)
            .u64(self.offset);
    }
}

/// `REGION_READ` / `REGION_WRITE` request body header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionAccess {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
}

impl RegionAccess {
    pub const SIZE: usize = 16;

    /// Parses the access; for a write, also returns the data that follows (exactly
    /// `count` bytes).
    pub fn parse(body: &[u8]) -> Result<(Self, &[u8])> {
        let mut b = Body::new(body);
        let a = RegionAccess {
            offset: b.u64()?,
            region: b.u32()?,
            count: b.u32()?,
        };
        Ok((a, b.rest()))
    }

    pub fn encode(&self, out: &mut Out) {
        out.u64(self.offset).u32(self.region).u32(self.count);
    }
}

/// `DEVICE_GET_IRQ_INFO` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

impl IrqInfo {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut b = Body::new(body);
        Ok(IrqInfo {
            argsz: b.u32()?,
            flags: b.u32()?,
            index: b.u32()?,
            count: b.u32()?,
        })
    }

    pub fn encode(&self, out: &mut Out) {
        out.u32(self.argsz)
            .u32(self.flags)
            .u32(self.index)
            .u32(self.count);
    }
}

/// `DEVICE_SET_IRQS` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqSet {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}

impl IrqSet {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut b = Body::new(body);
        Ok(IrqSet {
            argsz: b.u32()?,
            flags: b.u32()?,
            index: b.u32()?,
            start: b.u32()?,
            count: b.u32()?,
        })
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_short_sizes() {
        let h = Header {
            message_id: 7,
            command: cmd::REGION_WRITE,
            message_size: 40,
            flags: FLAG_NO_REPLY,
            error: 0,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        assert!(h.no_reply());
        assert_eq!(h.body_len(), Ok(24));
        let short = Header {
            message_size: 3,
            ..h
        };
        assert!(short.body_len().is_err());
        let huge = Header {
            message_size: u32::MAX,
            ..h
        };
        assert_eq!(huge.body_len(), Err(Error::TooLarge(u32::MAX)));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        assert!(DmaMap::parse(&[0; 31]).is_err());
        assert!(RegionAccess::parse(&[0; 15]).is_err());
        assert!(IrqSet::parse(&[]).is_err());
        assert!(Version::parse(&[1]).is_err());
    }

    #[test]
    fn version_tolerates_missing_nul_and_bad_utf8() {
        let mut body = vec![0, 0, 1, 0];
        body.extend_from_slice(b"{\"a\":1}");
        let v = Version::parse(&body).unwrap();
        assert_eq!(v.capabilities, "{\"a\":1}");
        let v = Version::parse(&[0, 0, 0, 0, 0xff, 0xfe, 0, 9]).unwrap();
        assert_eq!(v.minor, 0);
        assert_eq!(v.capabilities.chars().count(), 2);
    }

    #[test]
    fn unmap_all_is_bit_one_as_in_qemu() {
        assert_eq!(DMA_UNMAP_ALL, 2);
        assert_eq!(DMA_UNMAP_GET_DIRTY_BITMAP, 1);
    }
}
