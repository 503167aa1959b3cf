//! Socket liveness: how fast a dead peer or a partition is noticed.
//!
//! A partition shows up in one of two ways, and each has its own timer:
//! - **Waiting for an answer, nothing unacknowledged** (a kernel runs, the reply is
//!   outstanding): TCP keepalive probes start after `keepalive_idle_ms` of silence and repeat
//!   every `keepalive_interval_ms`.
//! - **Data in flight** (mid-copy): unacknowledged data older than `user_timeout_ms`
//!   (`TCP_USER_TIMEOUT`) aborts the connection; the kernel clamps its retransmission timer
//!   to fire then.
//!
//! With `TCP_USER_TIMEOUT` set, Linux also aborts a keepalive-probed connection once nothing
//! has been received for `user_timeout_ms`, so both cases end about `user_timeout_ms` after
//! the last packet from the peer: with the defaults (1 s idle, 1 s interval, 4 s) a blocked
//! read or write fails with `ETIMEDOUT` within 4-5 s of a partition, and every waiting CUDA
//! call returns an error. The probes cost one empty segment per second on an idle
//! connection. On a lossy WAN raise `user_timeout_ms` (a 4 s outage then kills sessions);
//! in a data centre, seconds are the right scale.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{SockRef, TcpKeepalive};

/// Keepalive and user-timeout settings (the `[net]` section of each config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetTuning {
    /// Silence before the first keepalive probe.
    pub keepalive_idle_ms: u64,
    /// Between keepalive probes.
    pub keepalive_interval_ms: u64,
    /// Probes before the connection is dropped (when `user_timeout_ms` is 0).
    pub keepalive_probes: u32,
    /// Unacknowledged data, or keepalive silence, older than this aborts the connection
    /// (`TCP_USER_TIMEOUT`); 0 leaves the kernel default (about 15 minutes).
    pub user_timeout_ms: u64,
}

impl Default for NetTuning {
    fn default() -> Self {
        NetTuning {
            keepalive_idle_ms: 1_000,
            keepalive_interval_ms: 1_000,
            keepalive_probes: 3,
            user_timeout_ms: 4_000,
        }
    }
}

impl NetTuning {
    /// Applies the settings and `TCP_NODELAY` to a connected TCP socket.
    pub fn apply(&self, socket: &impl AsFd) -> io::Result<()> {
        let s = SockRef::from(socket);
        s.set_tcp_nodelay(true)?;
        let ka = TcpKeepalive::new()
            .with_time(Duration::from_millis(self.keepalive_idle_ms.max(1_000)))
            .with_interval(Duration::from_millis(self.keepalive_interval_ms.max(1_000)))
            .with_retries(self.keepalive_probes.max(1));
        s.set_tcp_keepalive(&ka)?;
        s.set_tcp_user_timeout(if self.user_timeout_ms == 0 {
            None
        } else {
            Some(Duration::from_millis(self.user_timeout_ms))
        })?;
        Ok(())
    }

    /// The longest a partition can go unnoticed by a socket with these settings.
    pub fn detection_bound(&self) -> Duration {
        let ka = self.keepalive_idle_ms.max(1_000)
            + self.keepalive_interval_ms.max(1_000) * u64::from(self.keepalive_probes.max(1));
        let bound = if self.user_timeout_ms == 0 {
            ka
        } else {
            // Aborted at the first keepalive tick after user_timeout of silence.
            self.user_timeout_ms + self.keepalive_interval_ms.max(1_000)
        };
        Duration::from_millis(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reach_the_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let t = NetTuning::default();
        t.apply(&s).unwrap();
        let r = SockRef::from(&s);
        assert!(r.tcp_nodelay().unwrap());
        assert!(r.keepalive().unwrap());
        assert_eq!(r.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        assert_eq!(r.tcp_keepalive_interval().unwrap(), Duration::from_secs(1));
        assert_eq!(r.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(r.tcp_user_timeout().unwrap(), Some(Duration::from_secs(4)));
        assert!(t.detection_bound() <= Duration::from_secs(5));
    }

    #[test]
    fn net_section_parses_with_defaults() {
        let t: NetTuning = toml::from_str("user_timeout_ms = 8000").unwrap();
        assert_eq!(t.user_timeout_ms, 8000);
        assert_eq!(t.keepalive_idle_ms, 1000);
        assert!(toml::from_str::<NetTuning>("keepalive = 1").is_err());
    }
}
