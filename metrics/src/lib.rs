//! netgpu's Prometheus metrics: one process-wide registry, the metric families every data-path
//! component shares ([`DataPath`]: GPU and session memory, kernels, bytes moved, operation
//! latency, errors), DCGM-style label names ([`labels`]) and the HTTP endpoint ([`serve`]).
//! Backend and vdev only fill the families and serve; the control plane registers its own
//! (`netgpu-pool`) into the same registry.
//!
//! Every name starts with `netgpu_`; units follow Prometheus conventions (`_bytes`,
//! `_seconds`, `_total`).

mod data_path;
mod http;
pub mod labels;

use std::sync::{LazyLock, Mutex};

pub use data_path::DataPath;
pub use http::{serve, Error};
pub use prometheus_client;

use prometheus_client::registry::{Metric, Registry};

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("netgpu")));

/// Registers a metric in the process-wide registry (its name gets the `netgpu_` prefix).
pub fn register(name: &str, help: &str, metric: impl Metric) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.register(name, help, metric);
    }
}

/// The registry in the Prometheus text exposition format (OpenMetrics 1.0).
pub fn encode_text() -> String {
    let mut out = String::new();
    if let Ok(r) = REGISTRY.lock() {
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    }
    out
}
