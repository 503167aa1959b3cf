//! Label sets. GPU identity uses the label names of NVIDIA's DCGM exporter (`gpu`, `UUID`,
//! `modelName`, `Hostname`), so dashboards and alerts written for DCGM group netgpu's series
//! the same way; netgpu's own dimensions are lower-case (`vgpu`, `tenant`, `session`, `op`).

#![allow(non_snake_case)]

use prometheus_client::encoding::EncodeLabelSet;

/// One physical GPU.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Gpu {
    /// Index on the host (CUDA ordinal).
    pub gpu: String,
    pub UUID: String,
    pub modelName: String,
    pub Hostname: String,
}

/// One backend session (one vGPU queue) on a GPU.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Session {
    pub gpu: String,
    pub UUID: String,
    pub Hostname: String,
    /// The client's name (vdev sends `netgpu-vdev VGPU`).
    pub vgpu: String,
    pub tenant: String,
    pub session: String,
}

/// One vGPU as its vdev sees it.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Vgpu {
    pub vgpu: String,
    pub Hostname: String,
}

/// Bytes moved in one direction (`htod`, `dtoh`, `dtod`).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transfer {
    pub vgpu: String,
    pub direction: String,
}

/// One operation kind (the wire request name, e.g. `LaunchKernel`).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub vgpu: String,
    pub op: String,
}

/// A failed operation and its CUDA error name.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpError {
    pub vgpu: String,
    pub op: String,
    pub error: String,
}

/// A host of the pool.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolGpu {
    pub Hostname: String,
    pub gpu: String,
    pub modelName: String,
    pub zone: String,
}

/// A placement failure reason.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}
