//! Client errors, each mappable to the CUDA result a driver-API caller should see.

use netgpu_proto::cuda::CuResult;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum ClientError {
    /// The backend executed the request and it failed.
    #[error("{0}")]
    Cuda(CuResult),
    #[error("cannot connect to backend {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The backend refused the handshake (bad token, no common version, session limit).
    #[error("backend refused the session ({status}): {reason}")]
    Refused { status: CuResult, reason: String },
    /// The connection is gone; every later call fails with this too.
    #[error("connection to the backend lost: {0}")]
    Disconnected(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The CUDA result a driver-API caller should see for this error.
    pub fn cuda_result(&self) -> CuResult {
        match self {
            ClientError::Cuda(c) => *c,
            ClientError::Refused { status, .. } => *status,
            ClientError::Connect { .. } | ClientError::Disconnected(_) => {
                CuResult::DEVICE_UNAVAILABLE
            }
            ClientError::Protocol(_) => CuResult::UNKNOWN,
        }
    }
}

impl From<CuResult> for ClientError {
    fn from(c: CuResult) -> Self {
        ClientError::Cuda(c)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
