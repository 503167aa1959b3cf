//! CUDA module images as NVIDIA's toolchain makes them, parsed as hostile input: the backend
//! parses what a guest sends, so every offset and length is checked, decompression is capped
//! ([`Limits`]), and no input makes this crate panic (a cargo-fuzz target checks that).
//!
//! - [`wrapper`]: the fatbin wrapper (`.nvFatBinSegment`, magic `0x466243B1`, v1 and the v2
//!   `-rdc` form);
//! - [`fatbin`]: the fatbin container (`0xBA55ED50`) and its PTX/ELF entries, compressed with
//!   LZ4 or Zstandard ([`compress`]);
//! - [`elf`]: cubins (architecture, kernels and their parameters);
//! - [`ptx`]: PTX text (`.version`, `.target`);
//! - [`link`]: netgpu's link container, which the guest's `cuLinkComplete` produces;
//! - [`host`]: host objects and libraries given to the JIT linker;
//! - [`probe()`]: an image's length from its first bytes (for the guest library);
//! - [`units`]/[`select_ptx`]: what an executor takes from a module load request.
//!
//! `docs/module-images.md` describes the formats and how netgpu uses them.

pub mod arch;
mod bytes;
pub mod compress;
pub mod elf;
mod error;
pub mod fatbin;
pub mod host;
mod image;
mod limits;
pub mod link;
pub mod probe;
pub mod ptx;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wrapper;

pub use arch::{Arch, ArchVariant};
pub use compress::Compression;
pub use elf::{Cubin, Kernel, KernelParam};
pub use error::{ImageError, Result};
pub use fatbin::{Entry, EntryKind, Fatbin};
pub use image::{detect, select_ptx, units, ImageKind, SelectedPtx, Target, Unit, UnitCode};
pub use limits::Limits;
pub use link::{LinkPart, PartKind, Role};
pub use probe::{probe, Probe};
pub use ptx::{PtxInfo, PtxVersion};
pub use wrapper::Wrapper;
