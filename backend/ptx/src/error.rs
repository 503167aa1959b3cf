//! Errors of module loading and of launches, each mapped to the CUDA result it stands for.

use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// Malformed PTX (`CUDA_ERROR_INVALID_PTX`).
    InvalidPtx,
    /// Valid PTX this executor does not implement (`CUDA_ERROR_NOT_SUPPORTED`).
    NotSupported,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("PTX line {line}: {message}")]
pub struct LoadError {
    pub line: usize,
    pub message: String,
    pub kind: LoadErrorKind,
}

impl LoadError {
    pub fn invalid(line: usize, message: impl Into<String>) -> Self {
        LoadError {
            line,
            message: message.into(),
            kind: LoadErrorKind::InvalidPtx,
        }
    }

    pub fn unsupported(line: usize, message: impl Into<String>) -> Self {
        LoadError {
            line,
            message: message.into(),
            kind: LoadErrorKind::NotSupported,
        }
    }

    /// The `CUresult` a driver returns for this error.
    pub fn cuda_error(&self) -> u32 {
        match self.kind {
            LoadErrorKind::InvalidPtx => 218,
            LoadErrorKind::NotSupported => 801,
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LaunchError {
    /// `CUDA_ERROR_ILLEGAL_ADDRESS`.
    #[error("illegal address {addr:#x} ({len} bytes) at instruction {pc}")]
    IllegalAddress { addr: u64, len: usize, pc: usize },
    /// `CUDA_ERROR_MISALIGNED_ADDRESS`.
    #[error("misaligned address {addr:#x} for a {len}-byte access at instruction {pc}")]
    MisalignedAddress { addr: u64, len: usize, pc: usize },
    /// `CUDA_ERROR_INVALID_VALUE`: geometry, shared memory or parameters the kernel cannot take.
    #[error("invalid launch: {0}")]
    InvalidConfig(String),
    /// `CUDA_ERROR_ILLEGAL_INSTRUCTION`: threads that can never meet at a barrier.
    #[error("barrier deadlock in block {block:?}")]
    BarrierDeadlock { block: [u32; 3] },
    /// `CUDA_ERROR_ASSERT` / trap instruction.
    #[error("trap at instruction {pc}")]
    Trap { pc: usize },
}

impl LaunchError {
    pub fn cuda_error(&self) -> u32 {
        match self {
            LaunchError::IllegalAddress { .. } => 700,
            LaunchError::MisalignedAddress { .. } => 716,
            LaunchError::InvalidConfig(_) => 1,
            LaunchError::BarrierDeadlock { .. } => 715,
            LaunchError::Trap { .. } => 710,
        }
    }
}
