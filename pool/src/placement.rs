//! Placement: which GPU of which host a vGPU goes to. Pure functions over records, no I/O, so
//! the decision is unit-tested here and timed by the benchmark on its own.
//!
//! Filters, in order (a host's first failing filter is its reason):
//! 1. `down`: the host has no live lease;
//! 2. `unschedulable`: cordoned, draining or in maintenance;
//! 3. `excluded`: the host the vGPU is moving away from;
//! 4. `pool`: the host's labels miss the pool's selector;
//! 5. `zone`: outside the pool's zones or the vGPU's zone;
//! 6. `labels`: the host's labels miss the vGPU's required labels;
//! 7. `taint`: a taint neither the pool nor the vGPU tolerates;
//! 8. `gpu-model`: no GPU of the pool's/vGPU's model;
//! 9. `memory`: no GPU with `memory * oversubscription - reserve - allocated >= request`.
//!
//! Scoring: the pool's `host_strategy` picks among hosts by their free fraction of capacity
//! (spread: most free; pack: least free), then `gpu_strategy` picks among the host's fitting
//! GPUs the same way. Ties go to the lower name / index, so a decision is reproducible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::{Host, Pool, Strategy, Vgpu};

/// Why a host was not chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Down,
    Unschedulable,
    Excluded,
    Pool,
    Zone,
    Labels,
    Taint,
    GpuModel,
    Memory,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Down,
        Reason::Unschedulable,
        Reason::Excluded,
        Reason::Pool,
        Reason::Zone,
        Reason::Labels,
        Reason::Taint,
        Reason::GpuModel,
        Reason::Memory,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Down => "down",
            Reason::Unschedulable => "unschedulable",
            Reason::Excluded => "excluded",
            Reason::Pool => "pool",
            Reason::Zone => "zone",
            Reason::Labels => "labels",
            Reason::Taint => "taint",
            Reason::GpuModel => "gpu-model",
            Reason::Memory => "memory",
        }
    }
}

/// The chosen GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub host: String,
    pub gpu: u32,
    /// Free memory on that GPU before this vGPU.
    pub free_before: u64,
}

/// No host fits: how many hosts each filter removed, and the largest free memory of a GPU
/// that passed every filter but memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejection {
    pub hosts: usize,
    pub by_reason: BTreeMap<Reason, usize>,
    pub largest_free: u64,
    pub request: u64,
}

impl Rejection {
    /// The reason that removed the most hosts that got furthest (memory beats down).
    pub fn main_reason(&self) -> Reason {
        self.by_reason
            .iter()
            .max_by_key(|(r, n)| (**n, **r))
            .map(|(r, _)| *r)
            .unwrap_or(Reason::Down)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hosts == 0 {
            return write!(
                f,
                "no GPU host is registered: start netgpu-backend with [pool] store set on the GPU hosts"
            );
        }
        write!(
            f,
            "no host can take {} ({} host{} considered: ",
            crate::fmt_size(self.request),
            self.hosts,
            if self.hosts == 1 { "" } else { "s" }
        )?;
        let parts: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("{n} {}", r.as_str()))
            .collect();
        write!(f, "{})", parts.join(", "))?;
        if self.by_reason.contains_key(&Reason::Memory) {
            write!(
                f,
                "; the largest free GPU memory is {}: ask for less, delete or move vGPUs, add hosts, or raise the pool's oversubscription (netgpuctl pool set POOL --oversubscription 1.5)",
                crate::fmt_size(self.largest_free)
            )?;
        } else if self.by_reason.contains_key(&Reason::Down) && self.by_reason.len() == 1 {
            write!(
                f,
                "; every host is down: check netgpu-backend on the GPU hosts (netgpuctl host list)"
            )?;
        } else if self.by_reason.contains_key(&Reason::Unschedulable) {
            write!(
                f,
                "; uncordon a host (netgpuctl host uncordon HOST) or add hosts"
            )?;
        } else {
            write!(f, "; check the vGPU's and the pool's zone, labels, tolerations and GPU model against netgpuctl host list")?;
        }
        Ok(())
    }
}

/// The memory a GPU may give out: `memory * oversubscription - reserve`, saturating.
pub fn capacity(pool: &Pool, gpu_memory: u64) -> u64 {
    let ratio = if pool.oversubscription.is_finite() && pool.oversubscription >= 1.0 {
        pool.oversubscription
    } else {
        1.0
    };
    let scaled = (gpu_memory as f64 * ratio).min(u64::MAX as f64) as u64;
    scaled.saturating_sub(pool.reserve_per_gpu)
}

/// Free memory of GPU `index` of `host` under `pool`'s rules.
pub fn free(pool: &Pool, host: &Host, index: u32) -> u64 {
    host.gpu(index)
        .map(|g| capacity(pool, g.memory).saturating_sub(host.allocated(index)))
        .unwrap_or(0)
}

/// What a placement needs besides the hosts.
pub struct Request<'a> {
    pub pool: &'a Pool,
    pub vgpu: &'a Vgpu,
    /// Hosts with a live lease.
    pub alive: &'a BTreeSet<String>,
    /// A host not to choose (the one a vGPU moves away from).
    pub exclude: Option<&'a str>,
    /// Choose at random among this many best hosts instead of the best one (0 and 1: the
    /// best). Callers retrying after losing a race use it so concurrent placements stop
    /// all choosing the same host.
    pub among: usize,
}

fn first_failing(req: &Request<'_>, h: &Host) -> Option<Reason> {
    let pool = req.pool;
    let v = req.vgpu;
    if !req.alive.contains(&h.name) {
        return Some(Reason::Down);
    }
    if !h.schedulable() {
        return Some(Reason::Unschedulable);
    }
    if req.exclude == Some(h.name.as_str()) {
        return Some(Reason::Excluded);
    }
    let has = |sel: &BTreeMap<String, String>| {
        sel.iter()
            .all(|(k, val)| h.labels.get(k).is_some_and(|hv| hv == val))
    };
    if !has(&pool.host_selector) {
        return Some(Reason::Pool);
    }
    if (!pool.zones.is_empty() && !pool.zones.contains(&h.zone))
        || (!v.zone.is_empty() && v.zone != h.zone)
    {
        return Some(Reason::Zone);
    }
    if !has(&v.labels) {
        return Some(Reason::Labels);
    }
    let tolerated = |t: &crate::model::Taint| {
        pool.tolerations
            .iter()
            .chain(v.tolerations.iter())
            .any(|tol| tol.tolerates(t))
    };
    if !h.taints.iter().all(tolerated) {
        return Some(Reason::Taint);
    }
    None
}

fn model_ok(req: &Request<'_>, model: &str) -> bool {
    (req.pool.gpu_models.is_empty() || req.pool.gpu_models.iter().any(|m| m == model))
        && (req.vgpu.gpu_model.is_empty() || req.vgpu.gpu_model == model)
}

/// Score: free fraction in parts per million (higher = more free).
fn free_ppm(free: u64, cap: u64) -> u64 {
    if cap == 0 {
        0
    } else {
        ((free as u128 * 1_000_000) / cap as u128) as u64
    }
}

/// Picks a GPU for `req.vgpu` among `hosts`, or says why none fits.
pub fn place<'h>(
    req: &Request<'_>,
    hosts: impl IntoIterator<Item = &'h Host>,
) -> Result<Choice, Rejection> {
    let want = req.vgpu.memory;
    let mut rej = Rejection {
        request: want,
        ..Rejection::default()
    };
    // (host score, host name, gpu, free)
    let mut feasible: Vec<(u64, &str, u32, u64)> = Vec::new();
    for h in hosts {
        rej.hosts += 1;
        if let Some(r) = first_failing(req, h) {
            *rej.by_reason.entry(r).or_default() += 1;
            continue;
        }
        let mut any_model = false;
        let mut host_cap = 0u64;
        let mut host_free = 0u64;
        let mut gpu_pick: Option<(u64, u32, u64)> = None; // (gpu score, index, free)
        for g in &h.gpus {
            if !model_ok(req, &g.model) {
                continue;
            }
            any_model = true;
            let cap = capacity(req.pool, g.memory);
            let f = cap.saturating_sub(h.allocated(g.index));
            host_cap = host_cap.saturating_add(cap);
            host_free = host_free.saturating_add(f);
            if f < want {
                rej.largest_free = rej.largest_free.max(f);
                continue;
            }
            let s = free_ppm(f, cap);
            let better = match (gpu_pick, req.pool.gpu_strategy) {
                (None, _) => true,
                (Some((bs, _, _)), Strategy::Spread) => s > bs,
                (Some((bs, _, _)), Strategy::Pack) => s < bs,
            };
            if better {
                gpu_pick = Some((s, g.index, f));
            }
        }
        if !any_model {
            *rej.by_reason.entry(Reason::GpuModel).or_default() += 1;
            continue;
        }
        let Some((_, gi, gf)) = gpu_pick else {
            *rej.by_reason.entry(Reason::Memory).or_default() += 1;
            continue;
        };
        feasible.push((free_ppm(host_free, host_cap), &h.name, gi, gf));
    }
    if feasible.is_empty() {
        return Err(rej);
    }
    // Best first: by score for the strategy, then by name.
    let order = |a: &(u64, &str, u32, u64), b: &(u64, &str, u32, u64)| {
        let by_score = match req.pool.host_strategy {
            Strategy::Spread => b.0.cmp(&a.0),
            Strategy::Pack => a.0.cmp(&b.0),
        };
        by_score.then_with(|| a.1.cmp(b.1))
    };
    let k = req.among.clamp(1, feasible.len());
    let pick = if k == 1 {
        feasible.iter().min_by(|a, b| order(a, b))
    } else {
        feasible.sort_by(order);
        feasible.get(rand::random::<usize>() % k)
    };
    match pick {
        Some(&(_, name, gpu, free_before)) => Ok(Choice {
            host: name.to_string(),
            gpu,
            free_before,
        }),
        None => Err(rej),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Allocation, Gpu, Taint, Toleration};

    const GIB: u64 = 1 << 30;

    fn host(name: &str, gpus: &[u64]) -> Host {
        Host {
            name: name.into(),
            address: format!("{name}:7070"),
            zone: "a".into(),
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, m)| Gpu {
                    index: i as u32,
                    model: "H100".into(),
                    uuid: String::new(),
                    memory: *m,
                })
                .collect(),
            ..Host::default()
        }
    }

    fn vgpu(mem: u64) -> Vgpu {
        Vgpu {
            name: "v".into(),
            memory: mem,
            ..Vgpu::default()
        }
    }

    fn alive(hosts: &[&Host]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.name.clone()).collect()
    }

    fn place_on(pool: &Pool, hosts: &[Host], v: &Vgpu) -> Result<Choice, Rejection> {
        let a = alive(&hosts.iter().collect::<Vec<_>>());
        place(
            &Request {
                pool,
                vgpu: v,
                alive: &a,
                exclude: None,
                among: 1,
            },
            hosts,
        )
    }

    fn alloc(h: &mut Host, name: &str, gpu: u32, memory: u64) {
        h.allocations
            .insert(name.into(), Allocation { gpu, memory });
    }

    #[test]
    fn spread_picks_the_emptiest_host_and_pack_the_fullest() {
        let mut a = host("a", &[80 * GIB]);
        let b = host("b", &[80 * GIB]);
        alloc(&mut a, "x", 0, 40 * GIB);
        let hosts = [a, b];
        let spread = Pool::default();
        assert_eq!(place_on(&spread, &hosts, &vgpu(8 * GIB)).unwrap().host, "b");
        let pack = Pool {
            host_strategy: Strategy::Pack,
            ..Pool::default()
        };
        assert_eq!(place_on(&pack, &hosts, &vgpu(8 * GIB)).unwrap().host, "a");
    }

    #[test]
    fn gpus_of_one_host_are_packed_by_default_and_spread_on_request() {
        let mut h = host("h", &[80 * GIB, 80 * GIB]);
        alloc(&mut h, "x", 1, 10 * GIB);
        let hosts = [h];
        assert_eq!(
            place_on(&Pool::default(), &hosts, &vgpu(GIB)).unwrap().gpu,
            1
        );
        let spread = Pool {
            gpu_strategy: Strategy::Spread,
            ..Pool::default()
        };
        assert_eq!(place_on(&spread, &hosts, &vgpu(GIB)).unwrap().gpu, 0);
    }

    #[test]
    fn several_vgpus_share_one_gpu_until_its_memory_is_given_out() {
        let mut h = host("h", &[16 * GIB]);
        for i in 0..4 {
            let c = place_on(&Pool::default(), std::slice::from_ref(&h), &vgpu(4 * GIB)).unwrap();
            assert_eq!(c.gpu, 0);
            alloc(&mut h, &format!("v{i}"), 0, 4 * GIB);
        }
        let r = place_on(&Pool::default(), &[h], &vgpu(GIB)).unwrap_err();
        assert_eq!(r.main_reason(), Reason::Memory);
        assert_eq!(r.largest_free, 0);
    }

    #[test]
    fn reserve_and_oversubscription_change_capacity() {
        let h = host("h", &[16 * GIB]);
        let reserved = Pool {
            reserve_per_gpu: 2 * GIB,
            ..Pool::default()
        };
        let r = place_on(&reserved, std::slice::from_ref(&h), &vgpu(15 * GIB)).unwrap_err();
        assert_eq!(r.largest_free, 14 * GIB);
        let over = Pool {
            oversubscription: 1.5,
            ..Pool::default()
        };
        assert!(place_on(&over, std::slice::from_ref(&h), &vgpu(24 * GIB)).is_ok());
        assert!(place_on(&over, &[h], &vgpu(24 * GIB + 1)).is_err());
        // Nonsense ratios mean none.
        assert_eq!(
            capacity(
                &Pool {
                    oversubscription: f64::NAN,
                    ..Pool::default()
                },
                10
            ),
            10
        );
        assert_eq!(
            capacity(
                &Pool {
                    oversubscription: 0.5,
                    ..Pool::default()
                },
                10
            ),
            10
        );
    }

    #[test]
    fn every_filter_removes_the_host_for_its_reason() {
        let base = host("h", &[80 * GIB]);
        let pool = Pool::default();
        let v = vgpu(GIB);
        let reason = |h: &Host, pool: &Pool, v: &Vgpu, alive: bool| {
            let a: BTreeSet<String> = if alive {
                [h.name.clone()].into()
            } else {
                BTreeSet::new()
            };
            place(
                &Request {
                    pool,
                    vgpu: v,
                    alive: &a,
                    exclude: None,
                    among: 1,
                },
                [h],
            )
            .unwrap_err()
            .main_reason()
        };
        assert_eq!(reason(&base, &pool, &v, false), Reason::Down);
        let cordoned = Host {
            cordoned: true,
            ..base.clone()
        };
        assert_eq!(reason(&cordoned, &pool, &v, true), Reason::Unschedulable);
        let maint = Host {
            maintenance: true,
            ..base.clone()
        };
        assert_eq!(reason(&maint, &pool, &v, true), Reason::Unschedulable);
        let sel = Pool {
            host_selector: [("tier".to_string(), "gold".to_string())].into(),
            ..Pool::default()
        };
        assert_eq!(reason(&base, &sel, &v, true), Reason::Pool);
        let zoned = Pool {
            zones: vec!["b".into()],
            ..Pool::default()
        };
        assert_eq!(reason(&base, &zoned, &v, true), Reason::Zone);
        let vz = Vgpu {
            zone: "b".into(),
            ..v.clone()
        };
        assert_eq!(reason(&base, &pool, &vz, true), Reason::Zone);
        let vl = Vgpu {
            labels: [("nvlink".to_string(), "yes".to_string())].into(),
            ..v.clone()
        };
        assert_eq!(reason(&base, &pool, &vl, true), Reason::Labels);
        let tainted = Host {
            taints: vec![Taint {
                key: "dedicated".into(),
                value: "ml".into(),
            }],
            ..base.clone()
        };
        assert_eq!(reason(&tainted, &pool, &v, true), Reason::Taint);
        let tol = Vgpu {
            tolerations: vec![Toleration {
                key: "dedicated".into(),
                value: None,
            }],
            ..v.clone()
        };
        assert!(place_on(&pool, std::slice::from_ref(&tainted), &tol).is_ok());
        let model = Vgpu {
            gpu_model: "A100".into(),
            ..v.clone()
        };
        assert_eq!(reason(&base, &pool, &model, true), Reason::GpuModel);
        assert_eq!(reason(&base, &pool, &vgpu(81 * GIB), true), Reason::Memory);
        let a: BTreeSet<String> = ["h".to_string()].into();
        let r = place(
            &Request {
                pool: &pool,
                vgpu: &v,
                alive: &a,
                exclude: Some("h"),
                among: 1,
            },
            [&base],
        )
        .unwrap_err();
        assert_eq!(r.main_reason(), Reason::Excluded);
    }

    #[test]
    fn rejection_messages_say_what_to_do() {
        let h = host("h", &[8 * GIB]);
        let r = place_on(&Pool::default(), &[h], &vgpu(16 * GIB)).unwrap_err();
        let m = r.to_string();
        assert!(m.contains("16 GiB") && m.contains("8 GiB"), "{m}");
        assert!(m.contains("oversubscription"), "{m}");
        let none = place_on(&Pool::default(), &[], &vgpu(GIB)).unwrap_err();
        assert!(none.to_string().contains("no GPU host is registered"));
    }

    #[test]
    fn retries_may_pick_among_the_best_but_never_an_unfit_host() {
        let mut full = host("full", &[GIB]);
        alloc(&mut full, "x", 0, GIB);
        let hosts = [host("a", &[GIB]), host("b", &[GIB]), full];
        let a = alive(&hosts.iter().collect::<Vec<_>>());
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let c = place(
                &Request {
                    pool: &Pool::default(),
                    vgpu: &vgpu(1),
                    alive: &a,
                    exclude: None,
                    among: 8,
                },
                &hosts,
            )
            .unwrap();
            seen.insert(c.host);
        }
        assert_eq!(seen, ["a".to_string(), "b".to_string()].into());
    }

    #[test]
    fn ties_break_by_name_so_decisions_repeat() {
        let hosts = [host("c", &[GIB]), host("a", &[GIB]), host("b", &[GIB])];
        assert_eq!(
            place_on(&Pool::default(), &hosts, &vgpu(1)).unwrap().host,
            "a"
        );
    }
}
