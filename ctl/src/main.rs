//! `netgpuctl`: the operator's CLI for netgpu pools, GPU hosts and virtual GPUs, and the
//! failover controller daemon (`netgpuctl controller`). See `docs/operators.md`.

mod cert;
mod snippets;
mod table;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use netgpu_pool::api::{Control, HostView, MoveReason};
use netgpu_pool::controller::{self, Controller};
use netgpu_pool::model::{self, Event, Pool, Strategy, Toleration, Vgpu};
use netgpu_pool::{fmt_size, parse_size};
use serde::Serialize;

use table::Table;

/// Where the store is when neither --store nor NETGPU_STORE says.
const CONFIG: &str = "/etc/netgpu/netgpuctl.toml";
const DEFAULT_STORE: &str = "etcd://127.0.0.1:2379";

/// Operate a netgpu GPU pool: GPU hosts, pools, virtual GPUs, events.
#[derive(Parser, Debug)]
#[command(name = "netgpuctl", version, about, long_about = None)]
struct Cli {
    /// The store: etcd://HOST:PORT[,HOST:PORT...] or file:///DIR (default: $NETGPU_STORE, then
    /// `store` in /etc/netgpu/netgpuctl.toml, then etcd://127.0.0.1:2379).
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Summary: hosts up, memory given out, vGPUs stranded on down hosts, the controller.
    Status,
    /// What happened: registrations, placements, moves, failovers.
    Events {
        /// Only events newer than this (e.g. 10m, 2h, 30s).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Keep printing new events.
        #[arg(long, short)]
        follow: bool,
    },
    /// Pools: which hosts a vGPU may use and how it is placed.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// GPU hosts (netgpu-backend instances) and their operator state.
    #[command(subcommand)]
    Host(HostCmd),
    /// Virtual GPUs.
    #[command(subcommand)]
    Vgpu(VgpuCmd),
    /// Certificates for TLS between hypervisors and GPU hosts (needs no store).
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// Run the failover controller (a daemon; several may run, one leads).
    Controller {
        /// Seconds between rounds.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Serve Prometheus metrics here (e.g. 127.0.0.1:9402).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Args, Debug, Default)]
struct PoolOpts {
    /// Free text.
    #[arg(long)]
    description: Option<String>,
    /// Hosts with all these labels belong to the pool: k=v[,k=v...] ("" for every host).
    #[arg(long, value_name = "LABELS")]
    selector: Option<String>,
    /// Zones the pool uses, comma-separated ("" for any).
    #[arg(long)]
    zones: Option<String>,
    /// GPU models the pool uses, comma-separated ("" for any).
    #[arg(long)]
    gpu_models: Option<String>,
    /// Taints every vGPU of the pool tolerates: key[=value][,key[=value]...].
    #[arg(long)]
    tolerations: Option<String>,
    /// Give out up to RATIO x each GPU's memory (1.0 = none, the default).
    #[arg(long, value_name = "RATIO")]
    oversubscription: Option<f64>,
    /// Memory kept free on every GPU (e.g. 1GiB).
    #[arg(long, value_name = "SIZE")]
    reserve: Option<String>,
    /// How hosts are chosen.
    #[arg(long, value_parser = parse_strategy)]
    host_strategy: Option<Strategy>,
    /// How a GPU within the chosen host is chosen.
    #[arg(long, value_parser = parse_strategy)]
    gpu_strategy: Option<Strategy>,
    /// How long a host may be down before its vGPUs are re-placed (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    failover_grace: Option<Duration>,
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Create a pool.
    Create {
        name: String,
        #[command(flatten)]
        opts: PoolOpts,
    },
    /// List pools.
    List,
    /// Show a pool with its hosts and capacity.
    Show { name: String },
    /// Change a pool's settings.
    Set {
        name: String,
        #[command(flatten)]
        opts: PoolOpts,
    },
}

#[derive(Subcommand, Debug)]
enum HostCmd {
    /// List GPU hosts.
    List,
    /// Show one host: GPUs, allocations, connected vGPUs.
    Show { name: String },
    /// No new vGPUs on this host.
    Cordon { name: String },
    /// Allow new vGPUs again (ends a drain too).
    Uncordon { name: String },
    /// Cordon and move every vGPU elsewhere; each VM follows at its guest's next GPU reset.
    Drain { name: String },
    /// Planned outage: no new vGPUs and no failover while it is down (on|off).
    Maintenance {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Forget a decommissioned host (refused while vGPUs are placed on it).
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
enum VgpuCmd {
    /// Create a vGPU for a VM and place it; prints the QEMU and libvirt snippets.
    Create {
        /// The VM it belongs to (also the vGPU's name unless --name).
        vm: String,
        #[arg(long)]
        pool: String,
        /// Device memory quota, e.g. 16GiB.
        #[arg(long)]
        memory: String,
        /// vGPU name (default: the VM's).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "")]
        tenant: String,
        /// Host labels required: k=v[,k=v...].
        #[arg(long)]
        labels: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        gpu_model: Option<String>,
        /// Taints tolerated: key[=value][,...].
        #[arg(long)]
        tolerations: Option<String>,
        /// Where netgpu-vdev puts the VM's socket.
        #[arg(long, default_value = "/run/netgpu")]
        socket_dir: String,
    },
    /// List vGPUs.
    List {
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        host: Option<String>,
    },
    /// Show one vGPU and its snippets.
    Show {
        name: String,
        /// Include the vGPU's backend token.
        #[arg(long)]
        show_token: bool,
        #[arg(long, default_value = "/run/netgpu")]
        socket_dir: String,
    },
    /// Move a vGPU to another host (the VM follows at its guest's next GPU reset).
    Move {
        name: String,
        /// Target host (default: the best other host).
        #[arg(long)]
        to: Option<String>,
    },
    /// Delete a vGPU and give its memory back.
    Delete { name: String },
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

/// `30`, `30s`, `5m`, `2h`, `500ms`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration {s:?}: write e.g. 30s, 5m, 2h or 500ms");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000).ok_or_else(bad)?,
        "m" => n.checked_mul(60_000).ok_or_else(bad)?,
        "h" => n.checked_mul(3_600_000).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(Duration::from_millis(ms))
}

fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("invalid label {part:?}: write key=value[,key=value...]");
        };
        m.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(m)
}

fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn parse_tolerations(s: &str) -> Vec<Toleration> {
    parse_list(s)
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Toleration {
                key: k.into(),
                value: Some(v.into()),
            },
            None => Toleration {
                key: p,
                value: None,
            },
        })
        .collect()
}

fn apply_pool_opts(p: &mut Pool, o: &PoolOpts) -> anyhow::Result<()> {
    if let Some(d) = &o.description {
        p.description = d.clone();
    }
    if let Some(s) = &o.selector {
        p.host_selector = parse_labels(s)?;
    }
    if let Some(z) = &o.zones {
        p.zones = parse_list(z);
    }
    if let Some(m) = &o.gpu_models {
        p.gpu_models = parse_list(m);
    }
    if let Some(t) = &o.tolerations {
        p.tolerations = parse_tolerations(t);
    }
    if let Some(r) = o.oversubscription {
        p.oversubscription = r;
    }
    if let Some(r) = &o.reserve {
        p.reserve_per_gpu = parse_size(r).map_err(anyhow::Error::msg)?;
    }
    if let Some(s) = o.host_strategy {
        p.host_strategy = s;
    }
    if let Some(s) = o.gpu_strategy {
        p.gpu_strategy = s;
    }
    if let Some(g) = o.failover_grace {
        p.failover_grace_s = g.as_secs();
    }
    Ok(())
}

fn store_url(cli: &Cli) -> anyhow::Result<String> {
    if let Some(s) = &cli.store {
        return Ok(s.clone());
    }
    if let Ok(s) = std::env::var("NETGPU_STORE") {
        if !s.is_empty() {
            return Ok(s);
        }
    }
    match std::fs::read_to_string(CONFIG) {
        Ok(text) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct File {
                store: Option<String>,
            }
            let f: File = toml::from_str(&text).with_context(|| format!("invalid {CONFIG}"))?;
            Ok(f.store.unwrap_or_else(|| DEFAULT_STORE.into()))
        }
        Err(_) => Ok(DEFAULT_STORE.into()),
    }
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn ago(unix_s: u64) -> String {
    let d = model::now_s().saturating_sub(unix_s);
    match d {
        0..=119 => format!("{d}s"),
        120..=7199 => format!("{}m", d / 60),
        7200..=172_799 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}

fn host_state(h: &HostView) -> String {
    let mut s = vec![if h.up { "Ready" } else { "Down" }];
    if h.host.maintenance {
        s.push("Maintenance");
    }
    if h.host.draining {
        s.push("Draining");
    } else if h.host.cordoned {
        s.push("Cordoned");
    }
    s.join(",")
}

fn redact(mut v: Vgpu) -> Vgpu {
    if !v.token.is_empty() {
        v.token = "(hidden: --show-token)".into();
    }
    v
}

fn print_event(e: &Event) {
    let t = e.time_ms / 1000;
    let line = format!(
        "{:>5} ago  {:<20} {:<24} {}",
        ago(t),
        e.kind,
        e.object,
        e.message
    );
    println!("{}", line.trim_end());
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,netgpu_pool=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netgpuctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Cert(c) = &cli.cmd {
        return cert::run(c, cli.json);
    }
    let url = store_url(&cli)?;
    let c = Control::open(&url).await.with_context(|| {
        format!("cannot open the store {url} (pass --store or set NETGPU_STORE)")
    })?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Status => status(&c, json).await,
        Cmd::Events {
            since,
            limit,
            follow,
        } => events(&c, since, limit, follow, json).await,
        Cmd::Pool(p) => pool(&c, p, json).await,
        Cmd::Host(h) => host(&c, h, json).await,
        Cmd::Vgpu(v) => vgpu(&c, v, json).await,
        Cmd::Cert(c) => cert::run(&c, json),
        Cmd::Controller {
            interval,
            metrics_listen,
        } => {
            if let Some(addr) = metrics_listen {
                let bound = netgpu_metrics::serve(addr).await?;
                tracing::info!(%bound, "metrics on /metrics");
            }
            let cfg = controller::Config {
                interval,
                ..controller::Config::default()
            };
            tracing::info!(store = %c.store().describe(), id = %cfg.id, "controller starting");
            Controller::new(c, cfg).run(shutdown()).await;
            Ok(())
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut t), Ok(mut i)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = t.recv() => {}
        _ = i.recv() => {}
    }
}

async fn status(c: &Control, json: bool) -> anyhow::Result<()> {
    let s = c.status().await?;
    if json {
        return print_json(&s);
    }
    println!("store:       {} (revision {})", s.store, s.revision);
    println!(
        "controller:  {}",
        s.controller
            .as_deref()
            .unwrap_or("none leading: start netgpuctl controller (netgpu-controller.service)")
    );
    println!(
        "hosts:       {} up of {} ({} cordoned, {} in maintenance)",
        s.hosts_up, s.hosts, s.hosts_cordoned, s.hosts_maintenance
    );
    println!(
        "GPUs:        {}, {} given out of {}",
        s.gpus,
        fmt_size(s.memory_allocated),
        fmt_size(s.memory_total)
    );
    println!(
        "pools:       {}\nvGPUs:       {} ({} attached to a running vdev)",
        s.pools, s.vgpus, s.vgpus_attached
    );
    if !s.vgpus_on_down_hosts.is_empty() {
        println!(
            "on down hosts (failover pending): {}",
            s.vgpus_on_down_hosts.join(", ")
        );
    }
    if !s.vgpus_unplaced.is_empty() {
        println!(
            "not placed (no capacity): {} (add capacity; the controller retries)",
            s.vgpus_unplaced.join(", ")
        );
    }
    Ok(())
}

async fn events(
    c: &Control,
    since: Option<Duration>,
    limit: usize,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut after = since.map_or(0, |d| model::now_ms().saturating_sub(d.as_millis() as u64));
    loop {
        let evs = c.events(after, limit).await?;
        if let Some(last) = evs.last() {
            after = last.time_ms;
        }
        if json {
            if follow {
                for e in &evs {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                print_json(&evs)?;
            }
        } else {
            for e in &evs {
                print_event(e);
            }
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pool(c: &Control, cmd: PoolCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PoolCmd::Create { name, opts } => {
            let mut p = Pool {
                name,
                ..Pool::default()
            };
            apply_pool_opts(&mut p, &opts)?;
            let p = c.create_pool(p).await?;
            if json {
                return print_json(&p);
            }
            println!("pool {} created", p.name);
        }
        PoolCmd::Set { name, opts } => {
            let mut err = None;
            let p = c
                .update_pool(&name, |p| {
                    if let Err(e) = apply_pool_opts(p, &opts) {
                        err = Some(e);
                    }
                })
                .await;
            if let Some(e) = err {
                return Err(e);
            }
            let p = p?;
            if json {
                return print_json(&p);
            }
            println!("pool {} updated", p.name);
        }
        PoolCmd::List => {
            let pools = c.pools().await?;
            if json {
                return print_json(&pools);
            }
            let mut t = Table::new(&[
                "NAME",
                "HOSTS",
                "ZONES",
                "OVERSUB",
                "RESERVE",
                "PLACEMENT",
                "GRACE",
            ]);
            for p in pools {
                t.row(vec![
                    p.name,
                    if p.host_selector.is_empty() {
                        "all".into()
                    } else {
                        labels_str(&p.host_selector)
                    },
                    if p.zones.is_empty() {
                        "any".into()
                    } else {
                        p.zones.join(",")
                    },
                    format!("{:.2}", p.oversubscription),
                    fmt_size(p.reserve_per_gpu),
                    format!("hosts:{} gpus:{}", p.host_strategy, p.gpu_strategy),
                    format!("{}s", p.failover_grace_s),
                ]);
            }
            print!("{}", t.render());
        }
        PoolCmd::Show { name } => {
            let p = c.pool(&name).await?;
            let hosts = c.hosts().await?;
            if json {
                return print_json(&p);
            }
            println!("pool {}: {}", p.name, p.description);
            println!(
                "  hosts: {}  zones: {}  GPU models: {}",
                if p.host_selector.is_empty() {
                    "all".into()
                } else {
                    labels_str(&p.host_selector)
                },
                if p.zones.is_empty() {
                    "any".into()
                } else {
                    p.zones.join(",")
                },
                if p.gpu_models.is_empty() {
                    "any".into()
                } else {
                    p.gpu_models.join(",")
                }
            );
            println!(
                "  oversubscription {:.2}, reserve {} per GPU, hosts {}, GPUs {}, failover after {}s",
                p.oversubscription,
                fmt_size(p.reserve_per_gpu),
                p.host_strategy,
                p.gpu_strategy,
                p.failover_grace_s
            );
            let mut t = Table::new(&["HOST", "STATE", "GPU", "MODEL", "CAPACITY", "FREE", "VGPUS"]);
            for h in hosts.iter().filter(|h| {
                p.host_selector
                    .iter()
                    .all(|(k, v)| h.host.labels.get(k) == Some(v))
            }) {
                for g in &h.host.gpus {
                    let n = h
                        .host
                        .allocations
                        .values()
                        .filter(|a| a.gpu == g.index)
                        .count();
                    t.row(vec![
                        h.host.name.clone(),
                        host_state(h),
                        g.index.to_string(),
                        g.model.clone(),
                        fmt_size(netgpu_pool::placement::capacity(&p, g.memory)),
                        fmt_size(netgpu_pool::placement::free(&p, &h.host, g.index)),
                        n.to_string(),
                    ]);
                }
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}

fn labels_str(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn host(c: &Control, cmd: HostCmd, json: bool) -> anyhow::Result<()> {
    let done = |what: &str, name: &str| {
        if !json {
            println!("host {name} {what}");
        }
    };
    match cmd {
        HostCmd::List => {
            let hosts = c.hosts().await?;
            if json {
                return print_json(&hosts);
            }
            let mut t = Table::new(&[
                "NAME",
                "STATE",
                "ADDRESS",
                "ZONE",
                "EXECUTOR",
                "GPUS",
                "MEMORY",
                "ALLOCATED",
                "VGPUS",
                "AGE",
            ]);
            for h in &hosts {
                t.row(vec![
                    h.host.name.clone(),
                    host_state(h),
                    h.host.address.clone(),
                    h.host.zone.clone(),
                    h.host.executor.clone(),
                    h.host.gpus.len().to_string(),
                    fmt_size(h.host.total_memory()),
                    fmt_size(h.host.allocated_total()),
                    h.host.allocations.len().to_string(),
                    ago(h.host.registered_at),
                ]);
            }
            print!("{}", t.render());
            if hosts.is_empty() {
                println!(
                    "(no hosts: start netgpu-backend with [pool] store = \"...\" on each GPU host)"
                );
            }
        }
        HostCmd::Show { name } => {
            let h = c.host(&name).await?;
            if json {
                return print_json(&h);
            }
            println!(
                "host {} ({}) at {}, zone {:?}, {} executor, version {}",
                h.host.name,
                host_state(&h),
                h.host.address,
                h.host.zone,
                h.host.executor,
                h.host.version
            );
            if !h.host.labels.is_empty() {
                println!("  labels: {}", labels_str(&h.host.labels));
            }
            if !h.host.taints.is_empty() {
                let t: Vec<String> = h
                    .host
                    .taints
                    .iter()
                    .map(|t| format!("{}={}", t.key, t.value))
                    .collect();
                println!("  taints: {}", t.join(","));
            }
            let mut t = Table::new(&["GPU", "MODEL", "UUID", "MEMORY", "ALLOCATED"]);
            for g in &h.host.gpus {
                t.row(vec![
                    g.index.to_string(),
                    g.model.clone(),
                    g.uuid.clone(),
                    fmt_size(g.memory),
                    fmt_size(h.host.allocated(g.index)),
                ]);
            }
            print!("{}", t.render());
            let mut t = Table::new(&["VGPU", "GPU", "MEMORY", "CONNECTED"]);
            for (v, a) in &h.host.allocations {
                t.row(vec![
                    v.clone(),
                    a.gpu.to_string(),
                    fmt_size(a.memory),
                    if h.connected.contains(v) { "yes" } else { "no" }.into(),
                ]);
            }
            print!("{}", t.render());
            let elsewhere: Vec<&String> = h
                .connected
                .iter()
                .filter(|v| !h.host.allocations.contains_key(*v))
                .collect();
            if !elsewhere.is_empty() {
                println!(
                    "  still connected here, placed elsewhere (they move at their guest's next GPU reset): {}",
                    elsewhere.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        HostCmd::Cordon { name } => {
            let h = c
                .update_host(&name, "HostCordoned", |h| h.cordoned = true)
                .await?;
            if json {
                return print_json(&h);
            }
            done("cordoned", &name);
        }
        HostCmd::Uncordon { name } => {
            let h = c
                .update_host(&name, "HostUncordoned", |h| {
                    h.cordoned = false;
                    h.draining = false;
                })
                .await?;
            if json {
                return print_json(&h);
            }
            done("uncordoned", &name);
        }
        HostCmd::Maintenance { name, state } => {
            let on = state == "on";
            let h = c
                .update_host(
                    &name,
                    if on {
                        "HostMaintenance"
                    } else {
                        "HostMaintenanceEnded"
                    },
                    |h| h.maintenance = on,
                )
                .await?;
            if json {
                return print_json(&h);
            }
            done(
                if on {
                    "in maintenance: no new vGPUs, no failover while it is down"
                } else {
                    "out of maintenance"
                },
                &name,
            );
        }
        HostCmd::Drain { name } => {
            let r = c.drain_host(&name).await?;
            if json {
                return print_json(&r);
            }
            for (v, to) in &r.moved {
                println!("vgpu {v} -> {to}");
            }
            for (v, e) in &r.failed {
                println!("vgpu {v} stays: {e}");
            }
            println!(
                "host {name} draining: {} moved, {} stay; each VM switches at its guest's next GPU reset (netgpuctl host show {name} lists who is still connected)",
                r.moved.len(),
                r.failed.len()
            );
        }
        HostCmd::Remove { name } => {
            c.remove_host(&name).await?;
            done("removed", &name);
        }
    }
    Ok(())
}

async fn vgpu(c: &Control, cmd: VgpuCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        VgpuCmd::Create {
            vm,
            pool,
            memory,
            name,
            tenant,
            labels,
            zone,
            gpu_model,
            tolerations,
            socket_dir,
        } => {
            let memory = parse_size(&memory).map_err(anyhow::Error::msg)?;
            let spec = Vgpu {
                name: name.unwrap_or_else(|| vm.clone()),
                vm,
                pool,
                tenant,
                memory,
                labels: labels
                    .as_deref()
                    .map(parse_labels)
                    .transpose()?
                    .unwrap_or_default(),
                zone: zone.unwrap_or_default(),
                gpu_model: gpu_model.unwrap_or_default(),
                tolerations: tolerations
                    .as_deref()
                    .map(parse_tolerations)
                    .unwrap_or_default(),
                ..Vgpu::default()
            };
            let v = c.create_vgpu(spec).await?;
            let s = snippets::for_vgpu(&v.name, &socket_dir);
            if json {
                #[derive(Serialize)]
                struct Out {
                    vgpu: Vgpu,
                    #[serde(flatten)]
                    snippets: snippets::Snippets,
                }
                return print_json(&Out {
                    vgpu: redact(v),
                    snippets: s,
                });
            }
            let p = v.placement.clone().unwrap_or_else(|| model::Placement {
                host: "?".into(),
                gpu: 0,
                address: String::new(),
                generation: 0,
                since: 0,
            });
            println!(
                "vgpu {} created: {} on {} GPU {} (pool {})",
                v.name,
                fmt_size(v.memory),
                p.host,
                p.gpu,
                v.pool
            );
            print_snippets(&s);
        }
        VgpuCmd::List { pool, host } => {
            let mut vs = c.vgpus().await?;
            vs.retain(|v| {
                pool.as_ref().is_none_or(|p| *p == v.pool)
                    && host
                        .as_ref()
                        .is_none_or(|h| v.placement.as_ref().is_some_and(|p| p.host == *h))
            });
            let att: BTreeMap<String, model::Attachment> = c
                .attachments()
                .await?
                .into_iter()
                .map(|a| (a.vgpu.clone(), a))
                .collect();
            let up: std::collections::BTreeSet<String> = c
                .hosts()
                .await?
                .into_iter()
                .filter(|h| h.up)
                .map(|h| h.host.name)
                .collect();
            if json {
                let vs: Vec<Vgpu> = vs.into_iter().map(redact).collect();
                return print_json(&vs);
            }
            let mut t = Table::new(&[
                "NAME", "VM", "POOL", "TENANT", "MEMORY", "HOST", "GPU", "GEN", "STATE", "VDEV",
            ]);
            for v in vs {
                let (h, g, gen) = match &v.placement {
                    Some(p) => (p.host.clone(), p.gpu.to_string(), p.generation.to_string()),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                let state = match &v.placement {
                    None => "Unplaced",
                    Some(p) if !up.contains(&p.host) => "HostDown",
                    Some(_) => "Placed",
                };
                let vdev = match att.get(&v.name) {
                    None => "-".to_string(),
                    Some(a) if a.connected_host.is_empty() => {
                        format!("{} (connecting)", a.hypervisor)
                    }
                    Some(a) if a.connected_host != h => {
                        format!("{} on {} (moves at reset)", a.hypervisor, a.connected_host)
                    }
                    Some(a) => a.hypervisor.clone(),
                };
                t.row(vec![
                    v.name,
                    v.vm,
                    v.pool,
                    v.tenant,
                    fmt_size(v.memory),
                    h,
                    g,
                    gen,
                    state.into(),
                    vdev,
                ]);
            }
            print!("{}", t.render());
        }
        VgpuCmd::Show {
            name,
            show_token,
            socket_dir,
        } => {
            let v = c.vgpu(&name).await?;
            let v = if show_token { v } else { redact(v) };
            let s = snippets::for_vgpu(&v.name, &socket_dir);
            if json {
                #[derive(Serialize)]
                struct Out {
                    vgpu: Vgpu,
                    #[serde(flatten)]
                    snippets: snippets::Snippets,
                }
                return print_json(&Out {
                    vgpu: v,
                    snippets: s,
                });
            }
            println!(
                "vgpu {} (VM {}, pool {}, tenant {:?}): {}",
                v.name,
                v.vm,
                v.pool,
                v.tenant,
                fmt_size(v.memory)
            );
            match &v.placement {
                Some(p) => println!(
                    "  placed on {} GPU {} at {} (generation {}, {} ago)",
                    p.host,
                    p.gpu,
                    p.address,
                    p.generation,
                    ago(p.since)
                ),
                None => println!("  not placed: no host had capacity; the controller retries"),
            }
            if !v.labels.is_empty() {
                println!("  requires labels {}", labels_str(&v.labels));
            }
            println!("  token: {}", v.token);
            print_snippets(&s);
        }
        VgpuCmd::Move { name, to } => {
            let v = c
                .move_vgpu(&name, to.as_deref(), MoveReason::Operator)
                .await?;
            if json {
                return print_json(&redact(v));
            }
            let p = v.placement.as_ref();
            println!(
                "vgpu {name} moved to {} GPU {}; its VM switches at the guest's next GPU reset",
                p.map_or("?", |p| p.host.as_str()),
                p.map_or(0, |p| p.gpu)
            );
        }
        VgpuCmd::Delete { name } => {
            let v = c.vgpu(&name).await?;
            if c.attachments().await?.iter().any(|a| a.vgpu == name) && !json {
                eprintln!("netgpuctl: warning: a vdev still serves {name}: stop netgpu-vdev@{name}.service; its backend no longer admits it");
            }
            c.delete_vgpu(&name).await?;
            if json {
                return print_json(&redact(v));
            }
            println!("vgpu {name} deleted ({} given back)", fmt_size(v.memory));
        }
    }
    Ok(())
}

fn print_snippets(s: &snippets::Snippets) {
    println!(
        "\non the hypervisor:\n  systemctl enable --now {}   # serves {}\n",
        s.vdev_unit, s.socket
    );
    println!("QEMU:\n  -device '{}'\n", s.qemu_device);
    println!("libvirt (domain XML):\n{}", s.libvirt_xml);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_labels_parse_with_clear_errors() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
        let l = parse_labels("gpu=h100, nvlink=yes").unwrap();
        assert_eq!(l.get("nvlink").map(String::as_str), Some("yes"));
        assert!(parse_labels("oops").is_err());
        let t = parse_tolerations("dedicated=ml,spot");
        assert_eq!(t[0].value.as_deref(), Some("ml"));
        assert_eq!(t[1].value, None);
    }

    #[test]
    fn the_cli_parses_the_documented_commands() {
        for args in [
            vec![
                "netgpuctl",
                "vgpu",
                "create",
                "vm1",
                "--pool",
                "p",
                "--memory",
                "16GiB",
                "--labels",
                "a=b",
            ],
            vec!["netgpuctl", "--json", "host", "list"],
            vec!["netgpuctl", "host", "maintenance", "h1", "on"],
            vec![
                "netgpuctl",
                "pool",
                "set",
                "p",
                "--oversubscription",
                "1.5",
                "--host-strategy",
                "pack",
            ],
            vec!["netgpuctl", "events", "--since", "10m", "--follow"],
            vec!["netgpuctl", "vgpu", "move", "vm1", "--to", "h2"],
        ] {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["netgpuctl", "host", "maintenance", "h1", "maybe"]).is_err());
        assert!(
            Cli::try_parse_from(["netgpuctl", "vgpu", "create", "vm1", "--memory", "1GiB"])
                .is_err()
        );
    }
}
