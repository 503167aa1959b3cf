//! `netgpu-vdev`: a vfio-user server presenting a netgpu virtual GPU to a VM.
//!
//! Code map (one file per device concern):
//! - [`protocol`]: vfio-user message formats; [`server`]: the message loop.
//! - [`device`]: shared device state, backend session lifecycle, region dispatch.
//! - [`config_space`]: PCI configuration space; [`regs`]: the BAR0 register file;
//!   [`interrupts`]: MSI-X / INTx; [`doorbell`]: the fast doorbell page (BAR2).
//! - [`memory`]: guest memory from `DMA_MAP`; [`sg`]: scatter-gather lists.
//! - [`queue`]: queue pairs and their workers; [`forward`]: commands to backend calls.
//! - [`config`]: command line and TOML configuration.
//!
//! The device ABI itself is defined in `netgpu_proto::abi` (see `docs/device-abi.md`).

pub mod config;
pub mod config_space;
pub mod device;
pub mod doorbell;
pub mod forward;
pub mod interrupts;
pub mod memory;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod regs;
pub mod server;
pub mod sg;
