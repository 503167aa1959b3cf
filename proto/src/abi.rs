//! Device ABI between the guest driver and netgpu-vdev (see docs/device-abi.md).
