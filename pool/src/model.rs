//! The pool's records: pools, GPU hosts with their GPUs and allocations, virtual GPUs, vGPU
//! attachments and events, and the store keys they live under. Every record is JSON, so an
//! operator can read it with `etcdctl get --prefix /netgpu/`.
//!
//! Memory a vGPU holds on a host is recorded twice on purpose: in the vGPU's `placement` (where
//! it runs) and in the host's `allocations` (what the host has given out). Both change in one
//! store transaction that compares the host record's revision, so two concurrent placements on
//! one host cannot both see the same free memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Root of every key.
pub const ROOT: &str = "/netgpu/";

/// Store keys, one function per record kind.
pub mod keys {
    pub const POOLS: &str = "/netgpu/pools/";
    pub const HOSTS: &str = "/netgpu/hosts/";
    /// Liveness: one key per host, bound to the host's lease.
    pub const ALIVE: &str = "/netgpu/alive/";
    pub const VGPUS: &str = "/netgpu/vgpus/";
    /// Attachments: one key per vGPU whose vdev runs, bound to that vdev's lease.
    pub const ATTACH: &str = "/netgpu/attach/";
    pub const EVENTS: &str = "/netgpu/events/";
    /// The failover controller's leadership key.
    pub const LEADER: &str = "/netgpu/controller/leader";

    pub fn pool(name: &str) -> String {
        format!("{POOLS}{name}")
    }
    pub fn host(name: &str) -> String {
        format!("{HOSTS}{name}")
    }
    pub fn alive(name: &str) -> String {
        format!("{ALIVE}{name}")
    }
    pub fn vgpu(name: &str) -> String {
        format!("{VGPUS}{name}")
    }
    pub fn attach(name: &str) -> String {
        format!("{ATTACH}{name}")
    }
}

/// How a pool chooses among hosts, and among one host's GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Prefer the candidate with the most free memory (fraction of its capacity).
    #[default]
    Spread,
    /// Prefer the candidate with the least free memory that still fits (best fit).
    Pack,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" => Ok(Strategy::Spread),
            "pack" => Ok(Strategy::Pack),
            _ => Err(format!("unknown strategy {s:?}: use spread or pack")),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Spread => "spread",
            Strategy::Pack => "pack",
        })
    }
}

/// A pool: which hosts belong to it and how vGPUs are placed on them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pool {
    pub name: String,
    pub description: String,
    /// Hosts whose labels include all of these belong to the pool (empty: every host).
    pub host_selector: BTreeMap<String, String>,
    /// Zones the pool uses (empty: any zone).
    pub zones: Vec<String>,
    /// GPU models the pool uses (empty: any).
    pub gpu_models: Vec<String>,
    /// Taints every vGPU of the pool tolerates.
    pub tolerations: Vec<Toleration>,
    /// Device memory of each GPU given out may reach `memory * oversubscription`; 1.0 (the
    /// default) gives out no more than the GPU has.
    pub oversubscription: f64,
    /// Memory kept free on every GPU (driver contexts, fragmentation), in bytes.
    pub reserve_per_gpu: u64,
    /// How hosts are chosen.
    pub host_strategy: Strategy,
    /// How a GPU inside the chosen host is chosen.
    pub gpu_strategy: Strategy,
    /// A host whose lease has been gone this long has its vGPUs re-placed, in seconds.
    pub failover_grace_s: u64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            name: String::new(),
            description: String::new(),
            host_selector: BTreeMap::new(),
            zones: Vec::new(),
            gpu_models: Vec::new(),
            tolerations: Vec::new(),
            oversubscription: 1.0,
            reserve_per_gpu: 0,
            host_strategy: Strategy::Spread,
            gpu_strategy: Strategy::Pack,
            failover_grace_s: 30,
        }
    }
}

/// A taint keeps vGPUs off a host unless they tolerate it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// Tolerates taints with this key (and this value, when `value` is set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

impl Toleration {
    pub fn tolerates(&self, t: &Taint) -> bool {
        self.key == t.key && self.value.as_ref().is_none_or(|v| *v == t.value)
    }
}

/// One physical GPU of a host, as its backend reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Index on the host (the CUDA ordinal).
    pub index: u32,
    /// Model name, e.g. "NVIDIA H100 80GB HBM3" or "netgpu CPU executor".
    pub model: String,
    #[serde(default)]
    pub uuid: String,
    /// Device memory, bytes.
    pub memory: u64,
}

/// Memory one vGPU holds on one GPU of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub gpu: u32,
    pub memory: u64,
}

/// A GPU host (one `netgpu-backend`). The backend writes the reported part when it registers;
/// operators and placement write the rest; every writer compares the record's revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    pub name: String,
    /// Address vdevs connect to, HOST:PORT.
    pub address: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `cuda` or `cpu`.
    pub executor: String,
    /// Backend version.
    pub version: String,
    pub gpus: Vec<Gpu>,
    /// Unix seconds of the last registration.
    pub registered_at: u64,
    /// Operator: no new placements.
    pub cordoned: bool,
    /// Operator: cordoned and its vGPUs being moved away.
    pub draining: bool,
    /// Operator: a planned outage; its vGPUs are not failed over while it is down.
    pub maintenance: bool,
    /// Memory given out, by vGPU name.
    pub allocations: BTreeMap<String, Allocation>,
}

impl Host {
    /// Sum of the allocations on GPU `index`.
    pub fn allocated(&self, index: u32) -> u64 {
        self.allocations
            .values()
            .filter(|a| a.gpu == index)
            .fold(0u64, |s, a| s.saturating_add(a.memory))
    }

    pub fn gpu(&self, index: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.index == index)
    }

    pub fn total_memory(&self) -> u64 {
        self.gpus
            .iter()
            .fold(0u64, |s, g| s.saturating_add(g.memory))
    }

    pub fn allocated_total(&self) -> u64 {
        self.allocations
            .values()
            .fold(0u64, |s, a| s.saturating_add(a.memory))
    }

    /// Whether operators allow new placements.
    pub fn schedulable(&self) -> bool {
        !(self.cordoned || self.draining || self.maintenance)
    }
}

/// Where a vGPU runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub gpu: u32,
    /// The host's address when placed (vdev re-reads the host record for the current one).
    pub address: String,
    /// Counts placements of this vGPU: 1 for the first, +1 for every move or failover.
    pub generation: u64,
    /// Unix seconds.
    pub since: u64,
}

/// A virtual GPU: a memory quota on some GPU of the pool, used by one VM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vgpu {
    pub name: String,
    /// The VM it belongs to.
    pub vm: String,
    pub pool: String,
    pub tenant: String,
    /// Device memory quota, bytes; the backend enforces it.
    pub memory: u64,
    /// Host labels the vGPU requires (in addition to the pool's selector).
    pub labels: BTreeMap<String, String>,
    /// Zone required (empty: any zone of the pool).
    pub zone: String,
    /// GPU model required (empty: any model of the pool).
    pub gpu_model: String,
    pub tolerations: Vec<Toleration>,
    /// The secret vdev presents to the backend; valid only on the host it is placed on.
    pub token: String,
    /// None while no host could take it (after a failover without capacity).
    pub placement: Option<Placement>,
    /// Unix seconds.
    pub created_at: u64,
}

/// Written by the vdev that serves a vGPU, bound to that vdev's lease: it disappears when the
/// vdev stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attachment {
    pub vgpu: String,
    /// The hypervisor's host name.
    pub hypervisor: String,
    pub pid: u32,
    /// The host vdev's backend session runs on now (empty: not connected).
    pub connected_host: String,
    /// The placement generation vdev follows.
    pub generation: u64,
    pub since: u64,
}

/// Something that happened, for `netgpuctl events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// e.g. `VgpuCreated`, `Failover`, `PlacementFailed`.
    pub kind: String,
    /// `host/NAME`, `vgpu/NAME` or `pool/NAME`.
    pub object: String,
    pub message: String,
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks a record name: 1 to 63 characters of `[a-z0-9._-]`, starting with a letter or digit
/// (it becomes part of a store key and of systemd unit names).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_sums_per_gpu() {
        let mut h = Host::default();
        h.allocations
            .insert("a".into(), Allocation { gpu: 0, memory: 10 });
        h.allocations
            .insert("b".into(), Allocation { gpu: 1, memory: 5 });
        h.allocations
            .insert("c".into(), Allocation { gpu: 0, memory: 7 });
        assert_eq!(h.allocated(0), 17);
        assert_eq!(h.allocated(1), 5);
        assert_eq!(h.allocated_total(), 22);
    }

    #[test]
    fn names_are_key_and_unit_safe() {
        assert!(valid_name("vm1"));
        assert!(valid_name("gpu-host.a_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("VM"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn tolerations_match_key_and_optional_value() {
        let t = Taint {
            key: "dedicated".into(),
            value: "ml".into(),
        };
        assert!(Toleration {
            key: "dedicated".into(),
            value: None
        }
        .tolerates(&t));
        assert!(Toleration {
            key: "dedicated".into(),
            value: Some("ml".into())
        }
        .tolerates(&t));
        assert!(!Toleration {
            key: "dedicated".into(),
            value: Some("web".into())
        }
        .tolerates(&t));
    }

    #[test]
    fn old_records_with_missing_fields_still_parse() {
        let p: Pool = serde_json::from_str(r#"{"name":"p"}"#).unwrap();
        assert_eq!(p.oversubscription, 1.0);
        assert_eq!(p.gpu_strategy, Strategy::Pack);
        let h: Host = serde_json::from_str(r#"{"name":"h","gpus":[]}"#).unwrap();
        assert!(h.schedulable());
    }
}
