//! Device ABI between the guest driver and `netgpu-vdev` (see `docs/device-abi.md`).
//!
//! This module is the single source of truth for everything a guest sees: PCI identity, the
//! BAR layout, the BAR0 register file, the fast doorbell page, the command descriptor and
//! completion formats, opcodes and the scatter-gather format. The guest kernel module's C
//! header and the guest `libcuda` are written against these constants; every layout has a
//! compile-time size/offset assertion so a change that would move a field fails to build.
//!
//! All multi-byte fields are little-endian. The structs are `#[repr(C)]` with explicit
//! padding, and convert to and from bytes with explicit little-endian encoding
//! (`to_bytes`/`from_bytes`), so any byte pattern decodes to a valid value and the code is
//! correct on any host.
//!
//! Versioning: [`ABI_VERSION_MAJOR`] changes only when an existing layout or meaning changes;
//! additions (new opcodes, registers in reserved space, feature bits) bump
//! [`ABI_VERSION_MINOR`] and are announced by a feature bit.

use core::mem::{offset_of, size_of};

pub mod codec;

// ---------------------------------------------------------------------------------------------
// PCI identity
// ---------------------------------------------------------------------------------------------

/// Default PCI vendor id. netgpu has no PCI-SIG assigned vendor id yet: this is a placeholder
/// that deployments may override (`vendor_id` in the vdev configuration); the guest driver
/// matches the ABI by the `MAGIC` register, not by the ids.
pub const DEFAULT_VENDOR_ID: u16 = 0x1e4e;
/// Default PCI device id.
pub const DEFAULT_DEVICE_ID: u16 = 0x6e67; // "ng"
/// Default subsystem vendor id.
pub const DEFAULT_SUBSYSTEM_VENDOR_ID: u16 = DEFAULT_VENDOR_ID;
/// Default subsystem id.
pub const DEFAULT_SUBSYSTEM_ID: u16 = 0x0001;
/// PCI class code: base class 0x03 (display), subclass 0x02 (3D controller), prog-if 0.
pub const PCI_CLASS_CODE: u32 = 0x03_02_00;
/// PCI revision id of this ABI's device.
pub const PCI_REVISION_ID: u8 = 0x01;

// ---------------------------------------------------------------------------------------------
// BARs
// ---------------------------------------------------------------------------------------------

/// BAR0 (64-bit, non-prefetchable memory): the register file. Every access traps to vdev.
pub const REGS_BAR: u32 = 0;
/// Size of BAR0.
pub const REGS_BAR_SIZE: u64 = 0x4000;
/// BAR2 (64-bit, prefetchable memory): the fast doorbell page, shared memory the guest writes
/// without trapping when [`FEATURE_FAST_DOORBELLS`] is negotiated. Reads have no side
/// effects and merged writes are harmless (a doorbell carries an index, the last value
/// wins), which is what "prefetchable" promises.
pub const DOORBELL_BAR: u32 = 2;
/// Size of BAR2 (one page).
pub const DOORBELL_BAR_SIZE: u64 = 0x1000;
/// BAR4 (64-bit, non-prefetchable memory): MSI-X table and pending bit array.
pub const MSIX_BAR: u32 = 4;
/// Size of BAR4.
pub const MSIX_BAR_SIZE: u64 = 0x2000;
/// Offset of the MSI-X table in [`MSIX_BAR`].
pub const MSIX_TABLE_OFFSET: u32 = 0x0000;
/// Offset of the MSI-X pending bit array in [`MSIX_BAR`].
pub const MSIX_PBA_OFFSET: u32 = 0x1000;

/// Number of queue pairs the device offers.
pub const MAX_QUEUES: u32 = 64;
/// MSI-X vectors: vector 0 is the device event vector by default, one more per queue.
pub const MSIX_VECTORS: u32 = MAX_QUEUES + 1;
/// "No vector" for [`queue::MSIX_VECTOR`] and [`reg::EVENT_VECTOR`].
pub const NO_VECTOR: u32 = 0xffff;

// ---------------------------------------------------------------------------------------------
// BAR0 register file
// ---------------------------------------------------------------------------------------------

/// `MAGIC` register value: the bytes "NGPU" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"NGPU");
/// ABI major version.
pub const ABI_VERSION_MAJOR: u16 = 1;
/// ABI minor version.
pub const ABI_VERSION_MINOR: u16 = 1;
/// `VERSION` register value.
pub const ABI_VERSION: u32 = ((ABI_VERSION_MAJOR as u32) << 16) | ABI_VERSION_MINOR as u32;

/// Offsets of the device-wide registers in BAR0. Registers are 32-bit unless noted; 64-bit
/// registers may be accessed as one 8-byte access or two 4-byte accesses (low half first for
/// writes; the write takes effect when the high half is written).
pub mod reg {
    /// RO u32: [`super::MAGIC`].
    pub const MAGIC: u64 = 0x000;
    /// RO u32: [`super::ABI_VERSION`].
    pub const VERSION: u64 = 0x004;
    /// RO u64: `FEATURE_*` bits the device offers.
    pub const DEVICE_FEATURES: u64 = 0x008;
    /// RW u64: `FEATURE_*` bits the driver uses (a subset of `DEVICE_FEATURES`; other bits
    /// are dropped on write).
    pub const DRIVER_FEATURES: u64 = 0x010;
    /// RO u32: `STATUS_*` bits.
    pub const STATUS: u64 = 0x018;
    /// RO u32: a `FATAL_*` reason code while `STATUS_FATAL` is set, else 0.
    pub const FATAL_REASON: u64 = 0x01c;
    /// WO u32: writing [`super::RESET_VALUE`] resets the device (other values are ignored).
    /// Reads return 0.
    pub const RESET: u64 = 0x020;
    /// RO u32, read-to-clear: INTx cause bits (bit `min(q, 30)`: queue q has new completions,
    /// see [`super::intr_queue_bit`]; bit 31 [`super::INTR_DEVICE_EVENT`]: device event). Only
    /// meaningful when MSI-X is disabled.
    pub const INTR_STATUS: u64 = 0x024;
    /// RO u32: number of queue pairs ([`super::MAX_QUEUES`]).
    pub const MAX_QUEUES: u64 = 0x028;
    /// RO u32: largest queue size in entries ([`super::MAX_QUEUE_SIZE`]).
    pub const MAX_QUEUE_SIZE: u64 = 0x02c;
    /// RO u32: largest number of scatter-gather entries in one command
    /// ([`super::MAX_SG_ENTRIES`]).
    pub const MAX_SG_ENTRIES: u64 = 0x030;
    /// RO u32: largest data transfer of one command in bytes ([`super::MAX_TRANSFER`]).
    pub const MAX_TRANSFER: u64 = 0x034;
    /// RW u32: MSI-X vector for device events (status changes), or [`super::NO_VECTOR`].
    pub const EVENT_VECTOR: u64 = 0x038;
    /// RO u64: remote GPU total memory in bytes (valid while `STATUS_READY`).
    pub const GPU_TOTAL_MEM: u64 = 0x040;
    /// RO u32: remote GPU compute capability, `major << 16 | minor`.
    pub const GPU_COMPUTE_CAPABILITY: u64 = 0x048;
    /// RO u32: remote GPU multiprocessor count.
    pub const GPU_SM_COUNT: u64 = 0x04c;
    /// RO u32: remote CUDA driver version (e.g. 12080), 0 for the CPU executor.
    pub const GPU_DRIVER_VERSION: u64 = 0x050;
    /// RO u32: executor kind, `EXECUTOR_*`.
    pub const GPU_EXECUTOR: u64 = 0x054;
    /// RO u64: memory quota of this device in bytes (0: no quota).
    pub const MEMORY_QUOTA: u64 = 0x058;
    /// RO 16 bytes: remote GPU UUID.
    pub const GPU_UUID: u64 = 0x060;
    /// RO 64 bytes: remote GPU name, UTF-8, NUL-padded.
    pub const GPU_NAME: u64 = 0x080;
    /// Length of [`GPU_NAME`].
    pub const GPU_NAME_LEN: u64 = 64;
    /// First byte after the device-wide registers (reserved up to [`QUEUE_REGS_BASE`]).
    pub const END: u64 = 0x0c0;

    /// Base of the per-queue register blocks (see [`super::queue`]).
    pub const QUEUE_REGS_BASE: u64 = 0x1000;
    /// Stride between per-queue register blocks.
    pub const QUEUE_REGS_STRIDE: u64 = 0x40;
    /// Base of the trapped doorbells: queue `q`'s submission tail doorbell is the u32 at
    /// `DOORBELL_BASE + q * DOORBELL_STRIDE`. It is also the wake-up register of the fast
    /// doorbell scheme.
    pub const DOORBELL_BASE: u64 = 0x2000;
    /// Stride between trapped doorbells.
    pub const DOORBELL_STRIDE: u64 = 8;
}

/// Offsets inside one per-queue register block (at
/// `reg::QUEUE_REGS_BASE + q * reg::QUEUE_REGS_STRIDE`). Configuration registers may only be
/// written while the queue is disabled; writes while it is enabled are ignored.
pub mod queue {
    /// RW u64: guest-physical address of the submission ring (4 KiB aligned).
    pub const SQ_BASE: u64 = 0x00;
    /// RW u64: guest-physical address of the completion ring (4 KiB aligned).
    pub const CQ_BASE: u64 = 0x08;
    /// RW u32: number of entries of both rings, a power of two in
    /// [`super::MIN_QUEUE_SIZE`]..=[`super::MAX_QUEUE_SIZE`].
    pub const SIZE: u64 = 0x10;
    /// RW u32: MSI-X vector of this queue's completions, or [`super::NO_VECTOR`].
    pub const MSIX_VECTOR: u64 = 0x14;
    /// RW u32: write 1 to enable (the device validates the configuration and sets
    /// `QSTATUS_ENABLED` or `QSTATUS_ERROR`), 0 to disable (the device stops, then destroys
    /// every remote object created through this queue).
    pub const ENABLE: u64 = 0x18;
    /// RO u32: `QSTATUS_*` bits.
    pub const STATUS: u64 = 0x1c;
    /// RO u32: a `QERR_*` code while `QSTATUS_ERROR` is set.
    pub const ERROR: u64 = 0x20;
    /// RW u32: interrupt coalescing time in microseconds (0: interrupt at once).
    pub const COALESCE_USECS: u64 = 0x24;
    /// RW u32: interrupt coalescing count: interrupt when this many completions are pending
    /// (0 or 1: every completion).
    pub const COALESCE_COUNT: u64 = 0x28;
    /// RO u32: submission ring head (index of the next descriptor the device will read).
    pub const SQ_HEAD: u64 = 0x2c;
    /// RO u32: completion ring tail (index of the next completion the device will write).
    pub const CQ_TAIL: u64 = 0x30;
}

/// Queue register block field: enabled.
pub const QSTATUS_ENABLED: u32 = 1 << 0;
/// Queue register block field: the queue stopped on an error (see `queue::ERROR`).
pub const QSTATUS_ERROR: u32 = 1 << 1;

/// Queue error: a ring address is not 4 KiB aligned.
pub const QERR_RING_MISALIGNED: u32 = 1;
/// Queue error: the queue size is not a power of two in range.
pub const QERR_BAD_SIZE: u32 = 2;
/// Queue error: a ring is not (wholly) inside guest memory mapped for DMA.
pub const QERR_RING_UNMAPPED: u32 = 3;
/// Queue error: the MSI-X vector is out of range.
pub const QERR_BAD_VECTOR: u32 = 4;
/// Queue error: a doorbell wrote a tail index >= the queue size.
pub const QERR_BAD_DOORBELL: u32 = 5;
/// Queue error: the device could not read a descriptor or write a completion (the guest
/// unmapped ring memory while the queue ran).
pub const QERR_RING_FAULT: u32 = 6;
/// Queue error: the backend session ended; the queue's remote objects are gone.
pub const QERR_BACKEND_LOST: u32 = 7;
/// Queue error: the queue was enabled while the device was still stopping its previous use
/// (a command of the previous owner has not let go yet); STATUS reads ERROR, never ENABLED
/// for the new owner. Disable it and try again later, or use another queue.
pub const QERR_BUSY: u32 = 8;

/// `INTR_STATUS` bit of a device event (status change).
pub const INTR_DEVICE_EVENT: u32 = 1 << 31;
/// The highest queue bit of `INTR_STATUS`: queue `q` sets bit `min(q, INTR_LAST_QUEUE_BIT)`,
/// so queues 30 and up share bit 30 (a driver that sees it checks all of them).
pub const INTR_LAST_QUEUE_BIT: u32 = 30;

/// The `INTR_STATUS` bit of queue `q` (never overflows, whatever `q`).
pub const fn intr_queue_bit(q: u32) -> u32 {
    let bit = if q < INTR_LAST_QUEUE_BIT {
        q
    } else {
        INTR_LAST_QUEUE_BIT
    };
    1 << bit
}

/// `STATUS`: the backend session is up; queues may be enabled and GPU info is valid.
pub const STATUS_READY: u32 = 1 << 0;
/// `STATUS`: the device cannot reach or use its backend (see `FATAL_REASON`); it keeps
/// probing and reads READY once the backend answers (a device event), or a reset starts over.
pub const STATUS_FATAL: u32 = 1 << 1;
/// `STATUS`: a reset is in progress.
pub const STATUS_RESETTING: u32 = 1 << 2;
/// `STATUS`: the device is connecting to the backend.
pub const STATUS_CONNECTING: u32 = 1 << 3;

/// Fatal reason: the backend could not be reached.
pub const FATAL_BACKEND_UNREACHABLE: u32 = 1;
/// Fatal reason: the backend refused the credentials (the token, or TLS: its certificate or ours).
pub const FATAL_BACKEND_AUTH: u32 = 2;
/// Fatal reason: the backend session ended while in use.
pub const FATAL_BACKEND_LOST: u32 = 3;
/// Fatal reason: the backend speaks an incompatible protocol.
pub const FATAL_BACKEND_PROTOCOL: u32 = 4;
/// Fatal reason: internal device error.
pub const FATAL_INTERNAL: u32 = 5;

/// Value to write to `RESET`.
pub const RESET_VALUE: u32 = 1;

/// Executor kind: unknown / not connected.
pub const EXECUTOR_NONE: u32 = 0;
/// Executor kind: a real CUDA GPU.
pub const EXECUTOR_CUDA: u32 = 1;
/// Executor kind: the CPU PTX interpreter.
pub const EXECUTOR_CPU: u32 = 2;

/// Feature: the fast doorbell page in [`DOORBELL_BAR`] (see [`fastdb`]).
pub const FEATURE_FAST_DOORBELLS: u64 = 1 << 0;
/// Feature: indirect scatter-gather tables ([`CMD_FLAG_SG_INDIRECT`]).
pub const FEATURE_SG_INDIRECT: u64 = 1 << 1;
/// Feature: chained indirect tables ([`SG_FLAG_CHAIN`]).
pub const FEATURE_SG_CHAIN: u64 = 1 << 2;
/// Feature: per-queue interrupt coalescing registers.
pub const FEATURE_INTR_COALESCING: u64 = 1 << 3;
/// Feature: [`CMD_FLAG_ASYNC`] for stream-ordered commands.
pub const FEATURE_ASYNC: u64 = 1 << 4;
/// Feature (ABI 1.1): the [`op::WIRE_REQUEST`] opcode, which carries any wire-protocol
/// request (see `netgpu_proto::abi::codec`).
pub const FEATURE_WIRE_REQUEST: u64 = 1 << 5;
/// Feature (ABI 1.1): completions may be posted out of submission order (each carries its
/// command's `cid`). Without it the device posts them in submission order, holding back a
/// command that finished early until every earlier one has completed.
pub const FEATURE_OUT_OF_ORDER: u64 = 1 << 6;
/// Every feature this ABI version defines.
pub const FEATURES_ALL: u64 = FEATURE_FAST_DOORBELLS
    | FEATURE_SG_INDIRECT
    | FEATURE_SG_CHAIN
    | FEATURE_INTR_COALESCING
    | FEATURE_ASYNC
    | FEATURE_WIRE_REQUEST
    | FEATURE_OUT_OF_ORDER;

// ---------------------------------------------------------------------------------------------
// Fast doorbell page (BAR2)
// ---------------------------------------------------------------------------------------------

/// Layout of the fast doorbell page: queue `q` owns the 16 bytes at `q * fastdb::STRIDE`.
///
/// Protocol (an "event index" scheme like NVMe shadow doorbells, as SPDK offers them over
/// vfio-user): the driver writes the new submission tail to `SQ_TAIL`, issues a full memory
/// barrier, then reads `POLLING`. If `POLLING` is 0 the device is not watching the page and
/// the driver also writes the tail to the queue's trapped doorbell in BAR0 (the wake-up).
/// The device sets `POLLING` to 1 while it polls, and before it stops polling writes 0,
/// issues a full barrier and reads `SQ_TAIL` once more, so no submission is missed.
pub mod fastdb {
    /// Stride between queues.
    pub const STRIDE: u64 = 16;
    /// u32 written by the driver: submission ring tail.
    pub const SQ_TAIL: u64 = 0;
    /// u32 written by the device: 1 while it polls this queue's `SQ_TAIL`, 0 otherwise.
    pub const POLLING: u64 = 8;
}

// ---------------------------------------------------------------------------------------------
// Rings
// ---------------------------------------------------------------------------------------------

/// Smallest queue size.
pub const MIN_QUEUE_SIZE: u32 = 2;
/// Largest queue size.
pub const MAX_QUEUE_SIZE: u32 = 4096;
/// Required alignment of ring base addresses.
pub const RING_ALIGN: u64 = 4096;
/// Largest number of scatter-gather entries of one command (all segments together).
pub const MAX_SG_ENTRIES: u32 = 4096;
/// Largest number of chained indirect table segments of one command.
pub const MAX_SG_SEGMENTS: u32 = 16;
/// Largest total length of one command's data (all scatter-gather entries).
pub const MAX_TRANSFER: u32 = 256 << 20;
/// Largest length of a symbol name (`MODULE_GET_FUNCTION`, `MODULE_GET_GLOBAL`).
pub const MAX_NAME_LEN: u32 = 1024;
/// Largest kernel parameter buffer.
pub const MAX_PARAM_BUFFER: u32 = 32 * 1024;
/// Number of scatter-gather entries that fit in a descriptor.
pub const INLINE_SG_ENTRIES: usize = 3;

/// One scatter-gather entry: a guest-physical address range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SgEntry {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes (0 is allowed and transfers nothing).
    pub len: u32,
    /// `SG_FLAG_*`.
    pub flags: u32,
}

/// `SgEntry.flags`: this entry of an indirect table is not data but points to the next table
/// segment (`len` bytes, a multiple of 16) and must be the segment's last entry.
pub const SG_FLAG_CHAIN: u32 = 1 << 0;
/// `SgEntry.flags`: the device may write the entry's memory. The guest driver sets it only for
/// pages it pinned writable; the device never writes an entry without it (a command whose
/// reply would land in such an entry fails with `CUDA_ERROR_INVALID_VALUE`). Data entries
/// only; never set on a chain entry.
///
/// It also marks where a command's output begins: a command's entries are those of its
/// input buffers (without the flag) followed by those of its output buffers (each with the
/// flag), so the device never splits input from output at an offset a guest program chose.
/// An opcode with only output takes every entry as output (each must carry the flag); one
/// with only input reads every entry and writes none.
pub const SG_FLAG_DEVICE_WRITE: u32 = 1 << 1;

impl SgEntry {
    /// Encoded size.
    pub const SIZE: usize = 16;

    pub fn new(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            flags: 0,
        }
    }

    /// An entry the device may write ([`SG_FLAG_DEVICE_WRITE`]): output.
    pub fn device_write(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            flags: SG_FLAG_DEVICE_WRITE,
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            addr: le64(b, 0),
            len: le32(b, 8),
            flags: le32(b, 12),
        }
    }
}

/// Command descriptor flag: `sg[0]` points to an indirect table of `sg_count` entries
/// (`sg[0].len` bytes) instead of holding the data entries inline.
pub const CMD_FLAG_SG_INDIRECT: u16 = 1 << 0;
/// Command descriptor flag: stream-ordered command (copy, memset, launch, event record); the
/// device may post the completion as soon as the command is queued on the backend, and a
/// failure is reported by the next synchronising command of the same context.
pub const CMD_FLAG_ASYNC: u16 = 1 << 1;
/// Every command flag this ABI version defines; other bits must be 0.
pub const CMD_FLAGS_ALL: u16 = CMD_FLAG_SG_INDIRECT | CMD_FLAG_ASYNC;

/// A submission ring entry (128 bytes).
///
/// `args` meaning depends on `opcode` (see [`op`]). The data of a command is the
/// concatenation of its scatter-gather entries: `sg_count` entries inline in `sg`
/// (at most [`INLINE_SG_ENTRIES`]) or, with [`CMD_FLAG_SG_INDIRECT`], in an indirect table.
/// For commands with both input and output data, the input entries come first and the output
/// entries carry [`SG_FLAG_DEVICE_WRITE`] (see there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// `op::*`.
    pub opcode: u16,
    /// `CMD_FLAG_*`.
    pub flags: u16,
    /// Driver-chosen id, echoed in the completion.
    pub cid: u32,
    /// Opcode-specific arguments.
    pub args: [u64; 8],
    /// Number of scatter-gather data entries.
    pub sg_count: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Inline scatter-gather entries, or the indirect table pointer in `sg[0]`.
    pub sg: [SgEntry; INLINE_SG_ENTRIES],
}

impl Command {
    /// Encoded size.
    pub const SIZE: usize = 128;

    pub fn new(opcode: u16, cid: u32, args: &[u64]) -> Self {
        let mut c = Command {
            opcode,
            cid,
            ..Default::default()
        };
        for (dst, src) in c.args.iter_mut().zip(args) {
            *dst = *src;
        }
        c
    }

    /// Sets inline scatter-gather entries (at most [`INLINE_SG_ENTRIES`]; extra ones are
    /// dropped and `sg_count` counts only those kept).
    pub fn with_sg(mut self, sg: &[SgEntry]) -> Self {
        let n = sg.len().min(INLINE_SG_ENTRIES);
        self.sg[..n].copy_from_slice(&sg[..n]);
        self.sg_count = n as u32;
        self.flags &= !CMD_FLAG_SG_INDIRECT;
        self
    }

    /// Points the command at an indirect table of `count` entries at `table` (guest-physical).
    pub fn with_indirect_sg(mut self, table: u64, count: u32) -> Self {
        self.sg = [SgEntry::default(); INLINE_SG_ENTRIES];
        self.sg[0] = SgEntry::new(table, count.saturating_mul(SgEntry::SIZE as u32));
        self.sg_count = count;
        self.flags |= CMD_FLAG_SG_INDIRECT;
        self
    }

    pub fn with_flags(mut self, flags: u16) -> Self {
        self.flags |= flags;
        self
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..2].copy_from_slice(&self.opcode.to_le_bytes());
        b[2..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..8].copy_from_slice(&self.cid.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&a.to_le_bytes());
        }
        b[72..76].copy_from_slice(&self.sg_count.to_le_bytes());
        b[76..80].copy_from_slice(&self.reserved.to_le_bytes());
        for (i, e) in self.sg.iter().enumerate() {
            b[80 + i * 16..96 + i * 16].copy_from_slice(&e.to_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut args = [0u64; 8];
        for (i, a) in args.iter_mut().enumerate() {
            *a = le64(b, 8 + i * 8);
        }
        let mut sg = [SgEntry::default(); INLINE_SG_ENTRIES];
        for (i, e) in sg.iter_mut().enumerate() {
            let mut eb = [0u8; SgEntry::SIZE];
            eb.copy_from_slice(&b[80 + i * 16..96 + i * 16]);
            *e = SgEntry::from_bytes(&eb);
        }
        Command {
            opcode: le16(b, 0),
            flags: le16(b, 2),
            cid: le32(b, 4),
            args,
            sg_count: le32(b, 72),
            reserved: le32(b, 76),
            sg,
        }
    }
}

/// A completion ring entry (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// `cid` of the command.
    pub cid: u32,
    /// CUDA driver API result code (`CUresult`, see [`crate::cuda::CuResult`]).
    pub result: u32,
    /// First result value (a handle, a device pointer, a size...; see the opcode).
    pub value0: u64,
    /// Second result value.
    pub value1: u64,
    /// Submission ring head after the device consumed this command.
    pub sq_head: u16,
    /// `CQE_FLAG_*`; bit 0 is the phase tag.
    pub flags: u16,
    /// Reserved, 0.
    pub reserved: u32,
}

/// `Completion.flags`: phase tag. The device writes 1 during its first pass over the
/// completion ring, 0 during the second, and so on; the driver zeroes the ring before
/// enabling the queue and knows an entry is new when its phase matches the expected one.
pub const CQE_FLAG_PHASE: u16 = 1 << 0;
/// `Completion.flags` (ABI 1.1): the backend holds kernel console output (device-side
/// `printf`) of this queue's session that nobody has read yet; the driver takes it with a
/// `ConsoleRead` request ([`op::WIRE_REQUEST`]).
pub const CQE_FLAG_CONSOLE_PENDING: u16 = 1 << 1;

impl Completion {
    /// Encoded size.
    pub const SIZE: usize = 32;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.cid.to_le_bytes());
        b[4..8].copy_from_slice(&self.result.to_le_bytes());
        b[8..16].copy_from_slice(&self.value0.to_le_bytes());
        b[16..24].copy_from_slice(&self.value1.to_le_bytes());
        b[24..26].copy_from_slice(&self.sq_head.to_le_bytes());
        b[26..28].copy_from_slice(&self.flags.to_le_bytes());
        b[28..32].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Completion {
            cid: le32(b, 0),
            result: le32(b, 4),
            value0: le64(b, 8),
            value1: le64(b, 16),
            sq_head: le16(b, 24),
            flags: le16(b, 26),
            reserved: le32(b, 28),
        }
    }

    pub fn phase(&self) -> bool {
        self.flags & CQE_FLAG_PHASE != 0
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes
// ---------------------------------------------------------------------------------------------

/// Opcodes and their arguments. "→ v0, v1" names the completion values; "data in" /
/// "data out" name what the scatter-gather list holds. Handles and device pointers are the
/// backend's u64 values; 0 is never a valid handle (as a stream it is the null stream).
pub mod op {
    /// Does nothing; completes with SUCCESS. Measures the device round trip.
    pub const NOP: u16 = 0x00;
    /// Device query. Data out: a [`super::DeviceInfoRecord`] (the list must hold at least
    /// `DeviceInfoRecord::SIZE` bytes). → v0 = bytes written.
    pub const DEVICE_QUERY: u16 = 0x01;
    /// Memory info of this device's session. → v0 = free bytes, v1 = total bytes.
    pub const MEM_GET_INFO: u16 = 0x02;

    /// args[0] = flags. → v0 = context handle.
    pub const CTX_CREATE: u16 = 0x10;
    /// args[0] = context.
    pub const CTX_DESTROY: u16 = 0x11;
    /// args[0] = context. Synchronising.
    pub const CTX_SYNCHRONIZE: u16 = 0x12;

    /// args[0] = context, args[1] = size. → v0 = device pointer.
    pub const MEM_ALLOC: u16 = 0x20;
    /// args[0] = device pointer.
    pub const MEM_FREE: u16 = 0x21;
    /// args[0] = context, args[1] = destination device pointer, args[2] = stream.
    /// Data in: the bytes to copy (length = total scatter-gather length). May be ASYNC.
    pub const MEMCPY_HTOD: u16 = 0x22;
    /// args[0] = context, args[1] = source device pointer, args[2] = stream.
    /// Data out: the bytes copied (length = total scatter-gather length). Completes only
    /// once the bytes are in guest memory. Synchronising.
    pub const MEMCPY_DTOH: u16 = 0x23;
    /// args[0] = context, args[1] = destination, args[2] = source, args[3] = length,
    /// args[4] = stream. May be ASYNC.
    pub const MEMCPY_DTOD: u16 = 0x24;
    /// args[0] = context, args[1] = destination, args[2] = value (low bits used),
    /// args[3] = element size (1, 2 or 4), args[4] = element count, args[5] = stream.
    /// May be ASYNC.
    pub const MEMSET: u16 = 0x25;

    /// args[0] = context. Data in: the PTX image (text, optionally NUL-terminated).
    /// → v0 = module handle.
    pub const MODULE_LOAD: u16 = 0x30;
    /// args[0] = module.
    pub const MODULE_UNLOAD: u16 = 0x31;
    /// args[0] = module, args[1] = name length (n). Data in: the first n bytes are the
    /// function name (no NUL). Data out: the bytes after the name receive the parameter
    /// table, one [`super::ParamRecord`] per parameter, as many as fit.
    /// → v0 = function handle, v1 = `param_count << 32 | param_buffer_size`.
    pub const MODULE_GET_FUNCTION: u16 = 0x32;
    /// args[0] = module, args[1] = name length. Data in: the name.
    /// → v0 = device pointer, v1 = size.
    pub const MODULE_GET_GLOBAL: u16 = 0x33;

    /// args[0] = function, args[1] = grid x | grid y << 32, args[2] = grid z | block x << 32,
    /// args[3] = block y | block z << 32, args[4] = shared memory bytes, args[5] = stream.
    /// Data in: the packed parameter buffer (layout of `CU_LAUNCH_PARAM_BUFFER_POINTER`).
    /// May be ASYNC.
    pub const LAUNCH_KERNEL: u16 = 0x40;

    /// args[0] = context, args[1] = flags. → v0 = stream handle.
    pub const STREAM_CREATE: u16 = 0x50;
    /// args[0] = stream.
    pub const STREAM_DESTROY: u16 = 0x51;
    /// args[0] = stream. Synchronising.
    pub const STREAM_SYNCHRONIZE: u16 = 0x52;
    /// args[0] = stream. Result SUCCESS when idle, NOT_READY otherwise. Synchronising.
    pub const STREAM_QUERY: u16 = 0x53;

    /// args[0] = context, args[1] = flags. → v0 = event handle.
    pub const EVENT_CREATE: u16 = 0x60;
    /// args[0] = event, args[1] = stream. May be ASYNC.
    pub const EVENT_RECORD: u16 = 0x61;
    /// args[0] = event. Synchronising.
    pub const EVENT_SYNCHRONIZE: u16 = 0x62;
    /// args[0] = event. Result SUCCESS or NOT_READY. Synchronising.
    pub const EVENT_QUERY: u16 = 0x63;
    /// args[0] = start event, args[1] = end event. → v0 = milliseconds as f32 bits.
    pub const EVENT_ELAPSED_TIME: u16 = 0x64;
    /// args[0] = event.
    pub const EVENT_DESTROY: u16 = 0x65;

    /// Any wire-protocol request (ABI 1.1, [`super::FEATURE_WIRE_REQUEST`]); the layout is
    /// defined by `netgpu_proto::abi::codec`. args[0] = length c of the request's control
    /// section, other args 0. Data in: c bytes of control section (the postcard-encoded
    /// `wire::ops::Request`, ending on a scatter-gather entry boundary), then the request's
    /// data section. Data out: the reply's control section, then its data section, packed.
    /// → v0 = reply control length, v1 = reply data length (both written only on success).
    pub const WIRE_REQUEST: u16 = 0x70;

    /// Every opcode of this ABI version, for validation and tests.
    pub const ALL: &[u16] = &[
        NOP,
        DEVICE_QUERY,
        MEM_GET_INFO,
        CTX_CREATE,
        CTX_DESTROY,
        CTX_SYNCHRONIZE,
        MEM_ALLOC,
        MEM_FREE,
        MEMCPY_HTOD,
        MEMCPY_DTOH,
        MEMCPY_DTOD,
        MEMSET,
        MODULE_LOAD,
        MODULE_UNLOAD,
        MODULE_GET_FUNCTION,
        MODULE_GET_GLOBAL,
        LAUNCH_KERNEL,
        STREAM_CREATE,
        STREAM_DESTROY,
        STREAM_SYNCHRONIZE,
        STREAM_QUERY,
        EVENT_CREATE,
        EVENT_RECORD,
        EVENT_SYNCHRONIZE,
        EVENT_QUERY,
        EVENT_ELAPSED_TIME,
        EVENT_DESTROY,
        WIRE_REQUEST,
    ];

    /// Name of an opcode, for logs.
    pub fn name(opcode: u16) -> &'static str {
        match opcode {
            NOP => "NOP",
            DEVICE_QUERY => "DEVICE_QUERY",
            MEM_GET_INFO => "MEM_GET_INFO",
            CTX_CREATE => "CTX_CREATE",
            CTX_DESTROY => "CTX_DESTROY",
            CTX_SYNCHRONIZE => "CTX_SYNCHRONIZE",
            MEM_ALLOC => "MEM_ALLOC",
            MEM_FREE => "MEM_FREE",
            MEMCPY_HTOD => "MEMCPY_HTOD",
            MEMCPY_DTOH => "MEMCPY_DTOH",
            MEMCPY_DTOD => "MEMCPY_DTOD",
            MEMSET => "MEMSET",
            MODULE_LOAD => "MODULE_LOAD",
            MODULE_UNLOAD => "MODULE_UNLOAD",
            MODULE_GET_FUNCTION => "MODULE_GET_FUNCTION",
            MODULE_GET_GLOBAL => "MODULE_GET_GLOBAL",
            LAUNCH_KERNEL => "LAUNCH_KERNEL",
            STREAM_CREATE => "STREAM_CREATE",
            STREAM_DESTROY => "STREAM_DESTROY",
            STREAM_SYNCHRONIZE => "STREAM_SYNCHRONIZE",
            STREAM_QUERY => "STREAM_QUERY",
            EVENT_CREATE => "EVENT_CREATE",
            EVENT_RECORD => "EVENT_RECORD",
            EVENT_SYNCHRONIZE => "EVENT_SYNCHRONIZE",
            EVENT_QUERY => "EVENT_QUERY",
            EVENT_ELAPSED_TIME => "EVENT_ELAPSED_TIME",
            EVENT_DESTROY => "EVENT_DESTROY",
            WIRE_REQUEST => "WIRE_REQUEST",
            _ => "UNKNOWN",
        }
    }
}

/// One kernel parameter in the `MODULE_GET_FUNCTION` output table (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamRecord {
    /// Offset in the packed parameter buffer.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl ParamRecord {
    pub const SIZE: usize = 8;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.offset.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            offset: le32(b, 0),
            size: le32(b, 4),
        }
    }
}

/// Largest number of attributes in a [`DeviceInfoRecord`].
pub const DEVICE_INFO_MAX_ATTRS: usize = 96;

/// `DEVICE_QUERY` output (1024 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfoRecord {
    /// UTF-8 name, NUL-padded.
    pub name: [u8; 128],
    pub total_mem: u64,
    pub cc_major: u32,
    pub cc_minor: u32,
    pub multiprocessors: u32,
    pub driver_version: u32,
    pub uuid: [u8; 16],
    /// `EXECUTOR_*`.
    pub executor: u32,
    /// Number of valid entries in `attrs`.
    pub attr_count: u32,
    /// Reserved, 0.
    pub reserved: [u8; 80],
    /// `(CUdevice_attribute, value)` pairs (value as i32 bits).
    pub attrs: [[u32; 2]; DEVICE_INFO_MAX_ATTRS],
}

impl Default for DeviceInfoRecord {
    fn default() -> Self {
        Self {
            name: [0; 128],
            total_mem: 0,
            cc_major: 0,
            cc_minor: 0,
            multiprocessors: 0,
            driver_version: 0,
            uuid: [0; 16],
            executor: 0,
            attr_count: 0,
            reserved: [0; 80],
            attrs: [[0; 2]; DEVICE_INFO_MAX_ATTRS],
        }
    }
}

impl DeviceInfoRecord {
    pub const SIZE: usize = 1024;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..128].copy_from_slice(&self.name);
        b[128..136].copy_from_slice(&self.total_mem.to_le_bytes());
        b[136..140].copy_from_slice(&self.cc_major.to_le_bytes());
        b[140..144].copy_from_slice(&self.cc_minor.to_le_bytes());
        b[144..148].copy_from_slice(&self.multiprocessors.to_le_bytes());
        b[148..152].copy_from_slice(&self.driver_version.to_le_bytes());
        b[152..168].copy_from_slice(&self.uuid);
        b[168..172].copy_from_slice(&self.executor.to_le_bytes());
        b[172..176].copy_from_slice(&self.attr_count.to_le_bytes());
        b[176..256].copy_from_slice(&self.reserved);
        for (i, [a, v]) in self.attrs.iter().enumerate() {
            b[256 + i * 8..260 + i * 8].copy_from_slice(&a.to_le_bytes());
            b[260 + i * 8..264 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Self::default();
        r.name.copy_from_slice(&b[0..128]);
        r.total_mem = le64(b, 128);
        r.cc_major = le32(b, 136);
        r.cc_minor = le32(b, 140);
        r.multiprocessors = le32(b, 144);
        r.driver_version = le32(b, 148);
        r.uuid.copy_from_slice(&b[152..168]);
        r.executor = le32(b, 168);
        r.attr_count = le32(b, 172);
        r.reserved.copy_from_slice(&b[176..256]);
        for (i, pair) in r.attrs.iter_mut().enumerate() {
            *pair = [le32(b, 256 + i * 8), le32(b, 260 + i * 8)];
        }
        r
    }

    /// The name up to its first NUL, if it is UTF-8.
    pub fn name_str(&self) -> &str {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(128);
        core::str::from_utf8(&self.name[..end]).unwrap_or("")
    }
}

/// Packs a launch's grid and block dimensions into `args[1..4]` of `LAUNCH_KERNEL`.
pub fn pack_launch_dims(grid: [u32; 3], block: [u32; 3]) -> [u64; 3] {
    [
        u64::from(grid[0]) | u64::from(grid[1]) << 32,
        u64::from(grid[2]) | u64::from(block[0]) << 32,
        u64::from(block[1]) | u64::from(block[2]) << 32,
    ]
}

/// Inverse of [`pack_launch_dims`].
pub fn unpack_launch_dims(a: [u64; 3]) -> ([u32; 3], [u32; 3]) {
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    (
        [lo(a[0]), hi(a[0]), lo(a[1])],
        [hi(a[1]), lo(a[2]), hi(a[2])],
    )
}

fn le16(b: &[u8], at: usize) -> u16 {
    let mut x = [0u8; 2];
    x.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(x)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

// Compile-time layout checks: the in-memory #[repr(C)] layout matches the documented wire
// layout, so a C header with the same fields agrees with these types.
const _: () = {
    assert!(size_of::<SgEntry>() == SgEntry::SIZE);
    assert!(offset_of!(SgEntry, len) == 8);
    assert!(offset_of!(SgEntry, flags) == 12);
    assert!(size_of::<Command>() == Command::SIZE);
    assert!(offset_of!(Command, flags) == 2);
    assert!(offset_of!(Command, cid) == 4);
    assert!(offset_of!(Command, args) == 8);
    assert!(offset_of!(Command, sg_count) == 72);
    assert!(offset_of!(Command, sg) == 80);
    assert!(size_of::<Completion>() == Completion::SIZE);
    assert!(offset_of!(Completion, value0) == 8);
    assert!(offset_of!(Completion, value1) == 16);
    assert!(offset_of!(Completion, sq_head) == 24);
    assert!(offset_of!(Completion, flags) == 26);
    assert!(size_of::<ParamRecord>() == ParamRecord::SIZE);
    assert!(size_of::<DeviceInfoRecord>() == DeviceInfoRecord::SIZE);
    assert!(offset_of!(DeviceInfoRecord, total_mem) == 128);
    assert!(offset_of!(DeviceInfoRecord, uuid) == 152);
    assert!(offset_of!(DeviceInfoRecord, attr_count) == 172);
    assert!(offset_of!(DeviceInfoRecord, attrs) == 256);
    // Register map fits its BAR and queue blocks and doorbells do not overlap.
    assert!(reg::END <= reg::QUEUE_REGS_BASE);
    assert!(
        reg::QUEUE_REGS_BASE + MAX_QUEUES as u64 * reg::QUEUE_REGS_STRIDE <= reg::DOORBELL_BASE
    );
    assert!(reg::DOORBELL_BASE + MAX_QUEUES as u64 * reg::DOORBELL_STRIDE <= REGS_BAR_SIZE);
    assert!(queue::CQ_TAIL + 4 <= reg::QUEUE_REGS_STRIDE);
    assert!(MAX_QUEUES as u64 * fastdb::STRIDE <= DOORBELL_BAR_SIZE);
    assert!(MSIX_TABLE_OFFSET as u64 + MSIX_VECTORS as u64 * 16 <= MSIX_PBA_OFFSET as u64);
    assert!(MSIX_PBA_OFFSET as u64 + (MSIX_VECTORS as u64).div_ceil(64) * 8 <= MSIX_BAR_SIZE);
    assert!(MAX_QUEUE_SIZE.is_power_of_two());
    assert!(MAGIC == 0x5550_474e);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_bytes_round_trip_and_follow_the_documented_layout() {
        let c = Command::new(op::MEMCPY_HTOD, 0xdead_beef, &[1, 0x1000, 7])
            .with_sg(&[SgEntry::new(0x2000, 64), SgEntry::new(0x9000, 8)])
            .with_flags(CMD_FLAG_ASYNC);
        let b = c.to_bytes();
        assert_eq!(&b[0..2], &op::MEMCPY_HTOD.to_le_bytes());
        assert_eq!(&b[2..4], &CMD_FLAG_ASYNC.to_le_bytes());
        assert_eq!(&b[4..8], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&b[16..24], &0x1000u64.to_le_bytes());
        assert_eq!(&b[72..76], &2u32.to_le_bytes());
        assert_eq!(&b[96..104], &0x9000u64.to_le_bytes());
        assert_eq!(Command::from_bytes(&b), c);
    }

    #[test]
    fn indirect_sg_sets_flag_and_table_length() {
        let c = Command::new(op::MODULE_LOAD, 1, &[5]).with_indirect_sg(0x4000, 10);
        assert_eq!(c.flags & CMD_FLAG_SG_INDIRECT, CMD_FLAG_SG_INDIRECT);
        assert_eq!(c.sg[0], SgEntry::new(0x4000, 160));
        assert_eq!(c.sg_count, 10);
    }

    #[test]
    fn completion_and_records_round_trip() {
        let c = Completion {
            cid: 9,
            result: 201,
            value0: u64::MAX,
            value1: 3,
            sq_head: 17,
            flags: CQE_FLAG_PHASE,
            reserved: 0,
        };
        assert_eq!(Completion::from_bytes(&c.to_bytes()), c);
        assert!(c.phase());
        let mut d = DeviceInfoRecord::default();
        d.name[..4].copy_from_slice(b"H100");
        d.attr_count = 1;
        d.attrs[0] = [75, 9];
        d.total_mem = 80 << 30;
        let back = DeviceInfoRecord::from_bytes(&d.to_bytes());
        assert_eq!(back, d);
        assert_eq!(back.name_str(), "H100");
        let p = ParamRecord { offset: 8, size: 4 };
        assert_eq!(ParamRecord::from_bytes(&p.to_bytes()), p);
    }

    #[test]
    fn launch_dims_pack_and_unpack() {
        let g = [1, 2, 3];
        let bl = [32, u32::MAX, 0];
        assert_eq!(unpack_launch_dims(pack_launch_dims(g, bl)), (g, bl));
    }

    #[test]
    fn opcodes_are_unique_and_named() {
        for (i, a) in op::ALL.iter().enumerate() {
            assert_ne!(op::name(*a), "UNKNOWN");
            assert!(!op::ALL[i + 1..].contains(a));
        }
        assert_eq!(op::name(0x7777), "UNKNOWN");
    }

    #[test]
    fn every_queue_has_an_intr_status_bit_below_the_device_event_bit() {
        assert_eq!(intr_queue_bit(0), 1);
        assert_eq!(intr_queue_bit(29), 1 << 29);
        for q in INTR_LAST_QUEUE_BIT..MAX_QUEUES + 100 {
            assert_eq!(intr_queue_bit(q), 1 << INTR_LAST_QUEUE_BIT);
        }
        assert_eq!(intr_queue_bit(u32::MAX) & INTR_DEVICE_EVENT, 0);
    }

    #[test]
    fn magic_reads_as_ngpu() {
        assert_eq!(&MAGIC.to_le_bytes(), b"NGPU");
        assert_eq!(ABI_VERSION, 0x0001_0001);
    }
}

/// The guest kernel module's ioctl interface (`guest-tools/kmod/include/uapi/netgpu.h`), as
/// the guest `libcuda.so.1` calls it. Not part of the device ABI; kept here so the C-header
/// test checks these numbers too.
pub mod uapi {
    /// `struct netgpu_ioc_submit` / `struct netgpu_ioc_cmd` / `struct netgpu_ioc_info` sizes.
    pub const SUBMIT_SIZE: usize = 16;
    pub const CMD_SIZE: usize = 160;
    pub const INFO_SIZE: usize = 136;
    pub const MAX_BATCH: u32 = 128;
    pub const UAPI_VERSION: u32 = 1;
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        (dir << 30) | ((size as u32) << 16) | ((b'N' as u32) << 8) | nr
    }
    /// `_IOR('N', 0, struct netgpu_ioc_info)`.
    pub const IOC_INFO: u32 = ioc(2, 0, INFO_SIZE);
    /// `_IOWR('N', 1, struct netgpu_ioc_submit)`.
    pub const IOC_SUBMIT: u32 = ioc(3, 1, SUBMIT_SIZE);
}
