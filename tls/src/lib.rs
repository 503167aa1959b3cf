//! netgpu-tls: TLS for every netgpu hop that leaves a machine (vdev or libcuda to the
//! backend), with `rustls` only.
//!
//! - TLS 1.3 only, mutual authentication with certificates from the operator's CA, the
//!   backend's name checked by the client, the client's certificate checked by the backend
//!   and its tenant read from a SAN URI `netgpu://tenant/<name>` ([`identity`]).
//! - Certificates, keys and CA bundles are reloaded when their files change: new connections
//!   use the new files, established ones keep theirs ([`reload`]).
//! - Plain TCP only where a config line explicitly allows it, and then only on loopback
//!   ([`policy`]).
//! - Socket liveness settings (keepalive, `TCP_USER_TIMEOUT`) so a partition is noticed in
//!   seconds ([`net`]).
//! - Errors that name the file, certificate or name that failed and say what to do
//!   ([`explain`]).
//! - Connections on rustls' unbuffered API (records sealed into and decrypted in buffers
//!   this crate owns, large socket writes): blocking ([`blocking`], [`split`]) and tokio
//!   streams, and a connection two async halves share while doing their own socket I/O
//!   ([`shared`], vdev's sessions), all on [`unbuffered`].
//! - With the `issue` feature: a CA and host/hypervisor certificates for operators
//!   ([`issue`], the `netgpu-cert` CLI).
//!
//! See `docs/security.md` for the threat model and the operator's steps.

pub mod blocking;
#[cfg(feature = "issue")]
pub mod cli;
pub mod client;
pub mod config;
pub mod explain;
pub mod identity;
#[cfg(feature = "issue")]
pub mod issue;
pub mod net;
pub mod pem;
pub mod policy;
pub mod reload;
pub mod server;
pub mod shared;
pub mod split;
#[cfg(all(test, feature = "issue"))]
mod test_support;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod unbuffered;

use std::sync::Arc;

pub use client::ClientTls;
pub use config::{ClientAuth, ClientTlsConfig, ServerTlsConfig};
pub use identity::{PeerIdentity, TenantName, TENANT_URI_PREFIX};
pub use net::NetTuning;
pub use policy::Security;
pub use server::ServerTls;

/// ALPN protocol name both sides offer: a netgpu client cannot be talked into speaking to
/// some other TLS service on the same port, nor the reverse.
pub const ALPN: &[u8] = b"netgpu";

/// The crypto provider every netgpu TLS endpoint uses: *ring*, TLS 1.3 suites only, AES-128-GCM
/// first (fastest with AES-NI; the bench records the alternatives), then AES-256-GCM and
/// ChaCha20-Poly1305 (chosen by peers without AES hardware).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// Protocol versions offered and accepted: TLS 1.3 only.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// `e` and each of its sources, joined by ": " (for logs and CLI messages).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}
