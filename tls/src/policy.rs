//! When plain TCP is allowed: only when a config line says so (`insecure_plain_loopback =
//! true`), and then only on loopback — the backend listens on a loopback address and
//! serves loopback peers, a client connects to loopback addresses only. Everything else is
//! TLS. Plain mode is for development and tests on one machine; nothing in it crosses a
//! network.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("no [tls] section in {config}: configure TLS (see docs/security.md; `netgpu-cert` prints the section) or, for development on one machine only, set `insecure_plain_loopback = true`")]
    NoTransport { config: String },
    #[error("{config} has both a [tls] section and `insecure_plain_loopback = true`: remove one")]
    Both { config: String },
    #[error("plain TCP refused for {addr}: `insecure_plain_loopback` only allows loopback addresses (127.0.0.0/8, ::1); configure [tls] to reach {addr}")]
    NotLoopback { addr: String },
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
}

/// How an endpoint secures its connections.
#[derive(Debug)]
pub enum Security<T> {
    /// TLS with the given endpoint state (a [`crate::ServerTls`] or [`crate::ClientTls`]).
    Tls(Arc<T>),
    /// Plain TCP, loopback only.
    PlainLoopback,
}

impl<T> Clone for Security<T> {
    fn clone(&self) -> Self {
        match self {
            Security::Tls(t) => Security::Tls(t.clone()),
            Security::PlainLoopback => Security::PlainLoopback,
        }
    }
}

impl<T> Security<T> {
    /// Picks the transport from a config's `[tls]` section and its `insecure_plain_loopback`
    /// line; `config` names the file in errors.
    pub fn choose(
        tls: Option<T>,
        insecure_plain_loopback: bool,
        config: &str,
    ) -> Result<Security<T>, PolicyError> {
        match (tls, insecure_plain_loopback) {
            (Some(t), false) => Ok(Security::Tls(Arc::new(t))),
            (None, true) => Ok(Security::PlainLoopback),
            (Some(_), true) => Err(PolicyError::Both {
                config: config.to_string(),
            }),
            (None, false) => Err(PolicyError::NoTransport {
                config: config.to_string(),
            }),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls(_))
    }
}

/// A plain listener must be bound to a loopback address.
pub fn check_plain_listen(listen: SocketAddr) -> Result<(), PolicyError> {
    if listen.ip().is_loopback() {
        Ok(())
    } else {
        Err(PolicyError::NotLoopback {
            addr: listen.to_string(),
        })
    }
}

/// A plain listener serves loopback peers only (IPv4-mapped loopback included).
pub fn plain_peer_allowed(peer: SocketAddr) -> bool {
    match peer {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Resolves `addr` (`host:port`) for a plain connection: every address it resolves to must be
/// loopback, so a name that resolves elsewhere is refused before anything is sent.
pub fn resolve_plain(addr: &str) -> Result<Vec<SocketAddr>, PolicyError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| PolicyError::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| plain_peer_allowed(*a)) {
        return Err(PolicyError::NotLoopback {
            addr: addr.to_string(),
        });
    }
    Ok(addrs)
}

/// The host part of `host:port`, `[v6]:port` or a bare host, for the default server name.
pub fn host_part(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, _)) if !h.contains(':') => h,
        Some(_) => addr,
        None => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_needs_the_explicit_line_and_not_both() {
        assert!(matches!(
            Security::<()>::choose(None, false, "vdev.toml"),
            Err(PolicyError::NoTransport { .. })
        ));
        assert!(matches!(
            Security::choose(Some(()), true, "x"),
            Err(PolicyError::Both { .. })
        ));
        assert!(Security::choose(Some(()), false, "x").unwrap().is_tls());
        assert!(!Security::<()>::choose(None, true, "x").unwrap().is_tls());
        let e = Security::<()>::choose(None, false, "/etc/netgpu/vdev.toml").unwrap_err();
        assert!(e.to_string().contains("/etc/netgpu/vdev.toml"), "{e}");
    }

    #[test]
    fn plain_is_loopback_only() {
        assert!(check_plain_listen("127.0.0.1:7070".parse().unwrap()).is_ok());
        assert!(check_plain_listen("[::1]:7070".parse().unwrap()).is_ok());
        assert!(check_plain_listen("0.0.0.0:7070".parse().unwrap()).is_err());
        assert!(plain_peer_allowed("127.3.4.5:1".parse().unwrap()));
        assert!(plain_peer_allowed("[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(!plain_peer_allowed("198.18.0.1:1".parse().unwrap()));
        assert!(resolve_plain("127.0.0.1:7070").is_ok());
        assert!(resolve_plain("localhost:7070").is_ok());
        let e = resolve_plain("198.18.0.2:7070").unwrap_err();
        assert!(e.to_string().contains("configure [tls]"), "{e}");
    }

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_part("gpu1.dc:7070"), "gpu1.dc");
        assert_eq!(host_part("198.18.2.3:7070"), "198.18.2.3");
        assert_eq!(host_part("[fd00::1]:7070"), "fd00::1");
        assert_eq!(host_part("gpu1"), "gpu1");
        assert_eq!(host_part("fd00::1"), "fd00::1");
    }
}
