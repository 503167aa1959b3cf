//! Wire protocol between `netgpu-vdev` (or any client) and `netgpu-backend`.
//!
//! A connection is a sequence of frames in each direction ([`frame`]). The first request is a
//! [`ops::Request::Hello`] carrying the protocol version range and the authentication token;
//! the backend answers [`ops::Reply::Welcome`] or an error frame and closes. After that the
//! client sends operations named after the CUDA driver API calls they serve ([`ops`]), each
//! with a request id. Stream-ordered operations may be flagged [`frame::FLAG_NO_REPLY`]: the
//! client does not wait for them and their errors surface at the next synchronising call.
//!
//! Bulk data (copies, PTX images, kernel parameters) travels in a frame's data section, after
//! the small postcard-encoded control section, so it can be written from and read into the
//! caller's buffers directly. See `docs/wire-protocol.md`.

pub mod client;
pub mod frame;
mod launch;
pub mod ops;

pub use frame::{FrameHeader, FrameKind, FLAG_CONSOLE_PENDING, FLAG_NO_REPLY, HEADER_LEN};
pub use ops::{DeviceInfo, FunctionInfo, Handle, Reply, Request};

/// Protocol version spoken by this crate. A peer negotiates the highest version both accept.
///
/// Version 2 (netgpu 0.2): session limits in `Hello`, module images of any kind and linked
/// parts, function attributes, launch flags, stream priorities, `StreamWaitEvent`,
/// `Memcpy3D`, `MemFreeAsync`, kernel console output (`ConsoleRead`, `FLAG_CONSOLE_PENDING`).
///
/// Version 3: the backend may send [`FrameKind::Busy`] frames while it holds a session's
/// requests back ([`BUSY_VERSION`]); nothing else changed, so a version-2 peer is still
/// served (and sent none).
pub const PROTOCOL_VERSION: u16 = 3;
/// The first version whose clients accept [`FrameKind::Busy`] frames.
pub const BUSY_VERSION: u16 = 3;
/// Oldest protocol version this crate still accepts. Version 1's `Hello` and `ModuleLoad`
/// have another layout, so a version-1 peer is refused at the handshake with a clear error.
pub const MIN_PROTOCOL_VERSION: u16 = 2;
/// Largest control section a peer may send (the data section has its own, negotiated limit).
pub const MAX_CTRL_LEN: u32 = 64 * 1024;
/// Default largest data section of one frame; larger copies are split by the client.
pub const DEFAULT_MAX_DATA_LEN: u32 = 64 * 1024 * 1024;
