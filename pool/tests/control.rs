//! The control plane on a real etcd on loopback and on the file store: registration, placement
//! of ten vGPUs (spread across hosts, packed within one host's GPUs), quotas, two creates
//! racing for the last capacity, drain, cordon, failover after a lease expires (with a grace
//! period, no flapping, suppressed by maintenance), controller leadership, and what the
//! backend and vdev agents see.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use netgpu_pool::agent::{HostAgent, VgpuFollower};
use netgpu_pool::api::{Control, Error, MoveReason};
use netgpu_pool::controller::{self, Controller};
use netgpu_pool::model::{Gpu, Host, Pool, Strategy, Vgpu};
use netgpu_pool::placement::{self, Reason};
use netgpu_pool::store::{self, Store};
use netgpu_pool::testkit::{Etcd, TempDir};

const GIB: u64 = 1 << 30;

fn host(name: &str, gpus: u32, mem: u64) -> Host {
    Host {
        name: name.into(),
        address: format!("127.0.0.1:{}", 7000 + name.len()),
        zone: "z1".into(),
        executor: "cpu".into(),
        gpus: (0..gpus)
            .map(|i| Gpu {
                index: i,
                model: "netgpu CPU executor".into(),
                uuid: format!("GPU-{name}-{i}"),
                memory: mem,
            })
            .collect(),
        ..Host::default()
    }
}

/// Registers `h` with a lease of `ttl`; returns the lease.
async fn register(c: &Control, h: &Host, ttl: Duration) -> i64 {
    let l = c.store().grant_lease(ttl).await.unwrap();
    c.register_host(h, l).await.unwrap();
    l
}

fn vgpu(name: &str, pool: &str, mem: u64) -> Vgpu {
    Vgpu {
        name: name.into(),
        pool: pool.into(),
        memory: mem,
        tenant: "t1".into(),
        ..Vgpu::default()
    }
}

async fn per_host(c: &Control) -> BTreeMap<String, Vec<(String, u32)>> {
    let mut m: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    for v in c.vgpus().await.unwrap() {
        let p = v.placement.unwrap();
        m.entry(p.host).or_default().push((v.name, p.gpu));
    }
    m
}

/// Every host's allocations agree with the vGPU records and stay within capacity.
async fn assert_consistent(c: &Control) {
    let vgpus = c.vgpus().await.unwrap();
    let pools: BTreeMap<String, Pool> = c
        .pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let mut expected: BTreeMap<String, BTreeMap<String, (u32, u64)>> = BTreeMap::new();
    for v in &vgpus {
        if let Some(p) = &v.placement {
            expected
                .entry(p.host.clone())
                .or_default()
                .insert(v.name.clone(), (p.gpu, v.memory));
        }
    }
    for hv in c.hosts().await.unwrap() {
        let h = hv.host;
        let got: BTreeMap<String, (u32, u64)> = h
            .allocations
            .iter()
            .map(|(k, a)| (k.clone(), (a.gpu, a.memory)))
            .collect();
        assert_eq!(
            got,
            expected.remove(&h.name).unwrap_or_default(),
            "host {}",
            h.name
        );
        let pool = pools.values().next().cloned().unwrap_or_default();
        for g in &h.gpus {
            assert!(
                h.allocated(g.index) <= placement::capacity(&pool, g.memory),
                "GPU {}/{} overcommitted",
                h.name,
                g.index
            );
        }
    }
    assert!(
        expected.is_empty(),
        "vGPUs placed on unknown hosts: {expected:?}"
    );
}

async fn three_hosts(c: &Control) {
    for n in ["gpu-a", "gpu-b", "gpu-c"] {
        register(c, &host(n, 2, 16 * GIB), Duration::from_secs(30)).await;
    }
}

async fn ten_vgpus_spread_across_hosts_and_pack_within_each(c: Control) {
    three_hosts(&c).await;
    c.create_pool(Pool {
        name: "p".into(),
        ..Pool::default()
    })
    .await
    .unwrap();
    for i in 0..10 {
        let v = c
            .create_vgpu(vgpu(&format!("vm{i}"), "p", 2 * GIB))
            .await
            .unwrap();
        let p = v.placement.unwrap();
        assert_eq!(p.generation, 1);
        assert_eq!(v.token.len(), 48);
    }
    let m = per_host(&c).await;
    let counts: Vec<usize> = m.values().map(Vec::len).collect();
    assert_eq!(counts, [4, 3, 3], "spread across hosts: {m:?}");
    for (h, vs) in &m {
        assert!(
            vs.iter().all(|(_, g)| *g == 0),
            "packed on GPU 0 of {h}: {vs:?}"
        );
    }
    assert_consistent(&c).await;
    let st = c.status().await.unwrap();
    assert_eq!((st.hosts, st.hosts_up, st.vgpus, st.gpus), (3, 3, 10, 6));
    assert_eq!(st.memory_allocated, 20 * GIB);
}

async fn a_packing_pool_fills_one_host_first(c: Control) {
    three_hosts(&c).await;
    c.create_pool(Pool {
        name: "dense".into(),
        host_strategy: Strategy::Pack,
        gpu_strategy: Strategy::Spread,
        ..Pool::default()
    })
    .await
    .unwrap();
    for i in 0..10 {
        c.create_vgpu(vgpu(&format!("vm{i}"), "dense", 3 * GIB))
            .await
            .unwrap();
    }
    let m = per_host(&c).await;
    // 32 GiB per host: 10 x 3 GiB fit on the first host, spread over both its GPUs.
    assert_eq!(m.len(), 1, "{m:?}");
    let gpus: Vec<u32> = m.values().next().unwrap().iter().map(|(_, g)| *g).collect();
    assert_eq!(gpus.iter().filter(|g| **g == 0).count(), 5);
    assert_eq!(gpus.iter().filter(|g| **g == 1).count(), 5);
    assert_consistent(&c).await;
}

async fn quotas_are_never_overcommitted_and_failures_say_why(c: Control) {
    register(&c, &host("solo", 1, 16 * GIB), Duration::from_secs(30)).await;
    c.create_pool(Pool {
        name: "p".into(),
        reserve_per_gpu: GIB,
        ..Pool::default()
    })
    .await
    .unwrap();
    for i in 0..3 {
        c.create_vgpu(vgpu(&format!("v{i}"), "p", 5 * GIB))
            .await
            .unwrap();
    }
    // 16 - 1 reserve - 15 = 0 left.
    let e = c.create_vgpu(vgpu("v3", "p", GIB)).await.unwrap_err();
    let Error::NoCapacity(r) = &e else {
        panic!("{e}")
    };
    assert_eq!(r.main_reason(), Reason::Memory);
    assert!(e.to_string().contains("oversubscription"), "{e}");
    // Raising the ratio makes room, explicitly.
    c.update_pool("p", |p| p.oversubscription = 1.25)
        .await
        .unwrap();
    c.create_vgpu(vgpu("v3", "p", 4 * GIB)).await.unwrap();
    assert_consistent(&c).await;
    // Deleting gives memory back.
    c.delete_vgpu("v0").await.unwrap();
    c.create_vgpu(vgpu("v4", "p", 5 * GIB)).await.unwrap();
    assert!(matches!(
        c.delete_vgpu("nope").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        c.create_vgpu(vgpu("v4", "p", GIB)).await,
        Err(Error::Exists { .. })
    ));
    assert!(matches!(
        c.create_vgpu(vgpu("v5", "nopool", GIB)).await,
        Err(Error::NotFound { kind: "pool", .. })
    ));
    assert!(matches!(
        c.create_vgpu(vgpu("Bad/Name", "p", GIB)).await,
        Err(Error::Name(_))
    ));
    assert_consistent(&c).await;
}

async fn two_creates_racing_for_the_last_capacity_get_one_gpu(url: String) {
    let c = Control::open(&url).await.unwrap();
    register(&c, &host("solo", 1, 16 * GIB), Duration::from_secs(30)).await;
    c.create_pool(Pool {
        name: "p".into(),
        ..Pool::default()
    })
    .await
    .unwrap();
    c.create_vgpu(vgpu("big", "p", 12 * GIB)).await.unwrap();
    for round in 0..4 {
        // Two independent clients (two operators, two connections).
        let c1 = Control::open(&url).await.unwrap();
        let c2 = Control::open(&url).await.unwrap();
        let (a, b) = tokio::join!(
            c1.create_vgpu(vgpu(&format!("x{round}"), "p", 4 * GIB)),
            c2.create_vgpu(vgpu(&format!("y{round}"), "p", 4 * GIB)),
        );
        let ok = [a.is_ok(), b.is_ok()];
        assert_eq!(
            ok.iter().filter(|x| **x).count(),
            1,
            "round {round}: {a:?} {b:?}"
        );
        let failed = match (a, b) {
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
            _ => unreachable!(),
        };
        assert!(matches!(failed, Error::NoCapacity(_)), "{failed}");
        assert_consistent(&c).await;
        let winner = c
            .vgpus()
            .await
            .unwrap()
            .into_iter()
            .find(|v| v.name != "big")
            .unwrap();
        c.delete_vgpu(&winner.name).await.unwrap();
    }
}

async fn cordon_blocks_placement_and_drain_moves_vgpus(c: Control) {
    three_hosts(&c).await;
    c.create_pool(Pool {
        name: "p".into(),
        ..Pool::default()
    })
    .await
    .unwrap();
    for i in 0..6 {
        c.create_vgpu(vgpu(&format!("vm{i}"), "p", 2 * GIB))
            .await
            .unwrap();
    }
    c.update_host("gpu-a", "HostCordoned", |h| h.cordoned = true)
        .await
        .unwrap();
    for i in 6..9 {
        let v = c
            .create_vgpu(vgpu(&format!("vm{i}"), "p", 2 * GIB))
            .await
            .unwrap();
        assert_ne!(v.placement.unwrap().host, "gpu-a");
    }
    let r = c.drain_host("gpu-b").await.unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert!(!r.moved.is_empty());
    assert!(r.moved.iter().all(|(_, to)| to == "gpu-c"), "{r:?}");
    let m = per_host(&c).await;
    assert!(!m.contains_key("gpu-b"));
    for v in c.vgpus().await.unwrap() {
        if r.moved.iter().any(|(n, _)| *n == v.name) {
            assert_eq!(v.placement.unwrap().generation, 2);
        }
    }
    // A re-registration (backend restart) keeps the operator's state and the allocations.
    let before = c.host("gpu-c").await.unwrap().host;
    register(&c, &host("gpu-b", 2, 16 * GIB), Duration::from_secs(30)).await;
    let b = c.host("gpu-b").await.unwrap().host;
    assert!(b.draining && b.cordoned);
    register(&c, &host("gpu-c", 2, 16 * GIB), Duration::from_secs(30)).await;
    assert_eq!(
        c.host("gpu-c").await.unwrap().host.allocations,
        before.allocations
    );
    // Operator move to a named host, checked against the filters.
    let e = c
        .move_vgpu("vm0", Some("gpu-b"), MoveReason::Operator)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoCapacity(_)), "{e}");
    assert_consistent(&c).await;
    let kinds: Vec<String> = c
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in [
        "HostRegistered",
        "PoolCreated",
        "VgpuCreated",
        "HostCordoned",
        "HostDraining",
        "VgpuDrained",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event in {kinds:?}");
    }
}

fn fast_controller(c: &Control, id: &str) -> Controller {
    Controller::new(
        c.clone(),
        controller::Config {
            interval: Duration::from_millis(200),
            leader_ttl: Duration::from_secs(5),
            id: id.into(),
            keep_events: 1000,
        },
    )
}

/// Drives controller rounds until `f` holds or `secs` pass.
async fn rounds_until(
    ctl: &mut Controller,
    secs: u64,
    mut f: impl FnMut(&controller::Round) -> bool,
) -> Vec<controller::Round> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut all = Vec::new();
    loop {
        let r = ctl.round().await.unwrap();
        let done = f(&r);
        all.push(r);
        if done || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn failover_replaces_vgpus_of_a_dead_host_after_the_grace_period(c: Control) {
    let la = register(&c, &host("gpu-a", 1, 16 * GIB), Duration::from_secs(2)).await;
    register(&c, &host("gpu-b", 1, 16 * GIB), Duration::from_secs(60)).await;
    register(&c, &host("gpu-c", 1, 16 * GIB), Duration::from_secs(60)).await;
    c.create_pool(Pool {
        name: "p".into(),
        failover_grace_s: 2,
        ..Pool::default()
    })
    .await
    .unwrap();
    // Pin three vGPUs to gpu-a by cordoning the others while creating.
    for h in ["gpu-b", "gpu-c"] {
        c.update_host(h, "HostCordoned", |h| h.cordoned = true)
            .await
            .unwrap();
    }
    for i in 0..3 {
        c.create_vgpu(vgpu(&format!("vm{i}"), "p", 4 * GIB))
            .await
            .unwrap();
    }
    for h in ["gpu-b", "gpu-c"] {
        c.update_host(h, "HostUncordoned", |h| h.cordoned = false)
            .await
            .unwrap();
    }
    let mut ctl = fast_controller(&c, "test");
    let r = ctl.round().await.unwrap();
    assert!(r.leader && r.moved.is_empty());
    // gpu-a's backend dies: its lease is not renewed and expires after 2 s.
    let _ = la;
    let t0 = std::time::Instant::now();
    let rounds = rounds_until(&mut ctl, 20, |r| !r.moved.is_empty()).await;
    let moved: Vec<_> = rounds.iter().flat_map(|r| r.moved.clone()).collect();
    assert_eq!(moved.len(), 3, "{rounds:?}");
    // Not before the lease TTL plus the grace period.
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    for (_, from, to) in &moved {
        assert_eq!(from, "gpu-a");
        assert!(to == "gpu-b" || to == "gpu-c");
    }
    for v in c.vgpus().await.unwrap() {
        let p = v.placement.unwrap();
        assert_ne!(p.host, "gpu-a");
        assert_eq!(p.generation, 2);
    }
    assert!(c.host("gpu-a").await.unwrap().host.allocations.is_empty());
    assert_consistent(&c).await;
    // gpu-a comes back: nothing moves back (no flapping).
    register(&c, &host("gpu-a", 1, 16 * GIB), Duration::from_secs(60)).await;
    for _ in 0..5 {
        assert!(ctl.round().await.unwrap().moved.is_empty());
    }
    let kinds: Vec<String> = c
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "Failover").count(),
        3,
        "{kinds:?}"
    );
}

async fn a_blip_shorter_than_the_grace_period_moves_nothing(c: Control) {
    let la = register(&c, &host("gpu-a", 1, 16 * GIB), Duration::from_secs(30)).await;
    register(&c, &host("gpu-b", 1, 16 * GIB), Duration::from_secs(30)).await;
    c.create_pool(Pool {
        name: "p".into(),
        failover_grace_s: 3,
        ..Pool::default()
    })
    .await
    .unwrap();
    c.update_host("gpu-b", "HostCordoned", |h| h.cordoned = true)
        .await
        .unwrap();
    c.create_vgpu(vgpu("vm0", "p", GIB)).await.unwrap();
    c.update_host("gpu-b", "HostUncordoned", |h| h.cordoned = false)
        .await
        .unwrap();
    let mut ctl = fast_controller(&c, "test");
    ctl.round().await.unwrap();
    // The backend restarts: lease revoked, back 1 s later.
    c.store().revoke(la).await.unwrap();
    for _ in 0..4 {
        assert!(ctl.round().await.unwrap().moved.is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    register(&c, &host("gpu-a", 1, 16 * GIB), Duration::from_secs(30)).await;
    for _ in 0..12 {
        assert!(ctl.round().await.unwrap().moved.is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        c.vgpu("vm0").await.unwrap().placement.unwrap().host,
        "gpu-a"
    );
}

async fn maintenance_suppresses_failover(c: Control) {
    let la = register(&c, &host("gpu-a", 1, 16 * GIB), Duration::from_secs(30)).await;
    register(&c, &host("gpu-b", 1, 16 * GIB), Duration::from_secs(30)).await;
    c.create_pool(Pool {
        name: "p".into(),
        failover_grace_s: 1,
        ..Pool::default()
    })
    .await
    .unwrap();
    c.update_host("gpu-b", "HostCordoned", |h| h.cordoned = true)
        .await
        .unwrap();
    c.create_vgpu(vgpu("vm0", "p", GIB)).await.unwrap();
    c.update_host("gpu-b", "HostUncordoned", |h| h.cordoned = false)
        .await
        .unwrap();
    c.update_host("gpu-a", "HostMaintenance", |h| h.maintenance = true)
        .await
        .unwrap();
    let mut ctl = fast_controller(&c, "test");
    ctl.round().await.unwrap();
    c.store().revoke(la).await.unwrap();
    let rounds = rounds_until(&mut ctl, 3, |_| false).await;
    assert!(rounds.iter().all(|r| r.moved.is_empty()));
    assert!(rounds
        .last()
        .unwrap()
        .suppressed
        .contains(&"gpu-a".to_string()));
    assert_eq!(
        c.vgpu("vm0").await.unwrap().placement.unwrap().host,
        "gpu-a"
    );
    // Maintenance ends while the host is still down: failover proceeds after the grace.
    c.update_host("gpu-a", "HostMaintenanceEnded", |h| h.maintenance = false)
        .await
        .unwrap();
    let rounds = rounds_until(&mut ctl, 10, |r| !r.moved.is_empty()).await;
    assert!(rounds.iter().any(|r| !r.moved.is_empty()));
    assert_eq!(
        c.vgpu("vm0").await.unwrap().placement.unwrap().host,
        "gpu-b"
    );
}

async fn one_controller_leads_at_a_time(c: Control) {
    let mut a = fast_controller(&c, "a");
    let mut b = fast_controller(&c, "b");
    assert!(a.round().await.unwrap().leader);
    assert!(!b.round().await.unwrap().leader);
    assert!(a.round().await.unwrap().leader);
    assert_eq!(c.status().await.unwrap().controller.as_deref(), Some("a"));
}

async fn agents_publish_grants_and_follow_placements(c: Control) {
    let a = HostAgent::start(
        c.clone(),
        host("gpu-a", 1, 16 * GIB),
        Duration::from_secs(3),
    );
    let b = HostAgent::start(
        c.clone(),
        host("gpu-b", 1, 16 * GIB),
        Duration::from_secs(3),
    );
    let mut reg = a.registered();
    tokio::time::timeout(Duration::from_secs(10), reg.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    let mut reg = b.registered();
    tokio::time::timeout(Duration::from_secs(10), reg.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    c.create_pool(Pool {
        name: "p".into(),
        ..Pool::default()
    })
    .await
    .unwrap();
    let v = c.create_vgpu(vgpu("vm0", "p", 3 * GIB)).await.unwrap();
    let first = v.placement.clone().unwrap().host;
    let (on, off) = if first == "gpu-a" { (&a, &b) } else { (&b, &a) };
    let mut g = on.grants();
    let grant = tokio::time::timeout(
        Duration::from_secs(10),
        g.wait_for(|g| g.contains_key(&v.token)),
    )
    .await
    .unwrap()
    .unwrap()
    .get(&v.token)
    .cloned()
    .unwrap();
    assert_eq!(
        (grant.vgpu.as_str(), grant.memory, grant.tenant.as_str()),
        ("vm0", 3 * GIB, "t1")
    );
    assert!(off.grants().borrow().is_empty());
    // vdev's view.
    let f = VgpuFollower::start(c.clone(), "vm0").await.unwrap();
    let t = f.current();
    assert_eq!(
        (t.host.as_str(), t.memory, t.generation),
        (first.as_str(), 3 * GIB, 1)
    );
    assert_eq!(t.token, v.token);
    f.connected(Some(&first), 1);
    // The operator moves it; vdev sees the new target, the grants move with it.
    let moved = c
        .move_vgpu("vm0", None, MoveReason::Operator)
        .await
        .unwrap();
    let to = moved.placement.unwrap().host;
    assert_ne!(to, first);
    let mut ch = f.changes();
    let t = tokio::time::timeout(Duration::from_secs(10), ch.wait_for(|t| t.generation == 2))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(t.host, to);
    let mut g = off.grants();
    tokio::time::timeout(
        Duration::from_secs(10),
        g.wait_for(|g| g.contains_key(&v.token)),
    )
    .await
    .unwrap()
    .unwrap();
    let mut g = on.grants();
    tokio::time::timeout(Duration::from_secs(10), g.wait_for(|g| g.is_empty()))
        .await
        .unwrap()
        .unwrap();
    // The attachment shows where vdev's session is.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let att = c.attachments().await.unwrap();
        if att
            .iter()
            .any(|a| a.vgpu == "vm0" && a.connected_host == first)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{att:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A stopped agent revokes its lease: the host is down at once.
    a.stop().await;
    assert!(!c.host("gpu-a").await.unwrap().up);
    b.stop().await;
    assert!(VgpuFollower::start(c.clone(), "nope").await.is_err());
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod etcd {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let etcd = Etcd::start().expect("start etcd");
                super::$name(Control::new(store::open(&etcd.url).await.unwrap())).await;
            })*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_creates_racing_for_the_last_capacity_get_one_gpu() {
                let etcd = Etcd::start().expect("start etcd");
                super::two_creates_racing_for_the_last_capacity_get_one_gpu(etcd.url.clone()).await;
            }
        }
        mod file {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = TempDir::new("control").unwrap();
                super::$name(Control::new(store::open(&dir.url()).await.unwrap())).await;
            })*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_creates_racing_for_the_last_capacity_get_one_gpu() {
                let dir = TempDir::new("control").unwrap();
                super::two_creates_racing_for_the_last_capacity_get_one_gpu(dir.url()).await;
            }
        }
    };
}

suite!(
    ten_vgpus_spread_across_hosts_and_pack_within_each,
    a_packing_pool_fills_one_host_first,
    quotas_are_never_overcommitted_and_failures_say_why,
    cordon_blocks_placement_and_drain_moves_vgpus,
    failover_replaces_vgpus_of_a_dead_host_after_the_grace_period,
    a_blip_shorter_than_the_grace_period_moves_nothing,
    maintenance_suppresses_failover,
    one_controller_leads_at_a_time,
    agents_publish_grants_and_follow_placements
);

#[allow(dead_code)]
fn _uses(_: Arc<dyn Store>) {}

/// Losing etcd: the backend keeps admitting what it admitted, vdev keeps its placement, the
/// controller does nothing (and does not mistake the outage for dead hosts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcd_leaves_agents_with_their_last_state() {
    let mut etcd = Etcd::start().expect("start etcd");
    let c = Control::new(store::open(&etcd.url).await.unwrap());
    let a = HostAgent::start(
        c.clone(),
        host("gpu-a", 1, 16 * GIB),
        Duration::from_secs(2),
    );
    let mut reg = a.registered();
    tokio::time::timeout(Duration::from_secs(10), reg.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    c.create_pool(Pool {
        name: "p".into(),
        failover_grace_s: 1,
        ..Pool::default()
    })
    .await
    .unwrap();
    let v = c.create_vgpu(vgpu("vm0", "p", GIB)).await.unwrap();
    let mut g = a.grants();
    tokio::time::timeout(
        Duration::from_secs(10),
        g.wait_for(|g| g.contains_key(&v.token)),
    )
    .await
    .unwrap()
    .unwrap();
    let f = VgpuFollower::start(c.clone(), "vm0").await.unwrap();
    let mut ctl = fast_controller(&c, "test");
    assert!(ctl.round().await.unwrap().leader);
    etcd.stop();
    // Well past the lease TTL and the grace period.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            ctl.round().await.is_err(),
            "no store: the round must fail, not act"
        );
    }
    assert!(a.grants().borrow().contains_key(&v.token));
    assert_eq!(f.current().host, "gpu-a");
    assert_eq!(f.current().token, v.token);
}
