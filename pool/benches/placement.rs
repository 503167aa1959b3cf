//! Placement at scale: 1 000 simulated GPU hosts x 8 GPUs as records in a real etcd on
//! loopback (started here), then
//! - the placement decision alone (filters + scoring over the decoded hosts),
//! - decoding the host records (what every create does after its read),
//! - `vgpu create` end to end (one snapshot read + one compare-and-swap transaction), one
//!   client and 8 concurrent clients, with store round trips per create,
//!
//! each next to the limit measured in the same run: one etcd round trip (a one-key read).
//!
//!   cargo bench -p netgpu-pool --bench placement [-- HOSTS GPUS CREATES]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netgpu_pool::api::Control;
use netgpu_pool::model::{keys, Allocation, Gpu, Host, Pool, Vgpu};
use netgpu_pool::placement::{self, Request};
use netgpu_pool::store::{self, Op, Read, Store};
use netgpu_pool::testkit::Etcd;

const GIB: u64 = 1 << 30;

fn arg(i: usize, d: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with('-'))
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

fn sim_host(i: usize, gpus: usize) -> Host {
    let mut h = Host {
        name: format!("gpu-{i:04}"),
        address: format!("10.{}.{}.{}:7070", i / 65536, (i / 256) % 256, i % 256),
        zone: format!("zone-{}", i % 4),
        executor: "cuda".into(),
        version: "0.1.0".into(),
        labels: [("rack".to_string(), format!("r{}", i / 40))].into(),
        gpus: (0..gpus as u32)
            .map(|g| Gpu {
                index: g,
                model: "NVIDIA H100 80GB HBM3".into(),
                uuid: format!("GPU-{i:04}-{g}"),
                memory: 80 * GIB,
            })
            .collect(),
        ..Host::default()
    };
    // Half the GPUs already carry two vGPUs.
    for g in 0..gpus as u32 / 2 {
        for k in 0..2 {
            h.allocations.insert(
                format!("pre-{i}-{g}-{k}"),
                Allocation {
                    gpu: g,
                    memory: 16 * GIB,
                },
            );
        }
    }
    h
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hosts_n = arg(1, 1000);
    let gpus = arg(2, 8);
    let creates = arg(3, 200);
    let etcd = Etcd::start().expect("start etcd (apt-get install etcd-server)");
    let s: Arc<dyn Store> = store::open(&etcd.url).await.expect("open");
    let c = Control::new(Arc::clone(&s));
    // Records.
    let t = Instant::now();
    let lease = s
        .grant_lease(Duration::from_secs(600))
        .await
        .expect("lease");
    let hosts: Vec<Host> = (0..hosts_n).map(|i| sim_host(i, gpus)).collect();
    for chunk in hosts.chunks(50) {
        let mut ops = Vec::new();
        for h in chunk {
            ops.push(Op::put(
                keys::host(&h.name),
                serde_json::to_vec(h).expect("json"),
            ));
            ops.push(Op::Put {
                key: keys::alive(&h.name),
                value: b"{}".to_vec(),
                lease: Some(lease),
            });
        }
        s.txn(&[], &ops).await.expect("load");
    }
    c.create_pool(Pool {
        name: "bench".into(),
        ..Pool::default()
    })
    .await
    .expect("pool");
    let record_bytes: usize = hosts
        .iter()
        .map(|h| serde_json::to_vec(h).map_or(0, |v| v.len()))
        .sum();
    println!(
        "loaded {hosts_n} hosts x {gpus} GPUs ({} KiB of host records) in {:.1} s",
        record_bytes / 1024,
        t.elapsed().as_secs_f64()
    );

    // The limit: one etcd round trip.
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        s.get(&keys::pool("bench")).await.expect("get");
    }
    let rtt = per(t.elapsed(), n);
    // Reading every host record (one range).
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        s.read(&[
            Read::Prefix(keys::HOSTS.into()),
            Read::Prefix(keys::ALIVE.into()),
        ])
        .await
        .expect("read");
    }
    let read_all = per(t.elapsed(), n);
    // Decoding them.
    let snap = s
        .read(&[Read::Prefix(keys::HOSTS.into())])
        .await
        .expect("read");
    let t = Instant::now();
    let n = 20;
    let mut decoded: Vec<Host> = Vec::new();
    for _ in 0..n {
        decoded = snap.results[0]
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).expect("host"))
            .collect();
    }
    let decode = per(t.elapsed(), n);
    // The decision alone.
    let pool = c.pool("bench").await.expect("pool");
    let alive: BTreeSet<String> = decoded.iter().map(|h| h.name.clone()).collect();
    let v = Vgpu {
        name: "probe".into(),
        pool: "bench".into(),
        memory: 16 * GIB,
        ..Vgpu::default()
    };
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        let r = placement::place(
            &Request {
                pool: &pool,
                vgpu: &v,
                alive: &alive,
                exclude: None,
                among: 1,
            },
            decoded.iter(),
        );
        assert!(r.is_ok());
    }
    let decide = per(t.elapsed(), n);

    // End to end, one client.
    let rt0 = s.round_trips();
    let t = Instant::now();
    for i in 0..creates {
        c.create_vgpu(Vgpu {
            name: format!("vm-{i}"),
            pool: "bench".into(),
            memory: 8 * GIB,
            ..Vgpu::default()
        })
        .await
        .expect("create");
    }
    let create = per(t.elapsed(), creates);
    let rts = (s.round_trips() - rt0) as f64 / creates as f64;

    // 8 concurrent clients (own connections): compare-and-swap conflicts cost retries.
    let clients = 8;
    let each = (creates / clients).max(1);
    let mut tasks = Vec::new();
    let t = Instant::now();
    for k in 0..clients {
        let url = etcd.url.clone();
        tasks.push(tokio::spawn(async move {
            let s = store::open(&url).await.expect("open");
            let c = Control::new(Arc::clone(&s));
            for i in 0..each {
                c.create_vgpu(Vgpu {
                    name: format!("par-{k}-{i}"),
                    pool: "bench".into(),
                    memory: 4 * GIB,
                    ..Vgpu::default()
                })
                .await
                .expect("create");
            }
            s.round_trips()
        }));
    }
    let mut rt_par = 0;
    for t in tasks {
        rt_par += t.await.expect("task");
    }
    let par_total = clients * each;
    let par = t.elapsed().as_secs_f64() / par_total as f64 * 1e6;
    let rts_par = rt_par as f64 / par_total as f64;

    println!("limit: one etcd round trip (1-key read)     {rtt:9.1} us");
    println!(
        "read all host + liveness records             {read_all:9.1} us  ({:.0}x a round trip)",
        read_all / rtt
    );
    println!(
        "decode {hosts_n} host records                   {decode:9.1} us  ({:.0}x)",
        decode / rtt
    );
    println!(
        "placement decision ({} GPUs)                {decide:9.1} us  ({:.1}x)",
        hosts_n * gpus,
        decide / rtt
    );
    println!(
        "vgpu create, 1 client                        {create:9.1} us  ({:.0}x), {rts:.2} store round trips per create",
        create / rtt
    );
    println!(
        "vgpu create, {clients} clients (per create)          {par:9.1} us  ({:.0}x), {rts_par:.2} store round trips per create",
        par / rtt
    );
}
