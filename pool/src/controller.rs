//! The failover controller: re-places the vGPUs of hosts whose lease has expired.
//!
//! Any number of controllers may run (`netgpuctl controller`, one per hypervisor or a few per
//! site); one leads at a time: leadership is a key created only if absent and bound to the
//! leader's lease (etcd's usual primitive, no consensus of our own). A leader that loses its
//! lease, or cannot reach the store, stops acting and forgets what it observed.
//!
//! Each round (every `interval`) the leader reads hosts, liveness, pools and vGPUs in one
//! snapshot, and:
//! - notes when it first saw each host down; a host that comes back is forgotten, so a blip
//!   shorter than the grace period moves nothing;
//! - for every vGPU on a host down for at least its pool's `failover_grace_s`, moves it to
//!   another host (the same transaction as `netgpuctl vgpu move`); the vGPU's vdev follows the
//!   new placement at its next reconnect. A host that returns later does not get its vGPUs
//!   back (no flapping); hosts in maintenance keep theirs (failover suppressed);
//! - places vGPUs that have no placement (a failover that found no capacity before);
//! - refreshes the pool metrics, and every few minutes prunes old events.
//!
//! The controller's clock is its own monotonic one: store time and other machines' clocks play
//! no part in the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::api::{self, event_op, Control, MoveReason};
use crate::model::{keys, Host, Pool, Vgpu};
use crate::placement;
use crate::store::{self, Compare, LeaseId, Op, Read};

#[derive(Clone, Debug)]
pub struct Config {
    /// Time between rounds.
    pub interval: Duration,
    /// TTL of the leadership lease.
    pub leader_ttl: Duration,
    /// Names this controller in the leadership key and in events.
    pub id: String,
    /// Events kept by pruning.
    pub keep_events: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(1),
            leader_ttl: Duration::from_secs(10),
            id: format!(
                "{}:{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "controller".into()),
                std::process::id()
            ),
            keep_events: 10_000,
        }
    }
}

/// What one round did (for tests and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub leader: bool,
    /// (vGPU, from, to)
    pub moved: Vec<(String, String, String)>,
    /// vGPUs due for failover that found no host.
    pub stuck: Vec<String>,
    /// Hosts down but in maintenance.
    pub suppressed: Vec<String>,
}

pub struct Controller {
    ctl: Control,
    cfg: Config,
    lease: Option<LeaseId>,
    down_since: BTreeMap<String, Instant>,
    reported: BTreeMap<String, Instant>,
    rounds: u64,
}

impl Controller {
    pub fn new(ctl: Control, cfg: Config) -> Controller {
        Controller {
            ctl,
            cfg,
            lease: None,
            down_since: BTreeMap::new(),
            reported: BTreeMap::new(),
            rounds: 0,
        }
    }

    /// Runs rounds until `stop` completes, then gives up leadership.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            match self.round().await {
                Ok(r) => {
                    for (v, from, to) in &r.moved {
                        info!(vgpu = %v, %from, %to, "failover: vGPU re-placed");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "controller round failed; observations reset");
                    self.forget();
                }
            }
        }
        if let Some(l) = self.lease.take() {
            let _ = self.ctl.store().revoke(l).await;
        }
        crate::metrics::get().leader.set(0);
    }

    fn forget(&mut self) {
        self.down_since.clear();
        if self.lease.take().is_some() {
            crate::metrics::get().leader.set(0);
        }
    }

    /// Holds or tries to take leadership; true while leading.
    async fn lead(&mut self) -> store::Result<bool> {
        let s = std::sync::Arc::clone(self.ctl.store());
        if let Some(l) = self.lease {
            match s.keep_alive(l).await {
                Ok(()) => {
                    // Still ours? (An operator may have deleted the key.)
                    if let Some(kv) = s.get(keys::LEADER).await? {
                        if kv.lease == l {
                            return Ok(true);
                        }
                    }
                    let _ = s.revoke(l).await;
                    self.forget();
                }
                Err(store::Error::NoLease(_)) => self.forget(),
                Err(e) => return Err(e),
            }
        }
        let l = s.grant_lease(self.cfg.leader_ttl).await?;
        let won = s
            .txn(
                &[Compare::Absent(keys::LEADER.into())],
                &[
                    Op::Put {
                        key: keys::LEADER.into(),
                        value: self.cfg.id.clone().into_bytes(),
                        lease: Some(l),
                    },
                    event_op("ControllerLeader", "controller", self.cfg.id.clone()),
                ],
            )
            .await?
            .committed();
        if won {
            info!(id = %self.cfg.id, "controller: leading");
            self.lease = Some(l);
            self.down_since.clear();
            crate::metrics::get().leader.set(1);
        } else {
            let _ = s.revoke(l).await;
        }
        Ok(won)
    }

    /// One round. Public so tests can drive the controller step by step.
    pub async fn round(&mut self) -> api::Result<Round> {
        let mut out = Round::default();
        if !self.lead().await? {
            return Ok(out);
        }
        out.leader = true;
        self.rounds += 1;
        let now = Instant::now();
        let (view, rest) = self
            .ctl
            .view(&[
                Read::Prefix(keys::POOLS.into()),
                Read::Prefix(keys::VGPUS.into()),
            ])
            .await?;
        let pools: BTreeMap<String, Pool> = rest[0]
            .iter()
            .filter_map(|kv| api::decode::<Pool>(kv).ok())
            .map(|p| (p.name.clone(), p))
            .collect();
        let vgpus: Vec<Vgpu> = rest[1]
            .iter()
            .filter_map(|kv| api::decode::<Vgpu>(kv).ok())
            .collect();
        for name in view.hosts.keys() {
            if view.alive.contains(name) {
                self.down_since.remove(name);
            } else {
                self.down_since.entry(name.clone()).or_insert(now);
            }
        }
        self.down_since.retain(|h, _| view.hosts.contains_key(h));
        update_gauges(&view.hosts, &view.alive, &pools, &vgpus);

        let mut suppressed = BTreeSet::new();
        for v in &vgpus {
            let grace = pools.get(&v.pool).map_or(30, |p| p.failover_grace_s).max(1);
            let due = match &v.placement {
                None => true,
                Some(p) => match view.hosts.get(&p.host) {
                    None => true, // host record removed
                    Some((h, _)) if h.maintenance && !view.alive.contains(&h.name) => {
                        suppressed.insert(h.name.clone());
                        false
                    }
                    Some(_) => self
                        .down_since
                        .get(&p.host)
                        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(grace)),
                },
            };
            if !due {
                continue;
            }
            let from = v
                .placement
                .as_ref()
                .map_or_else(String::new, |p| p.host.clone());
            match self
                .ctl
                .move_vgpu(&v.name, None, MoveReason::Failover)
                .await
            {
                Ok(nv) => {
                    self.reported.remove(&v.name);
                    out.moved.push((
                        v.name.clone(),
                        from,
                        nv.placement.map(|p| p.host).unwrap_or_default(),
                    ));
                }
                Err(api::Error::NoCapacity(r)) => {
                    out.stuck.push(v.name.clone());
                    let quiet = self
                        .reported
                        .get(&v.name)
                        .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60));
                    if !quiet {
                        self.reported.insert(v.name.clone(), now);
                        warn!(vgpu = %v.name, reason = %r, "failover found no host");
                        let _ = self
                            .ctl
                            .store()
                            .txn(
                                &[],
                                &[event_op(
                                    "FailoverFailed",
                                    &format!("vgpu/{}", v.name),
                                    r.to_string(),
                                )],
                            )
                            .await;
                    }
                }
                Err(api::Error::Store(e)) => return Err(api::Error::Store(e)),
                Err(e) => warn!(vgpu = %v.name, error = %e, "failover failed"),
            }
        }
        for h in &suppressed {
            let quiet = self
                .reported
                .get(&format!("host/{h}"))
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(300));
            if !quiet {
                self.reported.insert(format!("host/{h}"), now);
                let _ = self
                    .ctl
                    .store()
                    .txn(
                        &[],
                        &[event_op(
                            "FailoverSuppressed",
                            &format!("host/{h}"),
                            "host is down in maintenance: its vGPUs wait for it",
                        )],
                    )
                    .await;
            }
        }
        out.suppressed = suppressed.into_iter().collect();
        if self.rounds % 300 == 1 {
            let _ = self.ctl.prune_events(self.cfg.keep_events).await;
        }
        Ok(out)
    }
}

fn update_gauges(
    hosts: &BTreeMap<String, (std::sync::Arc<Host>, i64)>,
    alive: &BTreeSet<String>,
    pools: &BTreeMap<String, Pool>,
    vgpus: &[Vgpu],
) {
    let m = crate::metrics::get();
    m.hosts.set(hosts.len() as i64);
    m.hosts_up
        .set(hosts.keys().filter(|h| alive.contains(*h)).count() as i64);
    m.vgpus.set(vgpus.len() as i64);
    m.vgpus_stranded.set(
        vgpus
            .iter()
            .filter(|v| {
                v.placement
                    .as_ref()
                    .is_none_or(|p| !alive.contains(&p.host))
            })
            .count() as i64,
    );
    // Capacity under the default pool rules (no oversubscription, no reserve) unless exactly
    // one pool exists, in which case under its rules.
    let rules = if pools.len() == 1 {
        pools.values().next().cloned().unwrap_or_default()
    } else {
        Pool::default()
    };
    m.gpu_memory_total.clear();
    m.gpu_memory_free.clear();
    for (h, _) in hosts.values() {
        for g in &h.gpus {
            let l = netgpu_metrics::labels::PoolGpu {
                Hostname: h.name.clone(),
                gpu: g.index.to_string(),
                modelName: g.model.clone(),
                zone: h.zone.clone(),
            };
            m.gpu_memory_total
                .get_or_create(&l)
                .set(placement::capacity(&rules, g.memory).min(i64::MAX as u64) as i64);
            m.gpu_memory_free
                .get_or_create(&l)
                .set(placement::free(&rules, h, g.index).min(i64::MAX as u64) as i64);
        }
    }
}
