//! netgpu shared types.
//!
//! - [`wire`]: the wire protocol between `netgpu-vdev` and `netgpu-backend` (frames, handshake,
//!   operations, CUDA result codes).
//! - [`abi`]: the device ABI between a guest driver and `netgpu-vdev` (BAR0 registers, rings,
//!   command descriptors). The guest kernel module's C header is checked against these types.

pub mod abi;
pub mod cuda;
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod wire;
