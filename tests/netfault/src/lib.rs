//! netgpu-netfault: network faults for netgpu's tests, made on the spot.
//!
//! - [`proxy`]: a fault-injecting TCP proxy (latency, stalls, resets, cuts after N bytes,
//!   refused connections), changeable while connections are open.
//! - [`netns`]: two network namespaces joined by a veth pair, with nftables rules for
//!   partitions and packet loss (`tc netem` does not exist in this kernel).
//!
//! The fault tests of the whole stack (`tests/` of this crate) use both; see
//! `docs/testing.md` for what they cover and how to run the full matrix.

pub mod netns;
pub mod proxy;

pub use netns::{Netns, NsHandle, Pair};
pub use proxy::{Dir, Fault, FaultProxy};
