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
#[error("PTX {}line {line}: {message}", module.map(|m| format!("module {m} ")).unwrap_or_default())]
pub struct LoadError {
    pub line: usize,
    pub message: String,
    pub kind: LoadErrorKind,
    /// In a link of several modules ([`crate::Module::link`]), the index of the module the
    /// line is in.
    pub module: Option<usize>,
}

impl LoadError {
    pub fn invalid(line: usize, message: impl Into<String>) -> Self {
        LoadError {
            line,
            message: message.into(),
            kind: LoadErrorKind::InvalidPtx,
            module: None,
        }
    }

    pub fn unsupported(line: usize, message: impl Into<String>) -> Self {
        LoadError {
            line,
            message: message.into(),
            kind: LoadErrorKind::NotSupported,
            module: None,
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
    #[error("illegal address {addr:#x} ({len} bytes) at PTX line {line}")]
    IllegalAddress { addr: u64, len: usize, line: u32 },
    /// `CUDA_ERROR_MISALIGNED_ADDRESS`.
    #[error("misaligned address {addr:#x} for a {len}-byte access at PTX line {line}")]
    MisalignedAddress { addr: u64, len: usize, line: u32 },
    /// `CUDA_ERROR_INVALID_VALUE`: geometry, shared memory or parameters the kernel cannot take.
    #[error("invalid launch: {0}")]
    InvalidConfig(String),
    /// `CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES`: the block needs more registers or local
    /// memory than the executor gives one block.
    #[error("launch out of resources: {0}")]
    OutOfResources(String),
    /// `CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`: more blocks than can be resident at once.
    #[error("cooperative launch of {blocks} blocks, at most {max} can be resident")]
    CooperativeTooLarge { blocks: u64, max: u64 },
    /// `CUDA_ERROR_ILLEGAL_INSTRUCTION`: threads that can never meet at a barrier.
    #[error("barrier deadlock in block {block:?}")]
    BarrierDeadlock { block: [u32; 3] },
    /// `CUDA_ERROR_LAUNCH_FAILED`: the `trap` instruction (`__trap()`).
    #[error("trap at PTX line {line} in block {block:?}, thread {thread:?}")]
    Trap {
        line: u32,
        block: [u32; 3],
        thread: [u32; 3],
    },
    /// `CUDA_ERROR_ASSERT`: a device-side `assert` failed (its message is in the console
    /// output).
    #[error("device assertion failed at PTX line {line} in block {block:?}, thread {thread:?}")]
    Assert {
        line: u32,
        block: [u32; 3],
        thread: [u32; 3],
    },
    /// `CUDA_ERROR_LAUNCH_TIMEOUT`: the launch ran past its deadline.
    #[error("kernel ran past its time limit")]
    Timeout,
    /// The launch was cancelled (its session is going away).
    #[error("launch cancelled")]
    Cancelled,
    /// The launch executed more thread-instructions than its limit allows.
    #[error("instruction limit exceeded")]
    InstructionLimit,
}

/// `CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`.
pub const CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE: u32 = 720;

impl LaunchError {
    /// The `CUresult` a driver reports for this error. `Cancelled` has no driver
    /// counterpart: it reads as `CUDA_ERROR_LAUNCH_FAILED`.
    pub fn cuda_error(&self) -> u32 {
        match self {
            LaunchError::IllegalAddress { .. } => 700,
            LaunchError::MisalignedAddress { .. } => 716,
            LaunchError::InvalidConfig(_) => 1,
            LaunchError::OutOfResources(_) => 701,
            LaunchError::CooperativeTooLarge { .. } => CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE,
            LaunchError::BarrierDeadlock { .. } => 715,
            LaunchError::Trap { .. } => 719,
            LaunchError::Assert { .. } => 710,
            LaunchError::Timeout | LaunchError::InstructionLimit => 702,
            LaunchError::Cancelled => 719,
        }
    }
}
