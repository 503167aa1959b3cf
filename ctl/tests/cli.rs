//! `netgpuctl` as an operator runs it, against a real etcd on loopback and the file store:
//! tables, `--json`, the snippets `vgpu create` prints, and errors that say what to do.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use netgpu_pool::api::Control;
use netgpu_pool::model::{Gpu, Host};
use netgpu_pool::testkit::{Etcd, TempDir};

fn ctl(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netgpuctl"))
        .arg("--store")
        .arg(url)
        .args(args)
        .env_remove("NETGPU_STORE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(url: &str, args: &[&str]) -> String {
    let (ok, out, err) = ctl(url, args);
    assert!(ok, "netgpuctl {args:?} failed: {err}{out}");
    out
}

async fn register(url: &str, name: &str, gib: u64) {
    let c = Control::open(url).await.unwrap();
    let l = c
        .store()
        .grant_lease(Duration::from_secs(60))
        .await
        .unwrap();
    let h = Host {
        name: name.into(),
        address: format!("127.0.0.1:70{}", name.len()),
        zone: "z1".into(),
        executor: "cpu".into(),
        gpus: vec![Gpu {
            index: 0,
            model: "netgpu CPU executor".into(),
            uuid: format!("GPU-{name}"),
            memory: gib << 30,
        }],
        ..Host::default()
    };
    c.register_host(&h, l).await.unwrap();
}

async fn operator_session(url: String) {
    let u = url.as_str();
    // Nothing yet: vgpu create says to make a pool.
    let (okk, _, err) = ctl(
        u,
        &[
            "vgpu", "create", "vm1", "--pool", "gold", "--memory", "4GiB",
        ],
    );
    assert!(!okk);
    assert!(
        err.contains("pool \"gold\" does not exist") && err.contains("netgpuctl pool create"),
        "{err}"
    );
    ok(u, &["pool", "create", "gold", "--description", "test pool"]);
    let (okk, _, err) = ctl(
        u,
        &[
            "vgpu", "create", "vm1", "--pool", "gold", "--memory", "4GiB",
        ],
    );
    assert!(!okk);
    assert!(err.contains("no GPU host is registered"), "{err}");
    register(u, "gpu-a", 16).await;
    register(u, "gpu-b", 16).await;
    let out = ok(
        u,
        &[
            "vgpu", "create", "vm1", "--pool", "gold", "--memory", "4GiB", "--tenant", "acme",
        ],
    );
    assert!(
        out.contains("vgpu vm1 created: 4 GiB on gpu-a GPU 0"),
        "{out}"
    );
    assert!(out.contains(r#"-device '{"driver":"vfio-user-pci","id":"netgpu-vm1","socket":{"path":"/run/netgpu/vm1.sock","type":"unix"}}'"#), "{out}");
    assert!(out.contains("<qemu:arg value='-device'/>"), "{out}");
    assert!(out.contains("netgpu-vdev@vm1.service"), "{out}");
    // JSON for scripts: the token stays hidden unless asked for.
    let j: serde_json::Value = serde_json::from_str(&ok(
        u,
        &[
            "--json", "vgpu", "create", "vm2", "--pool", "gold", "--memory", "8GiB",
        ],
    ))
    .unwrap();
    assert_eq!(j["vgpu"]["placement"]["host"], "gpu-b");
    assert_eq!(j["vgpu"]["memory"], 8u64 << 30);
    assert!(j["qemu_device"].as_str().unwrap().contains("vfio-user-pci"));
    assert!(j["vgpu"]["token"].as_str().unwrap().contains("hidden"));
    let j: serde_json::Value =
        serde_json::from_str(&ok(u, &["--json", "vgpu", "show", "vm2", "--show-token"])).unwrap();
    assert_eq!(j["vgpu"]["token"].as_str().unwrap().len(), 48);
    // Tables.
    let list = ok(u, &["host", "list"]);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("gpu-a") && l.contains("Ready") && l.contains("4 GiB")),
        "{list}"
    );
    let list = ok(u, &["vgpu", "list"]);
    assert!(
        list.lines().any(|l| l.starts_with("vm1")
            && l.contains("acme")
            && l.contains("gpu-a")
            && l.contains("Placed")),
        "{list}"
    );
    let hosts: serde_json::Value =
        serde_json::from_str(&ok(u, &["--json", "host", "list"])).unwrap();
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    assert_eq!(hosts[0]["up"], true);
    // Operator state.
    ok(u, &["host", "cordon", "gpu-a"]);
    assert!(ok(u, &["host", "list"])
        .lines()
        .any(|l| l.starts_with("gpu-a") && l.contains("Ready,Cordoned")));
    ok(u, &["host", "uncordon", "gpu-a"]);
    ok(u, &["host", "maintenance", "gpu-b", "on"]);
    assert!(ok(u, &["host", "show", "gpu-b"]).contains("Maintenance"));
    ok(u, &["host", "maintenance", "gpu-b", "off"]);
    let out = ok(u, &["host", "drain", "gpu-b"]);
    assert!(out.contains("vgpu vm2 -> gpu-a"), "{out}");
    let (okk, _, err) = ctl(u, &["host", "remove", "gpu-a"]);
    assert!(!okk && err.contains("drain it first"), "{err}");
    ok(u, &["host", "uncordon", "gpu-b"]);
    let out = ok(u, &["vgpu", "move", "vm2", "--to", "gpu-b"]);
    assert!(out.contains("moved to gpu-b"), "{out}");
    // Pool settings and capacity.
    ok(
        u,
        &[
            "pool",
            "set",
            "gold",
            "--oversubscription",
            "1.5",
            "--reserve",
            "1GiB",
            "--failover-grace",
            "45s",
        ],
    );
    let p: serde_json::Value =
        serde_json::from_str(&ok(u, &["--json", "pool", "show", "gold"])).unwrap();
    assert_eq!(p["oversubscription"], 1.5);
    assert_eq!(p["failover_grace_s"], 45);
    let show = ok(u, &["pool", "show", "gold"]);
    assert!(show.contains("23 GiB"), "capacity 16 x 1.5 - 1: {show}");
    let (okk, _, err) = ctl(u, &["pool", "set", "gold", "--oversubscription", "0.5"]);
    assert!(!okk && err.contains("between 1.0"), "{err}");
    let (okk, _, err) = ctl(
        u,
        &[
            "vgpu", "create", "vm9", "--pool", "gold", "--memory", "100GiB",
        ],
    );
    assert!(!okk && err.contains("largest free GPU memory"), "{err}");
    let (okk, _, err) = ctl(
        u,
        &[
            "vgpu", "create", "vm9", "--pool", "gold", "--memory", "lots",
        ],
    );
    assert!(!okk && err.contains("16GiB"), "{err}");
    // Status and events.
    let st = ok(u, &["status"]);
    assert!(st.contains("2 up of 2"), "{st}");
    assert!(st.contains("12 GiB given out of 32 GiB"), "{st}");
    let ev = ok(u, &["events"]);
    for k in [
        "PoolCreated",
        "HostRegistered",
        "VgpuCreated",
        "HostCordoned",
        "VgpuDrained",
        "VgpuMoved",
    ] {
        assert!(ev.contains(k), "no {k} in\n{ev}");
    }
    let evj: serde_json::Value =
        serde_json::from_str(&ok(u, &["--json", "events", "--limit", "3"])).unwrap();
    assert_eq!(evj.as_array().unwrap().len(), 3);
    ok(u, &["vgpu", "delete", "vm1"]);
    let (okk, _, err) = ctl(u, &["vgpu", "show", "vm1"]);
    assert!(!okk && err.contains("netgpuctl vgpu list"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_session_on_etcd() {
    let etcd = Etcd::start().unwrap();
    operator_session(etcd.url.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_session_on_the_file_store() {
    let dir = TempDir::new("ctl").unwrap();
    operator_session(dir.url()).await;
}

#[test]
fn an_unreachable_store_is_reported_with_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (okk, _, err) = ctl(&format!("etcd://127.0.0.1:{port}"), &["status"]);
    assert!(!okk);
    assert!(
        err.contains("etcd") && err.contains(&port.to_string()),
        "{err}"
    );
    let (okk, _, err) = ctl("redis://x", &["status"]);
    assert!(!okk && err.contains("etcd://HOST:PORT"), "{err}");
}
