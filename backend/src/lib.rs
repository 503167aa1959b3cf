//! netgpu-backend: the daemon on the GPU host.
//!
//! - [`config`]: the TOML configuration.
//! - [`executor`]: where work runs (CUDA GPU or the PTX CPU interpreter), one engine per session.
//! - [`session`]: one client connection: handshake, frame loop, dispatch to the engine.
//! - [`server`]: the listener, session registry and graceful shutdown.
//! - [`transport`]: the byte stream under a session (plain TCP, or TLS: [`tls_transport`]).
//! - [`tenant`]: whom a session belongs to, and the tenant's share of the backend.

pub mod config;
pub mod executor;
pub mod pool;
pub mod server;
pub mod session;
pub mod tenant;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls_transport;
pub mod transport;
