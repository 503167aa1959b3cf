//! `libcuda.so.1` for netgpu guests: the CUDA driver API that programs link against,
//! forwarding every call to the remote GPU behind the netgpu device (or, with
//! `NETGPU_BACKEND`, straight to a backend over TCP).
//!
//! - [`transport`]: how requests reach the GPU (kernel module ioctls, or TCP).
//! - [`state`]: the driver's process-wide state: the transport, the device record, contexts
//!   (the per-thread current-context stack and the primary context), kernel signatures.
//! - [`api`]: the exported `cu*` functions, with the versioned names `cuda.h` maps to, and
//!   `cuGetProcAddress`.
//!
//! Every exported function catches panics (none may unwind into C) and returns a `CUresult`.
//! See `docs/libcuda.md`.

pub mod api;
pub mod dark;
pub mod image;
pub mod memmap;
pub mod state;
pub mod stats;
pub mod transport;

/// Writes a diagnostic line to stderr (`netgpu: ...`); silenced by `NETGPU_QUIET=1`.
pub fn log(msg: &str) {
    if std::env::var_os("NETGPU_QUIET").is_none() {
        eprintln!("netgpu: {msg}");
    }
}
