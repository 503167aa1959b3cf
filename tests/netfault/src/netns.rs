//! Network namespaces the tests create themselves: a "GPU host" and a "hypervisor" joined by
//! a veth pair, and nftables rules on them for partitions (packets silently dropped: no
//! RST, no ICMP) and random packet loss.
//!
//! Needs root, iproute2 and nftables (`apt-get install nftables`). A thread enters a
//! namespace with `setns(2)` ([`NsHandle::enter`]); every socket it creates afterwards lives
//! there, so a backend and a client run in one test process on two "machines". Addresses are
//! from 198.18.0.0/15, the range reserved for network benchmarks: they exist only inside the
//! namespaces, which are deleted when the [`Pair`] is dropped.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {stderr}; these tests need root, iproute2 and nftables (`apt-get install nftables`)")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `{cmd}`; these tests need root, iproute2 and nftables (`apt-get install nftables`)")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open network namespace {name}")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, NetnsError>;

fn run(cmd: &mut Command, input: Option<&str>) -> Result<Output> {
    let text = format!("{cmd:?}").replace('"', "");
    let spawn = |source| NetnsError::Spawn {
        cmd: text.clone(),
        source,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn)?;
    if let (Some(i), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(i.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd: text,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args), None)
}

/// An open handle on a namespace, for threads to enter.
#[derive(Clone, Debug)]
pub struct NsHandle {
    file: Arc<std::fs::File>,
}

impl NsHandle {
    /// Moves the calling thread into the namespace.
    pub fn enter(&self) -> std::io::Result<()> {
        setns(&*self.file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
    }
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    handle: NsHandle,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let file = std::fs::File::open(format!("/run/netns/{name}")).map_err(|source| {
            NetnsError::Open {
                name: name.to_string(),
                source,
            }
        })?;
        let ns = Netns {
            name: name.to_string(),
            handle: NsHandle {
                file: Arc::new(file),
            },
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn handle(&self) -> NsHandle {
        self.handle.clone()
    }

    /// Runs `f` on a new thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<std::io::Result<T>> {
        let h = self.handle();
        std::thread::spawn(move || {
            h.enter()?;
            Ok(f())
        })
    }

    /// A command that runs inside this namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Applies an nftables script inside this namespace.
    pub fn nft(&self, script: &str) -> Result<()> {
        run(self.command("nft").args(["-f", "-"]), Some(script)).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair: `gpu` (198.18.0.1) and `hv` (198.18.0.2), each with
/// its own loopback.
#[derive(Debug)]
pub struct Pair {
    pub gpu: Netns,
    pub hv: Netns,
    pub gpu_ip: Ipv4Addr,
    pub hv_ip: Ipv4Addr,
}

const TABLE: &str = "netgpu_fault";

/// Whether the namespace tests are switched off (`NETGPU_SKIP_NETNS=1`, for machines where
/// the tests cannot be root); they fail, not skip, when they cannot run otherwise.
pub fn skipped() -> bool {
    let skip = std::env::var("NETGPU_SKIP_NETNS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("network namespace test skipped (NETGPU_SKIP_NETNS=1)");
    }
    skip
}

impl Pair {
    pub fn create() -> Result<Pair> {
        let tag = format!(
            "{:x}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let (g, h) = (format!("ngf{tag}g"), format!("ngf{tag}h"));
        let gpu = Netns::create(&g)?;
        let hv = Netns::create(&h)?;
        // Interface names are at most 15 bytes.
        let (vg, vh) = (format!("v{tag}g"), format!("v{tag}h"));
        ip(&[
            "link", "add", &vg, "netns", &g, "type", "veth", "peer", "name", &vh, "netns", &h,
        ])?;
        let (gpu_ip, hv_ip) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        ip(&["-n", &g, "addr", "add", "198.18.0.1/30", "dev", &vg])?;
        ip(&["-n", &h, "addr", "add", "198.18.0.2/30", "dev", &vh])?;
        ip(&["-n", &g, "link", "set", &vg, "up"])?;
        ip(&["-n", &h, "link", "set", &vh, "up"])?;
        let p = Pair {
            gpu,
            hv,
            gpu_ip,
            hv_ip,
        };
        p.heal()?;
        Ok(p)
    }

    fn rules(&self, rule: &str) -> Result<()> {
        for (ns, peer) in [(&self.gpu, self.hv_ip), (&self.hv, self.gpu_ip)] {
            let script = format!(
                "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {peer} {rule}\n  }}\n}}\n"
            );
            ns.nft(&script)?;
        }
        Ok(())
    }

    /// Every packet between the two is dropped silently, both ways (no RST, no ICMP).
    pub fn partition(&self) -> Result<()> {
        self.rules("drop")
    }

    /// Each packet between the two is dropped with probability `per_mille`/1000, both ways.
    pub fn loss(&self, per_mille: u32) -> Result<()> {
        self.rules(&format!("numgen random mod 1000 < {per_mille} drop"))
    }

    /// Removes every fault rule.
    pub fn heal(&self) -> Result<()> {
        self.rules("accept")
    }
}
