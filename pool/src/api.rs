//! The control plane's operations: what `netgpuctl` does, what the controller does, what a
//! backend's registration does. Each operation reads what it needs in one snapshot and writes
//! in one transaction whose compares name every record it read-modified (the host records
//! whose allocations change, the vGPU record), so concurrent operations never overcommit a GPU
//! or lose an update: a loser re-reads and decides again. Events are written in the same
//! transaction as the change they describe.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{self, keys, Allocation, Attachment, Event, Host, Placement, Pool, Vgpu};
use crate::placement::{self, Rejection};
use crate::store::{self, Compare, Kv, Op, Read, Store, TxnOutcome};

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{kind} {name:?} does not exist: {hint}")]
    NotFound {
        kind: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error("{kind} {name:?} already exists: {hint}")]
    Exists {
        kind: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error("invalid name {0:?}: use 1-63 characters of a-z, 0-9, '-', '.', '_', starting with a letter or digit")]
    Name(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NoCapacity(Rejection),
    #[error(
        "gave up after {0} attempts: the records kept changing under this operation; retry it"
    )]
    Contended(u32),
    #[error(
        "record {key} is not valid JSON for its kind ({source}): fix or delete it with etcdctl"
    )]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How often a read-decide-write cycle is retried when it loses a race.
const ATTEMPTS: u32 = 32;

/// The value of a host's liveness key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Alive {
    pub since_ms: u64,
    pub pid: u32,
}

/// A host with its liveness.
#[derive(Clone, Debug, Serialize)]
pub struct HostView {
    #[serde(flatten)]
    pub host: Host,
    pub up: bool,
    /// vGPUs whose vdev's backend session is on this host now (from their attachments).
    pub connected: Vec<String>,
}

/// Why a vGPU moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveReason {
    Operator,
    Drain,
    Failover,
}

impl MoveReason {
    fn event(self) -> &'static str {
        match self {
            MoveReason::Operator => "VgpuMoved",
            MoveReason::Drain => "VgpuDrained",
            MoveReason::Failover => "Failover",
        }
    }
}

/// Cluster summary for `netgpuctl status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub store: String,
    pub revision: i64,
    pub pools: usize,
    pub hosts: usize,
    pub hosts_up: usize,
    pub hosts_cordoned: usize,
    pub hosts_maintenance: usize,
    pub gpus: usize,
    pub memory_total: u64,
    pub memory_allocated: u64,
    pub vgpus: usize,
    pub vgpus_on_down_hosts: Vec<String>,
    pub vgpus_unplaced: Vec<String>,
    pub vgpus_attached: usize,
    pub controller: Option<String>,
}

/// Result of a drain.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DrainReport {
    pub moved: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &Kv) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::Corrupt {
        key: kv.key.clone(),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our records always serialize (plain structs, string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

/// The store op recording an event.
pub fn event_op(kind: &str, object: &str, message: impl Into<String>) -> Op {
    let ev = Event {
        time_ms: model::now_ms(),
        kind: kind.to_string(),
        object: object.to_string(),
        message: message.into(),
    };
    Op::put(
        format!(
            "{}{:016}-{:08x}",
            keys::EVENTS,
            ev.time_ms,
            rand::random::<u32>()
        ),
        encode(&ev),
    )
}

fn check_name(n: &str) -> Result<()> {
    if model::valid_name(n) {
        Ok(())
    } else {
        Err(Error::Name(n.to_string()))
    }
}

/// The hosts, vGPUs and liveness of one snapshot, decoded.
pub(crate) struct View {
    pub revision: i64,
    pub hosts: BTreeMap<String, (Arc<Host>, i64)>,
    pub alive: BTreeSet<String>,
}

fn random_token() -> String {
    let b: [u8; 24] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decoded host records by key, with the revision they were decoded at.
type DecodeCache = Arc<std::sync::Mutex<BTreeMap<String, (i64, Arc<Host>)>>>;

/// The control plane on one store.
#[derive(Clone)]
pub struct Control {
    store: Arc<dyn Store>,
    /// Decoded host records by key, with the revision they were decoded at: a snapshot
    /// re-decodes only the hosts that changed since (at 1 000 hosts decoding dominates a
    /// create otherwise).
    decoded: DecodeCache,
}

impl Control {
    pub fn new(store: Arc<dyn Store>) -> Control {
        Control {
            store,
            decoded: Arc::default(),
        }
    }

    fn decode_host(&self, kv: &Kv) -> Result<Arc<Host>> {
        if let Ok(cache) = self.decoded.lock() {
            if let Some((rev, h)) = cache.get(&kv.key) {
                if *rev == kv.mod_revision {
                    return Ok(Arc::clone(h));
                }
            }
        }
        let h: Arc<Host> = Arc::new(decode(kv)?);
        if let Ok(mut cache) = self.decoded.lock() {
            cache.insert(kv.key.clone(), (kv.mod_revision, Arc::clone(&h)));
        }
        Ok(h)
    }

    pub async fn open(url: &str) -> Result<Control> {
        Ok(Control::new(store::open(url).await?))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn backoff(attempt: u32) {
        let ms = 1 + rand::random::<u64>() % (2u64 << attempt.min(6));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    // ---- pools ----

    pub async fn create_pool(&self, pool: Pool) -> Result<Pool> {
        check_name(&pool.name)?;
        validate_pool(&pool)?;
        let key = keys::pool(&pool.name);
        let out = self
            .store
            .txn(
                &[Compare::Absent(key.clone())],
                &[
                    Op::put(key, encode(&pool)),
                    event_op("PoolCreated", &format!("pool/{}", pool.name), ""),
                ],
            )
            .await?;
        match out {
            TxnOutcome::Committed(_) => Ok(pool),
            TxnOutcome::Conflict => Err(Error::Exists {
                kind: "pool",
                name: pool.name,
                hint: "change it with netgpuctl pool set",
            }),
        }
    }

    pub async fn pool(&self, name: &str) -> Result<Pool> {
        match self.store.get(&keys::pool(name)).await? {
            Some(kv) => decode(&kv),
            None => Err(Error::NotFound {
                kind: "pool",
                name: name.into(),
                hint: "create it with netgpuctl pool create NAME, or list them with netgpuctl pool list",
            }),
        }
    }

    pub async fn pools(&self) -> Result<Vec<Pool>> {
        self.store
            .list(keys::POOLS)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Changes a pool with `f` (read, modify, compare-and-swap).
    pub async fn update_pool(&self, name: &str, mut f: impl FnMut(&mut Pool)) -> Result<Pool> {
        let key = keys::pool(name);
        for attempt in 0..ATTEMPTS {
            let kv = self.store.get(&key).await?.ok_or_else(|| Error::NotFound {
                kind: "pool",
                name: name.into(),
                hint: "create it with netgpuctl pool create NAME",
            })?;
            let mut p: Pool = decode(&kv)?;
            f(&mut p);
            p.name = name.to_string();
            validate_pool(&p)?;
            let out = self
                .store
                .txn(
                    &[Compare::ModRevision(key.clone(), kv.mod_revision)],
                    &[
                        Op::put(key.clone(), encode(&p)),
                        event_op("PoolChanged", &format!("pool/{name}"), ""),
                    ],
                )
                .await?;
            if out.committed() {
                return Ok(p);
            }
            Self::backoff(attempt).await;
        }
        Err(Error::Contended(ATTEMPTS))
    }

    // ---- hosts ----

    pub(crate) async fn view(&self, extra: &[Read]) -> Result<(View, Vec<Vec<Kv>>)> {
        let mut reads = vec![
            Read::Prefix(keys::HOSTS.into()),
            Read::Prefix(keys::ALIVE.into()),
        ];
        reads.extend_from_slice(extra);
        let mut snap = self.store.read(&reads).await?;
        let rest = snap.results.split_off(2);
        let mut hosts = BTreeMap::new();
        for kv in &snap.results[0] {
            let h = self.decode_host(kv)?;
            hosts.insert(h.name.clone(), (h, kv.mod_revision));
        }
        if let Ok(mut cache) = self.decoded.lock() {
            if cache.len() > hosts.len() {
                cache.retain(|k, _| {
                    k.strip_prefix(keys::HOSTS)
                        .is_some_and(|n| hosts.contains_key(n))
                });
            }
        }
        let alive = snap.results[1]
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(keys::ALIVE).map(str::to_string))
            .collect();
        Ok((
            View {
                revision: snap.revision,
                hosts,
                alive,
            },
            rest,
        ))
    }

    pub async fn hosts(&self) -> Result<Vec<HostView>> {
        let (v, rest) = self.view(&[Read::Prefix(keys::ATTACH.into())]).await?;
        let mut connected: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in &rest[0] {
            if let Ok(a) = decode::<Attachment>(kv) {
                if !a.connected_host.is_empty() {
                    connected.entry(a.connected_host).or_default().push(a.vgpu);
                }
            }
        }
        Ok(v.hosts
            .into_values()
            .map(|(h, _)| HostView {
                up: v.alive.contains(&h.name),
                connected: connected.remove(&h.name).unwrap_or_default(),
                host: Arc::unwrap_or_clone(h),
            })
            .collect())
    }

    pub async fn host(&self, name: &str) -> Result<HostView> {
        self.hosts()
            .await?
            .into_iter()
            .find(|h| h.host.name == name)
            .ok_or_else(|| Error::NotFound {
                kind: "host",
                name: name.into(),
                hint: "hosts appear when their netgpu-backend registers; see netgpuctl host list",
            })
    }

    /// Changes a host's operator state with `f`; `event` describes the change.
    pub async fn update_host(
        &self,
        name: &str,
        event: &str,
        mut f: impl FnMut(&mut Host),
    ) -> Result<Host> {
        let key = keys::host(name);
        for attempt in 0..ATTEMPTS {
            let kv = self.store.get(&key).await?.ok_or_else(|| Error::NotFound {
                kind: "host",
                name: name.into(),
                hint: "hosts appear when their netgpu-backend registers; see netgpuctl host list",
            })?;
            let mut h: Host = decode(&kv)?;
            f(&mut h);
            let out = self
                .store
                .txn(
                    &[Compare::ModRevision(key.clone(), kv.mod_revision)],
                    &[
                        Op::put(key.clone(), encode(&h)),
                        event_op(event, &format!("host/{name}"), ""),
                    ],
                )
                .await?;
            if out.committed() {
                return Ok(h);
            }
            Self::backoff(attempt).await;
        }
        Err(Error::Contended(ATTEMPTS))
    }

    /// Removes a host record (a decommissioned host); refused while vGPUs are placed on it.
    pub async fn remove_host(&self, name: &str) -> Result<()> {
        let key = keys::host(name);
        let kv = self.store.get(&key).await?.ok_or_else(|| Error::NotFound {
            kind: "host",
            name: name.into(),
            hint: "see netgpuctl host list",
        })?;
        let h: Host = decode(&kv)?;
        if !h.allocations.is_empty() {
            return Err(Error::Invalid(format!(
                "host {name} still has {} vGPU(s): drain it first (netgpuctl host drain {name})",
                h.allocations.len()
            )));
        }
        let out = self
            .store
            .txn(
                &[Compare::ModRevision(key.clone(), kv.mod_revision)],
                &[
                    Op::Delete(key),
                    event_op("HostRemoved", &format!("host/{name}"), ""),
                ],
            )
            .await?;
        if out.committed() {
            Ok(())
        } else {
            Err(Error::Contended(1))
        }
    }

    /// A backend's registration: writes what the backend reports (address, GPUs, labels,
    /// zone, executor, version), keeps the operator state and allocations, and puts the
    /// liveness key bound to `lease`.
    pub async fn register_host(&self, reported: &Host, lease: store::LeaseId) -> Result<Host> {
        check_name(&reported.name)?;
        let key = keys::host(&reported.name);
        let alive = Alive {
            since_ms: model::now_ms(),
            pid: std::process::id(),
        };
        for attempt in 0..ATTEMPTS {
            let existing = self.store.get(&key).await?;
            let (mut h, cmp) = match &existing {
                Some(kv) => (
                    decode::<Host>(kv)?,
                    Compare::ModRevision(key.clone(), kv.mod_revision),
                ),
                None => (Host::default(), Compare::Absent(key.clone())),
            };
            let fresh = existing.is_none();
            h.name = reported.name.clone();
            h.address = reported.address.clone();
            h.zone = reported.zone.clone();
            h.labels = reported.labels.clone();
            h.taints = reported.taints.clone();
            h.executor = reported.executor.clone();
            h.version = reported.version.clone();
            h.gpus = reported.gpus.clone();
            h.registered_at = model::now_s();
            let ops = vec![
                Op::put(key.clone(), encode(&h)),
                Op::Put {
                    key: keys::alive(&h.name),
                    value: encode(&alive),
                    lease: Some(lease),
                },
                event_op(
                    if fresh { "HostRegistered" } else { "HostUp" },
                    &format!("host/{}", h.name),
                    format!(
                        "{} at {}, {} GPU(s), {}",
                        h.executor,
                        h.address,
                        h.gpus.len(),
                        crate::fmt_size(h.total_memory())
                    ),
                ),
            ];
            if self.store.txn(&[cmp], &ops).await?.committed() {
                return Ok(h);
            }
            Self::backoff(attempt).await;
        }
        Err(Error::Contended(ATTEMPTS))
    }

    // ---- vGPUs ----

    pub async fn vgpu(&self, name: &str) -> Result<Vgpu> {
        match self.store.get(&keys::vgpu(name)).await? {
            Some(kv) => decode(&kv),
            None => Err(not_found_vgpu(name)),
        }
    }

    pub async fn vgpus(&self) -> Result<Vec<Vgpu>> {
        self.store
            .list(keys::VGPUS)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    pub async fn attachments(&self) -> Result<Vec<Attachment>> {
        self.store
            .list(keys::ATTACH)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Creates a vGPU and places it. `spec.name`, `vm`, `pool`, `memory` and the constraints
    /// come from the caller; the token and placement are made here.
    pub async fn create_vgpu(&self, mut spec: Vgpu) -> Result<Vgpu> {
        check_name(&spec.name)?;
        if spec.memory == 0 {
            return Err(Error::Invalid(
                "a vGPU needs a memory size: pass --memory, e.g. --memory 16GiB".into(),
            ));
        }
        if spec.vm.is_empty() {
            spec.vm = spec.name.clone();
        }
        spec.token = random_token();
        spec.created_at = model::now_s();
        let vkey = keys::vgpu(&spec.name);
        let mut seen: Option<(View, Vec<Vec<Kv>>)> = None;
        for attempt in 0..ATTEMPTS {
            let (view, rest) = match seen.take() {
                Some(v) => v,
                None => {
                    self.view(&[Read::Key(keys::pool(&spec.pool)), Read::Key(vkey.clone())])
                        .await?
                }
            };
            if !rest[1].is_empty() {
                return Err(Error::Exists {
                    kind: "vGPU",
                    name: spec.name,
                    hint:
                        "pick another name (--name), or delete it first with netgpuctl vgpu delete",
                });
            }
            let pool: Pool = match rest[0].first() {
                Some(kv) => decode(kv)?,
                None => {
                    return Err(Error::NotFound {
                        kind: "pool",
                        name: spec.pool,
                        hint: "create it with netgpuctl pool create NAME, or list them with netgpuctl pool list",
                    })
                }
            };
            let choice = placement::place(
                &placement::Request {
                    pool: &pool,
                    vgpu: &spec,
                    alive: &view.alive,
                    exclude: None,
                    among: if attempt == 0 { 1 } else { 8 },
                },
                view.hosts.values().map(|(h, _)| &**h),
            );
            let choice = match choice {
                Ok(c) => c,
                Err(r) => {
                    crate::metrics::placement_failed(r.main_reason());
                    return Err(Error::NoCapacity(r));
                }
            };
            let Some((host, hrev)) = view.hosts.get(&choice.host) else {
                continue;
            };
            let mut host = Host::clone(host);
            host.allocations.insert(
                spec.name.clone(),
                Allocation {
                    gpu: choice.gpu,
                    memory: spec.memory,
                },
            );
            let mut v = spec.clone();
            v.placement = Some(Placement {
                host: host.name.clone(),
                gpu: choice.gpu,
                address: host.address.clone(),
                generation: 1,
                since: model::now_s(),
            });
            let out = self
                .store
                .txn(
                    &[
                        Compare::ModRevision(keys::host(&host.name), *hrev),
                        Compare::Absent(vkey.clone()),
                    ],
                    &[
                        Op::put(keys::host(&host.name), encode(&host)),
                        Op::put(vkey.clone(), encode(&v)),
                        event_op(
                            "VgpuCreated",
                            &format!("vgpu/{}", v.name),
                            format!(
                                "{} on {} GPU {} (pool {}, VM {})",
                                crate::fmt_size(v.memory),
                                host.name,
                                choice.gpu,
                                v.pool,
                                v.vm
                            ),
                        ),
                    ],
                )
                .await?;
            if out.committed() {
                return Ok(v);
            }
            // Lost a race: another placement changed this host (or created this name).
            // Re-read just that host, its liveness and the name, and decide again with the
            // rest of the snapshot: one round trip instead of every host record.
            let hkey = keys::host(&host.name);
            let fresh = self
                .store
                .read(&[
                    Read::Key(hkey),
                    Read::Key(keys::alive(&host.name)),
                    Read::Key(vkey.clone()),
                ])
                .await?;
            let mut view = view;
            let mut rest = rest;
            match fresh.results[0].first() {
                Some(kv) => {
                    let h = self.decode_host(kv)?;
                    view.hosts.insert(h.name.clone(), (h, kv.mod_revision));
                }
                None => {
                    view.hosts.remove(&host.name);
                }
            }
            if fresh.results[1].is_empty() {
                view.alive.remove(&host.name);
            }
            rest[1] = fresh.results[2].clone();
            // Every fourth attempt re-reads everything (the rest of the snapshot ages too).
            if attempt % 4 != 3 {
                seen = Some((view, rest));
            }
            Self::backoff(attempt).await;
        }
        Err(Error::Contended(ATTEMPTS))
    }

    /// Deletes a vGPU and gives its memory back to its host.
    pub async fn delete_vgpu(&self, name: &str) -> Result<Vgpu> {
        let vkey = keys::vgpu(name);
        for attempt in 0..ATTEMPTS {
            let (view, rest) = self.view(&[Read::Key(vkey.clone())]).await?;
            let Some(vkv) = rest[0].first() else {
                return Err(not_found_vgpu(name));
            };
            let v: Vgpu = decode(vkv)?;
            let mut cmps = vec![Compare::ModRevision(vkey.clone(), vkv.mod_revision)];
            let mut ops = vec![Op::Delete(vkey.clone())];
            if let Some((h, hrev)) = v.placement.as_ref().and_then(|p| view.hosts.get(&p.host)) {
                let mut h = Host::clone(h);
                if h.allocations.remove(name).is_some() {
                    cmps.push(Compare::ModRevision(keys::host(&h.name), *hrev));
                    ops.push(Op::put(keys::host(&h.name), encode(&h)));
                }
            }
            // A host record may also hold a stale allocation for this name elsewhere.
            for (h, hrev) in view.hosts.values() {
                if h.allocations.contains_key(name)
                    && v.placement.as_ref().is_none_or(|p| p.host != h.name)
                {
                    let mut h = Host::clone(h);
                    h.allocations.remove(name);
                    cmps.push(Compare::ModRevision(keys::host(&h.name), *hrev));
                    ops.push(Op::put(keys::host(&h.name), encode(&h)));
                }
            }
            ops.push(event_op(
                "VgpuDeleted",
                &format!("vgpu/{name}"),
                crate::fmt_size(v.memory),
            ));
            if self.store.txn(&cmps, &ops).await?.committed() {
                return Ok(v);
            }
            Self::backoff(attempt).await;
        }
        Err(Error::Contended(ATTEMPTS))
    }

    /// Moves a vGPU to `to` (checked against every filter) or to the best other host. Its
    /// memory moves in the same transaction; the vdev serving it follows at the guest's next
    /// device reset (or at once when its backend is gone).
    pub async fn move_vgpu(&self, name: &str, to: Option<&str>, why: MoveReason) -> Result<Vgpu> {
        let vkey = keys::vgpu(name);
        for attempt in 0..ATTEMPTS {
            let (view, rest) = self.view(&[Read::Key(vkey.clone())]).await?;
            let Some(vkv) = rest[0].first() else {
                return Err(not_found_vgpu(name));
            };
            let v: Vgpu = decode(vkv)?;
            let pool = self.pool(&v.pool).await?;
            let from = v.placement.as_ref().map(|p| p.host.clone());
            if let (Some(t), Some(f)) = (to, &from) {
                if t == f {
                    return Err(Error::Invalid(format!("vGPU {name} is already on {t}")));
                }
            }
            let candidates: Vec<&Host> = view
                .hosts
                .values()
                .map(|(h, _)| &**h)
                .filter(|h| to.is_none_or(|t| t == h.name))
                .collect();
            if let Some(t) = to {
                if candidates.is_empty() {
                    return Err(Error::NotFound {
                        kind: "host",
                        name: t.into(),
                        hint: "see netgpuctl host list",
                    });
                }
            }
            let choice = placement::place(
                &placement::Request {
                    pool: &pool,
                    vgpu: &v,
                    alive: &view.alive,
                    exclude: from.as_deref(),
                    among: if attempt == 0 { 1 } else { 8 },
                },
                candidates,
            )
            .map_err(|r| {
                crate::metrics::placement_failed(r.main_reason());
                Error::NoCapacity(r)
            })?;
            let Some((target, trev)) = view.hosts.get(&choice.host) else {
                continue;
            };
            let mut target = Host::clone(target);
            target.allocations.insert(
                name.to_string(),
                Allocation {
                    gpu: choice.gpu,
                    memory: v.memory,
                },
            );
            let mut cmps = vec![
                Compare::ModRevision(vkey.clone(), vkv.mod_revision),
                Compare::ModRevision(keys::host(&target.name), *trev),
            ];
            let mut ops = vec![Op::put(keys::host(&target.name), encode(&target))];
            if let Some((old, orev)) = from.as_ref().and_then(|f| view.hosts.get(f)) {
                let mut old = Host::clone(old);
                old.allocations.remove(name);
                cmps.push(Compare::ModRevision(keys::host(&old.name), *orev));
                ops.push(Op::put(keys::host(&old.name), encode(&old)));
            }
            let mut nv = v.clone();
            let generation = v.placement.as_ref().map_or(0, |p| p.generation) + 1;
            nv.placement = Some(Placement {
                host: target.name.clone(),
                gpu: choice.gpu,
                address: target.address.clone(),
                generation,
                since: model::now_s(),
            });
            ops.push(Op::put(vkey.clone(), encode(&nv)));
            ops.push(event_op(
                why.event(),
                &format!("vgpu/{name}"),
                format!(
                    "{} -> {} GPU {}",
                    from.as_deref().unwrap_or("(none)"),
                    target.name,
                    choice.gpu
                ),
            ));
            if self.store.txn(&cmps, &ops).await?.committed() {
                if why == MoveReason::Failover {
                    crate::metrics::failover();
                }
                return Ok(nv);
            }
            Self::backoff(attempt).await;
        }
        Err(Error::Contended(ATTEMPTS))
    }

    /// Cordons a host, marks it draining and moves every vGPU off it. vGPUs that fit nowhere
    /// stay and are reported; running them continues on the draining host.
    pub async fn drain_host(&self, name: &str) -> Result<DrainReport> {
        let h = self
            .update_host(name, "HostDraining", |h| {
                h.cordoned = true;
                h.draining = true;
            })
            .await?;
        let mut report = DrainReport::default();
        for v in h.allocations.keys() {
            match self.move_vgpu(v, None, MoveReason::Drain).await {
                Ok(nv) => report
                    .moved
                    .push((v.clone(), nv.placement.map(|p| p.host).unwrap_or_default())),
                Err(e) => report.failed.push((v.clone(), e.to_string())),
            }
        }
        Ok(report)
    }

    // ---- events and status ----

    /// Events newer than `since_ms`, oldest first, at most `limit` (the newest ones).
    pub async fn events(&self, since_ms: u64, limit: usize) -> Result<Vec<Event>> {
        let kvs = self.store.list(keys::EVENTS).await?;
        let evs: Vec<Event> = kvs
            .iter()
            .filter_map(|kv| decode::<Event>(kv).ok())
            .filter(|e| e.time_ms > since_ms)
            .collect();
        let skip = evs.len().saturating_sub(limit);
        Ok(evs.into_iter().skip(skip).collect())
    }

    /// Deletes all but the newest `keep` events.
    pub async fn prune_events(&self, keep: usize) -> Result<usize> {
        let kvs = self.store.list(keys::EVENTS).await?;
        let n = kvs.len().saturating_sub(keep);
        for chunk in kvs[..n].chunks(64) {
            let ops: Vec<Op> = chunk.iter().map(|kv| Op::Delete(kv.key.clone())).collect();
            self.store.txn(&[], &ops).await?;
        }
        Ok(n)
    }

    pub async fn status(&self) -> Result<Status> {
        let (view, rest) = self
            .view(&[
                Read::Prefix(keys::VGPUS.into()),
                Read::Prefix(keys::POOLS.into()),
                Read::Prefix(keys::ATTACH.into()),
                Read::Key(keys::LEADER.into()),
            ])
            .await?;
        let mut s = Status {
            store: self.store.describe(),
            revision: view.revision,
            pools: rest[1].len(),
            hosts: view.hosts.len(),
            vgpus: rest[0].len(),
            vgpus_attached: rest[2].len(),
            controller: rest[3]
                .first()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            ..Status::default()
        };
        for (h, _) in view.hosts.values() {
            s.hosts_up += usize::from(view.alive.contains(&h.name));
            s.hosts_cordoned += usize::from(h.cordoned || h.draining);
            s.hosts_maintenance += usize::from(h.maintenance);
            s.gpus += h.gpus.len();
            s.memory_total = s.memory_total.saturating_add(h.total_memory());
            s.memory_allocated = s.memory_allocated.saturating_add(h.allocated_total());
        }
        for kv in &rest[0] {
            let v: Vgpu = decode(kv)?;
            match &v.placement {
                None => s.vgpus_unplaced.push(v.name),
                Some(p) if !view.alive.contains(&p.host) => s.vgpus_on_down_hosts.push(v.name),
                Some(_) => {}
            }
        }
        Ok(s)
    }
}

fn not_found_vgpu(name: &str) -> Error {
    Error::NotFound {
        kind: "vGPU",
        name: name.into(),
        hint: "list them with netgpuctl vgpu list, or create it with netgpuctl vgpu create VM --pool POOL --memory SIZE",
    }
}

fn validate_pool(p: &Pool) -> Result<()> {
    if !(p.oversubscription.is_finite() && (1.0..=16.0).contains(&p.oversubscription)) {
        return Err(Error::Invalid(format!(
            "oversubscription must be between 1.0 (none) and 16, got {}",
            p.oversubscription
        )));
    }
    if p.failover_grace_s == 0 {
        return Err(Error::Invalid(
            "failover grace must be at least 1 second (it is what keeps a short network blip from moving vGPUs)".into(),
        ));
    }
    Ok(())
}
