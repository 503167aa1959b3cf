//! netgpu's control plane: pools of GPU hosts, virtual GPUs with fractional memory placed on
//! them, failover when a host dies, on etcd (real deployments) or an embedded file store (one
//! machine). See `docs/operators.md`.
//!
//! - [`model`]: the records and their keys.
//! - [`store`]: the one store trait, etcd and file implementations.
//! - [`placement`]: filters and scoring (pure, no I/O).
//! - [`api`]: the operations `netgpuctl` exposes, each one store transaction guarded by
//!   revision compares.
//! - [`agent`]: what a backend runs (registration, lease) and what vdev runs (where is my vGPU).
//! - [`controller`]: failover of vGPUs off hosts whose lease expired.
//! - [`testkit`]: a real etcd on loopback for tests and benchmarks.

pub mod model;
pub mod placement;
pub mod size;
pub mod store;
pub mod testkit;

pub use size::{fmt_size, parse_size};
pub mod agent;
pub mod api;
pub mod controller;
pub mod metrics;
