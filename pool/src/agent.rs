//! What the data path runs against the store:
//!
//! - [`HostAgent`] (in `netgpu-backend`): registers the host with its GPUs, keeps its liveness
//!   lease, re-registers after a lost lease (an etcd outage longer than the TTL), revokes the
//!   lease on shutdown, and publishes the vGPUs placed on this host (their tokens and quotas)
//!   so the backend admits exactly those.
//! - [`VgpuFollower`] (in `netgpu-vdev --vgpu NAME --store URL`): resolves the vGPU to its
//!   backend address, token and quota, follows its placement as it changes (moves, failover),
//!   and writes the vGPU's attachment (which host vdev is connected to), bound to vdev's own
//!   lease.
//!
//! Both keep working from what they last read when the store is unreachable: losing etcd
//! leaves running VMs and backends as they are; they catch up when it returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::{self, Control};
use crate::model::{self, keys, Attachment, Host, Vgpu};
use crate::store::{self, LeaseId, Op, Read};

/// A vGPU the backend must admit: its token, quota and owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub vgpu: String,
    pub tenant: String,
    pub memory: u64,
}

/// Tokens of the vGPUs placed on a host.
pub type Grants = BTreeMap<String, Grant>;

/// Registration and liveness of one GPU host.
pub struct HostAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    grants: watch::Receiver<Grants>,
    registered: watch::Receiver<bool>,
}

impl HostAgent {
    /// Starts registering `reported` with a lease of `ttl`; returns at once (the store may be
    /// unreachable: the agent keeps trying, the backend serves meanwhile).
    pub fn start(ctl: Control, reported: Host, ttl: Duration) -> HostAgent {
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let (grants_tx, grants) = watch::channel(Grants::new());
        let (reg_tx, registered) = watch::channel(false);
        let name = reported.name.clone();
        let task = tokio::spawn(async move {
            let mut lease: Option<LeaseId> = None;
            let mut vgpus_rev = 0;
            let mut watch: Option<store::Watch> = None;
            let renew = (ttl / 3).max(Duration::from_millis(200));
            loop {
                // 1. Hold a lease and a registration.
                if let Some(l) = lease {
                    match ctl.store().keep_alive(l).await {
                        Ok(()) => {}
                        Err(store::Error::NoLease(_)) => {
                            warn!(host = %name, "liveness lease expired; registering again");
                            lease = None;
                        }
                        // Transient: the lease may well be alive; renew again next turn.
                        Err(e) => debug!(host = %name, error = %e, "lease renewal failed"),
                    }
                }
                if lease.is_none() {
                    match register(&ctl, &reported, ttl).await {
                        Ok(l) => {
                            info!(host = %name, store = %ctl.store().describe(), "registered in the pool");
                            lease = Some(l);
                        }
                        Err(e) => {
                            warn!(host = %name, error = %e, "cannot register in the pool; retrying")
                        }
                    }
                }
                let _ = reg_tx.send(lease.is_some());
                // 2. Refresh the grants when vGPUs changed (or the watch was lost).
                let changed = match &mut watch {
                    Some(w) => {
                        let mut any = false;
                        while let Ok(r) = w.try_recv() {
                            vgpus_rev = vgpus_rev.max(r);
                            any = true;
                        }
                        any || w.is_closed()
                    }
                    None => true,
                };
                if changed {
                    match grants_for(&ctl, &name).await {
                        Ok((g, rev)) => {
                            grants_tx.send_if_modified(|cur| {
                                if *cur != g {
                                    *cur = g;
                                    true
                                } else {
                                    false
                                }
                            });
                            vgpus_rev = rev;
                            watch = ctl.store().watch(keys::VGPUS, vgpus_rev).await.ok();
                        }
                        Err(e) => {
                            debug!(host = %name, error = %e, "cannot read vGPUs; keeping the last grants");
                            watch = None;
                        }
                    }
                }
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(renew) => {}
                    Some(r) = async { match &mut watch { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                        vgpus_rev = vgpus_rev.max(r);
                        // Re-read on the next turn.
                        watch = None;
                        continue;
                    }
                }
            }
            if let Some(l) = lease {
                let _ = ctl.store().revoke(l).await;
                info!(host = %name, "left the pool (lease revoked)");
            }
        });
        HostAgent {
            stop: Some(stop_tx),
            task: Some(task),
            grants,
            registered,
        }
    }

    /// The vGPUs placed on this host, kept current.
    pub fn grants(&self) -> watch::Receiver<Grants> {
        self.grants.clone()
    }

    /// True while registered with a live lease.
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.registered.clone()
    }

    /// Revokes the lease (the host shows down at once) and stops.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn register(ctl: &Control, reported: &Host, ttl: Duration) -> api::Result<LeaseId> {
    let l = ctl.store().grant_lease(ttl).await?;
    match ctl.register_host(reported, l).await {
        Ok(_) => Ok(l),
        Err(e) => {
            let _ = ctl.store().revoke(l).await;
            Err(e)
        }
    }
}

async fn grants_for(ctl: &Control, host: &str) -> api::Result<(Grants, i64)> {
    let snap = ctl
        .store()
        .read(&[Read::Prefix(keys::VGPUS.into())])
        .await?;
    let mut g = Grants::new();
    for kv in snap.results.first().into_iter().flatten() {
        let Ok(v) = api::decode::<Vgpu>(kv) else {
            continue;
        };
        if v.placement.as_ref().is_some_and(|p| p.host == host) && !v.token.is_empty() {
            g.insert(
                v.token.clone(),
                Grant {
                    vgpu: v.name.clone(),
                    tenant: v.tenant.clone(),
                    memory: v.memory,
                },
            );
        }
    }
    Ok((g, snap.revision))
}

/// Where vdev should connect for its vGPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub vgpu: String,
    pub host: String,
    /// HOST:PORT of the host's backend (from the host record, so a re-registered address is
    /// followed).
    pub address: String,
    pub token: String,
    /// Device memory quota, bytes.
    pub memory: u64,
    pub tenant: String,
    pub generation: u64,
}

/// Follows one vGPU's placement for vdev.
#[derive(Clone)]
pub struct VgpuFollower {
    target: watch::Receiver<Target>,
    attach: Arc<Mutex<Attachment>>,
    attach_tx: tokio::sync::mpsc::Sender<()>,
}

impl VgpuFollower {
    /// Resolves `name` once (an error if it does not exist, is not placed, or the store is
    /// unreachable: vdev cannot start without knowing where its GPU is), then follows it in a
    /// background task on the current runtime.
    pub async fn start(ctl: Control, name: &str) -> api::Result<VgpuFollower> {
        let (first, _rev) = resolve(&ctl, name).await?;
        let (tx, target) = watch::channel(first.clone());
        let attach = Arc::new(Mutex::new(Attachment {
            vgpu: name.to_string(),
            hypervisor: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            connected_host: String::new(),
            generation: first.generation,
            since: model::now_s(),
        }));
        let (attach_tx, mut attach_rx) = tokio::sync::mpsc::channel::<()>(4);
        let name = name.to_string();
        let a2 = Arc::clone(&attach);
        tokio::spawn(async move {
            let mut lease: Option<LeaseId> = None;
            let mut watch_v: Option<store::Watch> = None;
            let mut watch_h: Option<store::Watch> = None;
            let mut dirty = true;
            loop {
                // Follow the record.
                if watch_v.is_none() || watch_h.is_none() || dirty {
                    match resolve(&ctl, &name).await {
                        Ok((t, rev)) => {
                            let host = t.host.clone();
                            tx.send_if_modified(|cur| {
                                if *cur != t {
                                    info!(vgpu = %name, host = %t.host, address = %t.address, generation = t.generation, "vGPU placement");
                                    *cur = t;
                                    true
                                } else {
                                    false
                                }
                            });
                            watch_v = ctl.store().watch(&keys::vgpu(&name), rev).await.ok();
                            watch_h = ctl.store().watch(&keys::host(&host), rev).await.ok();
                        }
                        Err(e) => {
                            debug!(vgpu = %name, error = %e, "cannot read the vGPU record; keeping the last placement");
                            watch_v = None;
                        }
                    }
                }
                // Publish the attachment under our own lease.
                let rec = a2.lock().map(|a| a.clone()).unwrap_or_default();
                match publish(&ctl, &mut lease, &rec).await {
                    Ok(()) => {}
                    Err(e) => debug!(vgpu = %name, error = %e, "cannot write the attachment"),
                }
                dirty = false;
                let recv = |w: &mut Option<store::Watch>| {
                    let w = w.take();
                    async move {
                        match w {
                            Some(mut w) => w.recv().await.map(|_| w),
                            None => std::future::pending().await,
                        }
                    }
                };
                let retry = if watch_v.is_none() {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(3)
                };
                tokio::select! {
                    r = recv(&mut watch_v) => { watch_v = r; dirty = true; }
                    r = recv(&mut watch_h) => { watch_h = r; dirty = true; }
                    m = attach_rx.recv() => if m.is_none() { break },
                    _ = tokio::time::sleep(retry) => {}
                }
            }
            if let Some(l) = lease {
                let _ = ctl.store().revoke(l).await;
            }
        });
        Ok(VgpuFollower {
            target,
            attach,
            attach_tx,
        })
    }

    /// The current target.
    pub fn current(&self) -> Target {
        self.target.borrow().clone()
    }

    /// Changes of the target.
    pub fn changes(&self) -> watch::Receiver<Target> {
        self.target.clone()
    }

    /// Records which host vdev's backend session is on (`None`: not connected).
    pub fn connected(&self, host: Option<&str>, generation: u64) {
        if let Ok(mut a) = self.attach.lock() {
            a.connected_host = host.unwrap_or_default().to_string();
            a.generation = generation;
            a.since = model::now_s();
        }
        let _ = self.attach_tx.try_send(());
    }
}

const ATTACH_TTL: Duration = Duration::from_secs(15);

async fn publish(
    ctl: &Control,
    lease: &mut Option<LeaseId>,
    rec: &Attachment,
) -> store::Result<()> {
    let s = ctl.store();
    if let Some(l) = *lease {
        if let Err(e) = s.keep_alive(l).await {
            *lease = None;
            if !matches!(e, store::Error::NoLease(_)) {
                return Err(e);
            }
        }
    }
    let l = match *lease {
        Some(l) => l,
        None => {
            let l = s.grant_lease(ATTACH_TTL).await?;
            *lease = Some(l);
            l
        }
    };
    let value = serde_json::to_vec(rec).unwrap_or_default();
    s.txn(
        &[],
        &[Op::Put {
            key: keys::attach(&rec.vgpu),
            value,
            lease: Some(l),
        }],
    )
    .await?;
    Ok(())
}

async fn resolve(ctl: &Control, name: &str) -> api::Result<(Target, i64)> {
    let snap = ctl.store().read(&[Read::Key(keys::vgpu(name))]).await?;
    let Some(kv) = snap.results.first().and_then(|r| r.first()) else {
        return Err(api::Error::NotFound {
            kind: "vGPU",
            name: name.into(),
            hint: "create it first: netgpuctl vgpu create VM --pool POOL --memory SIZE",
        });
    };
    let v: Vgpu = api::decode(kv)?;
    let Some(p) = v.placement.clone() else {
        return Err(api::Error::Invalid(format!(
            "vGPU {name} is not placed on any host (no capacity after a failover): see netgpuctl vgpu show {name}"
        )));
    };
    // The host's current address (a backend may have re-registered elsewhere).
    let address = match ctl.store().get(&keys::host(&p.host)).await? {
        Some(hkv) => api::decode::<Host>(&hkv)
            .map(|h| h.address)
            .unwrap_or(p.address.clone()),
        None => p.address.clone(),
    };
    Ok((
        Target {
            vgpu: v.name,
            host: p.host,
            address,
            token: v.token,
            memory: v.memory,
            tenant: v.tenant,
            generation: p.generation,
        },
        snap.revision,
    ))
}
