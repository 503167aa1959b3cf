//! netgpu-backend: the daemon on the GPU host.
//!
//! - [`config`]: the TOML configuration.
//! - [`executor`]: where work runs (CUDA GPU or the PTX CPU interpreter), one engine per session.
//! - [`session`]: one client connection: handshake, frame loop, dispatch to the engine.
//! - [`server`]: the listener, session registry and graceful shutdown.
//! - [`transport`]: the byte stream under a session (TCP today, TLS next).

pub mod config;
pub mod executor;
pub mod pool;
pub mod server;
pub mod session;
pub mod transport;
