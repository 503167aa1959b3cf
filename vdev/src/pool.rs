//! netgpu-vdev from the pool (`--vgpu NAME --store URL`): the vGPU's record gives the backend
//! address, token and memory quota. Every new backend session (a new guest process's queue, a
//! reconnect after a lost backend, a device reset) asks [`Follow::endpoint`] for the vGPU's
//! current placement and reports whether that session opened ([`Attempt`]: the
//! `vgpu_connected` gauge and the attachment published to the pool follow sessions that did),
//! so after a failover or a move the next session goes to the new host while sessions already
//! open stay where they are. The placement is followed by a background
//! task (store watches); when the store is unreachable the last placement is used. Also the
//! `--metrics-listen` endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netgpu_pool::agent::{Target, VgpuFollower};
use netgpu_pool::api::Control;
use thiserror::Error;
use tracing::info;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot open the pool store {url} (check --store / `store` in the config)")]
    Store {
        url: String,
        #[source]
        source: netgpu_pool::api::Error,
    },
    #[error("cannot resolve vGPU {vgpu} in {url}")]
    Resolve {
        vgpu: String,
        url: String,
        #[source]
        source: netgpu_pool::api::Error,
    },
    #[error(transparent)]
    Metrics(#[from] netgpu_metrics::Error),
}

/// Follows one vGPU's placement.
#[derive(Clone)]
pub struct Follow {
    inner: VgpuFollower,
    vgpu: String,
    /// Placement generation of the last session opened (0: none yet).
    last_generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.inner.current();
        f.debug_struct("Follow")
            .field("vgpu", &self.vgpu)
            .field("host", &t.host)
            .field("address", &t.address)
            .field("generation", &t.generation)
            .finish()
    }
}

impl Follow {
    /// Resolves `vgpu` in the store at `url` (an error if it does not exist or the store is
    /// unreachable now) and starts following it on the current tokio runtime.
    pub async fn start(url: &str, vgpu: &str) -> Result<Follow, Error> {
        let ctl = Control::open(url).await.map_err(|source| Error::Store {
            url: url.into(),
            source,
        })?;
        let inner = VgpuFollower::start(ctl, vgpu)
            .await
            .map_err(|source| Error::Resolve {
                vgpu: vgpu.into(),
                url: url.into(),
                source,
            })?;
        let t = inner.current();
        info!(device = %vgpu, host = %t.host, address = %t.address, memory = t.memory, "vGPU resolved from the pool");
        Ok(Follow {
            inner,
            vgpu: vgpu.into(),
            last_generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The vGPU's current placement.
    pub fn target(&self) -> Target {
        self.inner.current()
    }

    /// Address and token for a session opened now, and the attempt to report once it has
    /// opened ([`Attempt::opened`]) or could not ([`Follow::session_lost`]).
    pub fn endpoint(&self) -> (String, String, Attempt) {
        let t = self.inner.current();
        let attempt = Attempt {
            follow: self.clone(),
            host: t.host,
            generation: t.generation,
        };
        (t.address, t.token, attempt)
    }

    /// A session to the placement was lost or could not open (the host went away, the
    /// network broke, the backend refused it): `vgpu_connected` reads 0 until the next
    /// session opens ([`Attempt::opened`]).
    pub fn session_lost(&self) {
        netgpu_metrics::DataPath::global()
            .vgpu_connected
            .get_or_create(&self.labels())
            .set(0);
    }

    /// The same series for the vGPU's whole life, wherever it is placed (as the quota's,
    /// set in [`serve_metrics`]): a move does not leave a stale `connected` behind.
    fn labels(&self) -> netgpu_metrics::labels::Vgpu {
        netgpu_metrics::labels::Vgpu {
            vgpu: self.vgpu.clone(),
            Hostname: String::new(),
        }
    }
}

/// A session being opened to the placement a [`Follow::endpoint`] handed out.
#[derive(Debug)]
pub struct Attempt {
    follow: Follow,
    host: String,
    generation: u64,
}

impl Attempt {
    /// The session opened: the vGPU is attached to this placement (`vgpu_connected` 1, the
    /// attachment published to the pool), and a session that followed a move counts as a
    /// reconnect.
    pub fn opened(self) {
        let f = &self.follow;
        let before = f.last_generation.swap(self.generation, Ordering::AcqRel);
        if before != 0 && before != self.generation {
            info!(device = %f.vgpu, host = %self.host, generation = self.generation, "new sessions go to the vGPU's new placement");
            netgpu_metrics::DataPath::global()
                .vgpu_reconnects
                .get_or_create(&f.labels())
                .inc();
        }
        f.inner.connected(Some(&self.host), self.generation);
        netgpu_metrics::DataPath::global()
            .vgpu_connected
            .get_or_create(&f.labels())
            .set(1);
    }

    /// The session could not open.
    pub fn failed(self) {
        self.follow.session_lost();
    }
}

/// Serves `/metrics` on `addr` with the vGPU's quota set.
pub async fn serve_metrics(addr: SocketAddr, vgpu: &str, quota: u64) -> Result<(), Error> {
    netgpu_metrics::DataPath::global()
        .vgpu_memory_quota
        .get_or_create(&netgpu_metrics::labels::Vgpu {
            vgpu: vgpu.into(),
            Hostname: String::new(),
        })
        .set(quota.min(i64::MAX as u64) as i64);
    let bound = netgpu_metrics::serve(addr).await?;
    info!(device = %vgpu, %bound, "metrics on /metrics");
    Ok(())
}
