//! The one error type of the crate, and its `CUresult`.

use netgpu_proto::cuda::CuResult;
use thiserror::Error;

/// Why an image was refused. Every message names the part and what was wrong, so the backend
/// can log it and a user can tell a damaged image from one built for another GPU.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ImageError {
    /// A header promises bytes the image does not have.
    #[error("{what}: truncated (needs {need} bytes at offset {offset}, the image has {have})")]
    Truncated {
        what: &'static str,
        offset: u64,
        need: u64,
        have: u64,
    },
    /// A structure is inconsistent (bad magic, overlapping or impossible sizes, ...).
    #[error("{what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// Not PTX, a fatbin, a cubin or a link container.
    #[error("not a CUDA module image (first bytes {0}); expected PTX text, a fatbin, a cubin or a netgpu link container")]
    UnknownFormat(String),
    /// A fatbin wrapper (`.nvFatBinSegment`) holds pointers into the process that made it;
    /// only the guest library can follow them.
    #[error(
        "a fatbin wrapper holds pointers into the guest process: send the fatbin it points to"
    )]
    Wrapper,
    /// A size (declared or decompressed) exceeds a [`crate::Limits`] bound.
    #[error("{what}: {size} bytes is over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// More entries, parts or nesting than [`crate::Limits`] allows.
    #[error("{what}: more than {limit}")]
    TooMany { what: &'static str, limit: u64 },
    /// A compressed entry does not decompress to what its header says.
    #[error("{what}: {detail}")]
    Decompress { what: &'static str, detail: String },
    /// PTX text that is not UTF-8 or lacks `.version`/`.target`.
    #[error("invalid PTX: {0}")]
    InvalidPtx(String),
    /// No code the executor can run: no PTX (or no PTX for this compute capability).
    #[error("no binary for the GPU: {0}")]
    NoBinaryForGpu(String),
    /// PTX for this GPU exists, but only in ISA versions newer than the executor accepts.
    #[error("PTX ISA {found} is newer than the {max} this executor accepts")]
    UnsupportedPtxVersion { found: String, max: String },
    /// A link container input kind this crate cannot take apart (NVVM IR for LTO).
    #[error("{0} is not supported")]
    Unsupported(String),
}

impl ImageError {
    /// The driver API result a program sees for this error.
    pub fn cu_result(&self) -> CuResult {
        match self {
            ImageError::NoBinaryForGpu(_) => CuResult::NO_BINARY_FOR_GPU,
            ImageError::UnsupportedPtxVersion { .. } => CuResult::UNSUPPORTED_PTX_VERSION,
            ImageError::InvalidPtx(_) => CuResult::INVALID_PTX,
            ImageError::TooLarge { .. } | ImageError::TooMany { .. } => CuResult::OUT_OF_MEMORY,
            ImageError::Unsupported(_) => CuResult::NOT_SUPPORTED,
            ImageError::Truncated { .. }
            | ImageError::Malformed { .. }
            | ImageError::UnknownFormat(_)
            | ImageError::Wrapper
            | ImageError::Decompress { .. } => CuResult::INVALID_IMAGE,
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        ImageError::Malformed {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn truncated(what: &'static str, offset: u64, need: u64, have: usize) -> Self {
        ImageError::Truncated {
            what,
            offset,
            need,
            have: have as u64,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
