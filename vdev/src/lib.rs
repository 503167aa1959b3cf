//! `netgpu-vdev`: a vfio-user server presenting a netgpu virtual GPU to a VM.
//!
//! Code map (one file per device concern; modules are private, what other crates, tests and
//! fuzz targets use is re-exported below):
//! - `protocol`: vfio-user message formats; `server`: the message loop.
//! - `device`: shared device state, the backend probe, the policy when a queue stops,
//!   region dispatch.
//! - `config_space`: PCI configuration space; `regs`: the BAR0 register file (reads, and
//!   writes decoded into actions); `interrupts`: MSI-X / INTx; `doorbell`: the fast doorbell
//!   page (BAR2).
//! - `memory`: guest memory from `DMA_MAP`, revoked on `DMA_UNMAP`; `sg`: scatter-gather
//!   lists with directions.
//! - `queue`: queue registers and the stop signal; `worker`: the per-queue pipeline;
//!   `cq`: the completion ring; `forward`: framing and memory-limit policy;
//!   `session`: a queue's backend connection, data straight from and into guest memory.
//! - `config`: command line and TOML configuration; `jail`: dropping to an unprivileged
//!   user and the seccomp filter; `pool`: `--vgpu`, following the vGPU's placement.
//!
//! The device ABI itself is defined in `netgpu_proto::abi`, and the translation between its
//! commands and wire requests in `netgpu_proto::abi::codec` (see `docs/device-abi.md`).

mod config;
mod config_space;
mod cq;
mod device;
mod doorbell;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod interrupts;
mod jail;
mod memory;
mod pool;
pub mod protocol;
mod queue;
mod regs;
mod server;
mod session;
mod sg;
mod worker;

pub use config::{
    check_transport, parse_size, resolve_backend, Args, Config, Error as ConfigError, Seccomp,
    SocketSpec,
};
pub use config_space::{Ids, CONFIG_SPACE_SIZE};
pub use device::{Device, DeviceConfig, Shared};
pub use doorbell::Error as DoorbellError;
pub use jail::{
    drop_to_user, filter as seccomp_filter, give, install_filter, lookup_user, Error as JailError,
    User,
};
pub use memory::{Error as MemoryError, GuestMemory, Snapshot};
pub use pool::{serve_metrics, Error as PoolError, Follow};
pub use queue::{QueueShared, StopReason};
pub use server::{run, serve, Error as ServerError, OnDisconnect, Source};
pub use session::{Liveness, Transport};
pub use sg::{Buffers, Entry as SgEntryInfo, Error as SgError, Run, SgList};
