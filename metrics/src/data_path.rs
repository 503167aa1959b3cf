//! The families backend and vdev fill. Each process registers them once
//! ([`DataPath::global`]); series of ended sessions are removed by the caller
//! ([`DataPath::end_session`]) so the set of series stays bounded.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::labels;

/// A histogram constructor usable as a family's (a plain fn, no captures).
pub type HistogramFn = fn() -> Histogram;

fn latency_histogram() -> Histogram {
    // 10 µs .. ~2.6 s in 4x steps: a loopback round trip to a long kernel.
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

pub struct DataPath {
    /// Device memory of a physical GPU.
    pub gpu_memory_total: Family<labels::Gpu, Gauge>,
    /// Device memory held by all sessions of a GPU.
    pub gpu_memory_used: Family<labels::Gpu, Gauge>,
    /// Sessions open on a GPU.
    pub gpu_sessions: Family<labels::Gpu, Gauge>,
    pub session_memory_quota: Family<labels::Session, Gauge>,
    pub session_memory_used: Family<labels::Session, Gauge>,
    /// Kernels launched.
    pub kernels: Family<labels::Op, Counter>,
    /// Bytes copied, by direction.
    pub bytes: Family<labels::Transfer, Counter>,
    /// Time from receiving an operation to its reply.
    pub op_latency: Family<labels::Op, Histogram, HistogramFn>,
    /// Operations that failed, by CUDA error.
    pub errors: Family<labels::OpError, Counter>,
    /// vdev: the vGPU's memory quota.
    pub vgpu_memory_quota: Family<labels::Vgpu, Gauge>,
    /// vdev: 1 once a session was opened at the vGPU's current placement.
    pub vgpu_connected: Family<labels::Vgpu, Gauge>,
    /// vdev: new sessions that followed the vGPU to a new placement.
    pub vgpu_reconnects: Family<labels::Vgpu, Counter>,
}

static GLOBAL: LazyLock<DataPath> = LazyLock::new(|| {
    let d = DataPath {
        gpu_memory_total: Family::default(),
        gpu_memory_used: Family::default(),
        gpu_sessions: Family::default(),
        session_memory_quota: Family::default(),
        session_memory_used: Family::default(),
        kernels: Family::default(),
        bytes: Family::default(),
        op_latency: Family::new_with_constructor(latency_histogram as HistogramFn),
        errors: Family::default(),
        vgpu_memory_quota: Family::default(),
        vgpu_connected: Family::default(),
        vgpu_reconnects: Family::default(),
    };

    crate::register(
        "gpu_memory_total_bytes",
        "Device memory of the GPU",
        d.gpu_memory_total.clone(),
    );
    crate::register(
        "gpu_memory_used_bytes",
        "Device memory held by all sessions on the GPU",
        d.gpu_memory_used.clone(),
    );
    crate::register(
        "gpu_sessions",
        "Sessions open on the GPU",
        d.gpu_sessions.clone(),
    );
    crate::register(
        "session_memory_quota_bytes",
        "Device memory the session may hold",
        d.session_memory_quota.clone(),
    );
    crate::register(
        "session_memory_used_bytes",
        "Device memory the session holds",
        d.session_memory_used.clone(),
    );
    crate::register("kernels", "Kernels launched", d.kernels.clone());
    crate::register(
        "transfer_bytes",
        "Bytes copied, by direction (htod, dtoh, dtod)",
        d.bytes.clone(),
    );
    crate::register(
        "operation_duration_seconds",
        "Time from receiving an operation to its reply",
        d.op_latency.clone(),
    );
    crate::register(
        "operation_errors",
        "Operations that failed, by CUDA error",
        d.errors.clone(),
    );
    crate::register(
        "vgpu_memory_quota_bytes",
        "The vGPU's device memory quota",
        d.vgpu_memory_quota.clone(),
    );
    crate::register(
        "vgpu_connected",
        "1 once the vGPU's vdev opened a backend session",
        d.vgpu_connected.clone(),
    );
    crate::register(
        "vgpu_reconnects",
        "Times the vGPU's new sessions followed it to a new placement (move, failover)",
        d.vgpu_reconnects.clone(),
    );
    d
});

impl DataPath {
    /// The process's families, registered on first use.
    pub fn global() -> &'static DataPath {
        &GLOBAL
    }

    /// Removes an ended session's series.
    pub fn end_session(&self, s: &labels::Session) {
        self.session_memory_quota.remove(s);
        self.session_memory_used.remove(s);
    }
}
