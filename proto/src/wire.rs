//! Wire protocol between netgpu-vdev and netgpu-backend (see docs/wire-protocol.md).
