//! Async client for the netgpu wire protocol.
