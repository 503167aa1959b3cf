//! netgpu shared types: the wire protocol and the device ABI.
