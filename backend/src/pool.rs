//! The backend in a netgpu pool (`[pool]` in the config, see docs/operators.md): registers
//! this host with its GPU in the store, keeps its liveness lease, and admits the vGPUs placed
//! here: each with its own token and its recorded memory quota, which the session is opened
//! with (the stricter of it and `session_memory_quota`). Also the `[metrics]` endpoint.
//!
//! The admitted set lives in a process-wide table that the pool agent keeps current, so the
//! server only asks [`grant_for`]; without `[pool]` it finds nothing. When the
//! store is unreachable the last admitted set stays (running VMs keep working).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tracing::{info, warn};

use netgpu_pool::agent::{Grants, HostAgent};
use netgpu_pool::api::Control;
use netgpu_pool::model::{Gpu, Host, Taint};
use netgpu_proto::wire::ops::DeviceInfo;

#[derive(Debug, Error)]
pub enum Error {
    #[error("[pool] name {0:?} is not a valid host name (a-z, 0-9, '-', '.', '_'; at most 63); set [pool] name")]
    Name(String),
    #[error("[pool] address is required when listen is {0} (vdevs need an address they can reach, e.g. \"10.0.0.21:7070\")")]
    Address(SocketAddr),
    #[error("cannot open the pool store {url}")]
    Store {
        url: String,
        #[source]
        source: netgpu_pool::store::Error,
    },
    #[error(transparent)]
    Metrics(#[from] netgpu_metrics::Error),
}

/// `[pool]`: joining a pool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// `etcd://HOST:PORT[,...]` or `file:///DIR`.
    pub store: String,
    /// Host name in the pool (default: this machine's host name).
    pub name: String,
    /// Address vdevs connect to (default: the listen address, unless it is unspecified).
    pub address: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    /// `key=value` or `key` strings.
    pub taints: Vec<String>,
    /// Liveness lease TTL; the controller sees the host down this long after it dies.
    pub lease_ttl_s: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            store: String::new(),
            name: String::new(),
            address: String::new(),
            zone: "default".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_ttl_s: 10,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` here (e.g. "127.0.0.1:9400"); unset: no endpoint.
    pub listen: Option<SocketAddr>,
}

static GRANTS: LazyLock<RwLock<Option<Grants>>> = LazyLock::new(|| RwLock::new(None));

/// The memory quota to open a session with: the vGPU's recorded quota for a pool token
/// (never more than `configured`), else `configured`.
pub fn quota_for(token: &str, configured: u64) -> u64 {
    GRANTS
        .read()
        .ok()
        .and_then(|g| g.as_ref().and_then(|g| g.get(token).map(|v| v.memory)))
        .map_or(configured, |m| m.min(configured))
}

/// The grant (vGPU, tenant, quota) of a pool token placed here.
/// Compares in constant time against every admitted token.
pub fn grant_for(token: &str) -> Option<netgpu_pool::agent::Grant> {
    let g = GRANTS.read().ok()?;
    let mut found = None;
    for (t, grant) in g.as_ref()? {
        if crate::tenant::constant_time_eq(t.as_bytes(), token.as_bytes()) {
            found = Some(grant);
        }
    }
    found.cloned()
}

/// Whether this backend admits pool tokens (so it may start without a configured token).
pub fn enabled(cfg: &PoolConfig) -> bool {
    !cfg.store.is_empty()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "gpu-host".into())
}

/// The host record this backend reports.
pub fn reported_host(
    cfg: &PoolConfig,
    listen: SocketAddr,
    gpu_index: u32,
    info: &DeviceInfo,
) -> Result<Host, Error> {
    let name = if cfg.name.is_empty() {
        hostname()
    } else {
        cfg.name.clone()
    };
    if !netgpu_pool::model::valid_name(&name) {
        return Err(Error::Name(name));
    }
    let address = if !cfg.address.is_empty() {
        cfg.address.clone()
    } else if listen.ip().is_unspecified() {
        return Err(Error::Address(listen));
    } else {
        listen.to_string()
    };
    let uuid: String = info.uuid.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Host {
        name,
        address,
        zone: cfg.zone.clone(),
        labels: cfg.labels.clone(),
        taints: cfg
            .taints
            .iter()
            .map(|t| match t.split_once('=') {
                Some((k, v)) => Taint {
                    key: k.into(),
                    value: v.into(),
                },
                None => Taint {
                    key: t.clone(),
                    value: String::new(),
                },
            })
            .collect(),
        executor: info.executor.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        gpus: vec![Gpu {
            index: gpu_index,
            model: info.name.clone(),
            uuid: format!("GPU-{uuid}"),
            memory: info.total_mem,
        }],
        ..Host::default()
    })
}

/// Joins the pool: opens the store, starts the agent (registration, lease, admitted vGPUs).
pub async fn join(cfg: &PoolConfig, host: Host) -> Result<HostAgent, Error> {
    let ctl = Control::open(&cfg.store).await.map_err(|e| match e {
        netgpu_pool::api::Error::Store(source) => Error::Store {
            url: cfg.store.clone(),
            source,
        },
        other => Error::Store {
            url: cfg.store.clone(),
            source: netgpu_pool::store::Error::Url(other.to_string()),
        },
    })?;
    info!(host = %host.name, address = %host.address, store = %cfg.store, "joining the pool");
    if let Ok(mut g) = GRANTS.write() {
        *g = Some(Grants::new());
    }
    let agent = HostAgent::start(ctl, host, Duration::from_secs(cfg.lease_ttl_s.max(1)));
    let mut rx = agent.grants();
    tokio::spawn(async move {
        loop {
            let g = rx.borrow_and_update().clone();
            info!(vgpus = g.len(), "admitted vGPUs updated");
            crate::session::metrics::forget_vgpus(&g.values().map(|v| v.vgpu.clone()).collect());
            if let Ok(mut cur) = GRANTS.write() {
                *cur = Some(g);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(agent)
}

/// Starts `/metrics`, sets the GPU's gauges and samples `sessions()` (open sessions) every
/// two seconds.
pub async fn serve_metrics(
    cfg: &MetricsConfig,
    hostname_: &str,
    gpu_index: u32,
    info: &DeviceInfo,
    sessions: impl Fn() -> usize + Send + 'static,
) -> Result<(), Error> {
    let Some(addr) = cfg.listen else {
        return Ok(());
    };
    let uuid: String = info.uuid.iter().map(|b| format!("{b:02x}")).collect();
    let labels = netgpu_metrics::labels::Gpu {
        gpu: gpu_index.to_string(),
        UUID: format!("GPU-{uuid}"),
        modelName: info.name.clone(),
        Hostname: hostname_.to_string(),
    };
    netgpu_metrics::DataPath::global()
        .gpu_memory_total
        .get_or_create(&labels)
        .set(info.total_mem.min(i64::MAX as u64) as i64);
    crate::session::metrics::enable(labels.clone());
    let bound = netgpu_metrics::serve(addr).await?;
    info!(%bound, "metrics on /metrics");
    tokio::spawn(async move {
        let gauge = netgpu_metrics::DataPath::global()
            .gpu_sessions
            .get_or_create(&labels)
            .clone();
        loop {
            gauge.set(sessions().min(i64::MAX as usize) as i64);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    Ok(())
}

/// Leaves the pool (revokes the lease: the host shows down at once).
pub async fn leave(agent: Option<HostAgent>) {
    if let Some(a) = agent {
        a.stop().await;
    } else {
        warn!("not in a pool");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeviceInfo {
        DeviceInfo {
            name: "netgpu CPU executor".into(),
            total_mem: 8 << 30,
            cc_major: 8,
            cc_minor: 0,
            multiprocessors: 1,
            uuid: [0xab; 16],
            driver_version: 0,
            executor: "cpu".into(),
            attributes: vec![],
        }
    }

    #[test]
    fn the_reported_host_carries_the_gpu_and_a_reachable_address() {
        let cfg = PoolConfig {
            store: "file:///x".into(),
            name: "gpu-a".into(),
            zone: "z1".into(),
            taints: vec!["dedicated=ml".into(), "spot".into()],
            ..PoolConfig::default()
        };
        let h = reported_host(&cfg, "127.0.0.1:7070".parse().unwrap(), 0, &info()).unwrap();
        assert_eq!(h.address, "127.0.0.1:7070");
        assert_eq!(h.gpus[0].memory, 8 << 30);
        assert!(h.gpus[0].uuid.starts_with("GPU-abab"));
        assert_eq!(h.taints[1].key, "spot");
        let e = reported_host(&cfg, "0.0.0.0:7070".parse().unwrap(), 0, &info()).unwrap_err();
        assert!(e.to_string().contains("[pool] address"), "{e}");
        let bad = PoolConfig {
            name: "Bad Name".into(),
            ..cfg
        };
        assert!(reported_host(&bad, "127.0.0.1:1".parse().unwrap(), 0, &info()).is_err());
    }

    #[test]
    fn pool_tokens_are_admitted_with_their_quota_only() {
        assert!(grant_for("t").is_none());
        assert_eq!(quota_for("t", 100), 100);
        let mut g = Grants::new();
        g.insert(
            "tok".into(),
            netgpu_pool::agent::Grant {
                vgpu: "vm1".into(),
                tenant: "t".into(),
                memory: 40,
            },
        );
        *GRANTS.write().unwrap() = Some(g);
        assert_eq!(grant_for("tok").map(|g| g.memory), Some(40));
        assert!(grant_for("tok2").is_none());
        assert_eq!(quota_for("tok", 100), 40);
        assert_eq!(quota_for("tok", 10), 10);
        assert_eq!(quota_for("other", 100), 100);
        *GRANTS.write().unwrap() = None;
    }

    #[test]
    fn the_packaged_backend_config_parses() {
        let text = include_str!("../../packaging/etc/netgpu/backend.toml");
        let cfg: crate::config::Config = toml::from_str(text).unwrap();
        assert!(enabled(&cfg.pool));
        assert_eq!(cfg.metrics.listen.map(|a| a.port()), Some(9400));
        // It listens off loopback: only with TLS does the backend start.
        assert!(cfg.tls.is_some() && !cfg.insecure_plain_loopback);
    }
}
