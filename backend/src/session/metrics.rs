//! A session's share of the backend's Prometheus metrics (the `netgpu_metrics::DataPath`
//! families): operation latency from receiving a request to its reply, kernels launched,
//! bytes copied each way, failed operations by CUDA error, and the session's memory (quota,
//! used; the GPU's used memory is the sum over its sessions).
//!
//! Off unless the backend serves `/metrics` ([`enable`], called by `pool::serve_metrics`):
//! then a session costs nothing here. Label values come from what the backend trusts, not
//! from the client: `vgpu` and `tenant` are the pool grant's for a vGPU token, else empty
//! (the client's self-chosen name labels only the per-session series, which go when the
//! session ends). The per-vGPU series of a pool vGPU go when it is no longer placed here and
//! none of its sessions is open ([`forget_vgpus`]), so the set of series stays bounded by
//! what is placed and open here.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Instant;

use netgpu_metrics::labels;
use netgpu_metrics::prometheus_client::metrics::counter::Counter;
use netgpu_metrics::prometheus_client::metrics::gauge::Gauge;
use netgpu_metrics::prometheus_client::metrics::histogram::Histogram;
use netgpu_metrics::DataPath;
use netgpu_proto::cuda::CuResult;

/// The op label of errors reported by work that ran after its request was answered (a
/// kernel that failed on its stream, a `NO_REPLY` copy): they surface at the next
/// synchronising call.
pub const ASYNC_OP: &str = "async";

/// Directions of [`labels::Transfer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    HtoD,
    DtoH,
    DtoD,
}

impl Direction {
    const ALL: [Direction; 3] = [Direction::HtoD, Direction::DtoH, Direction::DtoD];

    fn label(self) -> &'static str {
        match self {
            Direction::HtoD => "htod",
            Direction::DtoH => "dtoh",
            Direction::DtoD => "dtod",
        }
    }
}

static GPU: OnceLock<labels::Gpu> = OnceLock::new();

/// Turns session metrics on for this process's GPU (its DCGM-style labels).
pub fn enable(gpu: labels::Gpu) {
    let _ = GPU.set(gpu);
}

/// Per-vGPU bookkeeping: what to remove once the vGPU is gone from this host.
#[derive(Default)]
struct Seen {
    sessions: usize,
    /// Placed here (a current grant), or not from the pool at all (`vgpu=""`).
    granted: bool,
    ops: BTreeSet<&'static str>,
    errors: BTreeSet<(&'static str, &'static str)>,
}

static SEEN: LazyLock<Mutex<HashMap<String, Seen>>> = LazyLock::new(Default::default);

fn seen<R>(f: impl FnOnce(&mut HashMap<String, Seen>) -> R) -> R {
    f(&mut SEEN.lock().unwrap_or_else(|p| p.into_inner()))
}

fn remove_vgpu_series(dp: &DataPath, vgpu: &str, s: &Seen) {
    let op = |op: &str| labels::Op {
        vgpu: vgpu.into(),
        op: op.into(),
    };
    dp.kernels.remove(&op("LaunchKernel"));
    for o in &s.ops {
        dp.op_latency.remove(&op(o));
    }
    for (o, e) in &s.errors {
        dp.errors.remove(&labels::OpError {
            vgpu: vgpu.into(),
            op: (*o).into(),
            error: (*e).into(),
        });
    }
    for d in Direction::ALL {
        dp.bytes.remove(&labels::Transfer {
            vgpu: vgpu.into(),
            direction: d.label().into(),
        });
    }
}

/// The pool's grants changed: `placed` are the vGPUs placed here now. Series of vGPUs that
/// left and have no open session are removed (the rest when their last session ends).
pub fn forget_vgpus(placed: &BTreeSet<String>) {
    let dp = DataPath::global();
    seen(|m| {
        for (name, s) in m.iter_mut() {
            if !name.is_empty() {
                s.granted = placed.contains(name);
            }
        }
        m.retain(|name, s| {
            let keep = s.granted || s.sessions > 0;
            if !keep {
                remove_vgpu_series(dp, name, s);
            }
            keep
        });
    });
}

struct Pending {
    op: &'static str,
    start: Instant,
    moved: Option<(Direction, u64)>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    latency: HashMap<&'static str, Histogram>,
}

/// One session's series and handles.
pub struct SessionMetrics {
    dp: &'static DataPath,
    session: labels::Session,
    used: Gauge,
    gpu_used: Gauge,
    last_used: AtomicI64,
    kernels: Counter,
    bytes: [Counter; 3],
    state: Mutex<State>,
}

/// Who a session is, as the backend knows it.
pub struct Identity<'a> {
    pub session_id: u64,
    /// A pool vGPU's name (from its grant), else empty.
    pub vgpu: &'a str,
    pub tenant: &'a str,
    pub quota: u64,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SessionMetrics {
    /// The session's metrics, or `None` when metrics are off.
    pub fn open(id: Identity<'_>) -> Option<Arc<SessionMetrics>> {
        let gpu = GPU.get()?;
        let dp = DataPath::global();
        let session = labels::Session {
            gpu: gpu.gpu.clone(),
            UUID: gpu.UUID.clone(),
            Hostname: gpu.Hostname.clone(),
            vgpu: id.vgpu.into(),
            tenant: id.tenant.into(),
            session: id.session_id.to_string(),
        };
        dp.session_memory_quota
            .get_or_create(&session)
            .set(gauge_value(id.quota));
        let used = dp.session_memory_used.get_or_create(&session).clone();
        used.set(0);
        let gpu_used = dp.gpu_memory_used.get_or_create(gpu).clone();
        let op = labels::Op {
            vgpu: id.vgpu.into(),
            op: "LaunchKernel".into(),
        };
        let kernels = dp.kernels.get_or_create(&op).clone();
        let bytes = Direction::ALL.map(|d| {
            dp.bytes
                .get_or_create(&labels::Transfer {
                    vgpu: id.vgpu.into(),
                    direction: d.label().into(),
                })
                .clone()
        });
        seen(|m| {
            let s = m.entry(id.vgpu.to_string()).or_default();
            s.sessions += 1;
            // Not from the pool, or admitted by a current grant (the handshake checked).
            s.granted = true;
        });
        Some(Arc::new(SessionMetrics {
            dp,
            session,
            used,
            gpu_used,
            last_used: AtomicI64::new(0),
            kernels,
            bytes,
            state: Mutex::new(State::default()),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Request `id` (operation `op`, moving `moved` bytes if it succeeds) was received.
    pub fn begin(&self, id: u64, op: &'static str, moved: Option<(Direction, u64)>) {
        self.state().pending.insert(
            id,
            Pending {
                op,
                start: Instant::now(),
                moved,
            },
        );
    }

    /// Request `id` was answered (or, for `NO_REPLY` work, finished) with `result`.
    pub fn finish(&self, id: u64, result: Result<(), CuResult>) {
        let (op, moved) = {
            let mut st = self.state();
            match st.pending.remove(&id) {
                Some(p) => {
                    let secs = p.start.elapsed().as_secs_f64();
                    let vgpu = &self.session.vgpu;
                    let h = st.latency.entry(p.op).or_insert_with(|| {
                        seen(|m| {
                            if let Some(s) = m.get_mut(vgpu.as_str()) {
                                s.ops.insert(p.op);
                            }
                        });
                        self.dp
                            .op_latency
                            .get_or_create(&labels::Op {
                                vgpu: vgpu.clone(),
                                op: p.op.into(),
                            })
                            .clone()
                    });
                    h.observe(secs);
                    (p.op, p.moved)
                }
                // Refused before it was understood (undecodable, bad frame flags).
                None => ("invalid", None),
            }
        };
        match result {
            Ok(()) => {
                if let Some((d, n)) = moved {
                    self.bytes[d as usize].inc_by(n);
                }
            }
            Err(e) => self.error(op, e),
        }
    }

    /// A failure of work answered earlier (see [`ASYNC_OP`]), or of operation `op`.
    pub fn error(&self, op: &'static str, e: CuResult) {
        // Not an error: a query's "still running".
        if e == CuResult::NOT_READY {
            return;
        }
        let name = e.name();
        seen(|m| {
            if let Some(s) = m.get_mut(self.session.vgpu.as_str()) {
                s.errors.insert((op, name));
            }
        });
        self.dp
            .errors
            .get_or_create(&labels::OpError {
                vgpu: self.session.vgpu.clone(),
                op: op.into(),
                error: name.into(),
            })
            .inc();
    }

    /// A kernel launch was accepted.
    pub fn launched(&self) {
        self.kernels.inc();
    }

    /// The session holds `used` bytes of device memory now.
    pub fn memory_used(&self, used: u64) {
        let used = gauge_value(used);
        let before = self.last_used.swap(used, Ordering::Relaxed);
        if before != used {
            self.used.set(used);
            self.gpu_used.inc_by(used - before);
        }
    }
}

impl Drop for SessionMetrics {
    fn drop(&mut self) {
        // The engine is gone: the session holds nothing any more.
        self.memory_used(0);
        self.dp.end_session(&self.session);
        let vgpu = self.session.vgpu.clone();
        let dp = self.dp;
        seen(|m| {
            let gone = match m.get_mut(&vgpu) {
                Some(s) => {
                    s.sessions = s.sessions.saturating_sub(1);
                    s.sessions == 0 && !s.granted
                }
                None => false,
            };
            if gone {
                if let Some(s) = m.remove(&vgpu) {
                    remove_vgpu_series(dp, &vgpu, &s);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(series: &str) -> bool {
        netgpu_metrics::encode_text().contains(series)
    }

    #[test]
    fn a_vgpus_series_go_once_it_left_and_its_last_session_ended() {
        enable(labels::Gpu::default());
        let open = |vgpu| {
            SessionMetrics::open(Identity {
                session_id: 7,
                vgpu,
                tenant: "t",
                quota: 1,
            })
            .unwrap()
        };
        let m = open("unit-a");
        m.begin(1, "MemAlloc", None);
        m.finish(1, Err(CuResult::OUT_OF_MEMORY));
        m.begin(2, "MemcpyHtoD", Some((Direction::HtoD, 10)));
        m.finish(2, Ok(()));
        let lat = r#"netgpu_operation_duration_seconds_count{vgpu="unit-a",op="MemAlloc"} 1"#;
        let err = r#"error="CUDA_ERROR_OUT_OF_MEMORY"} 1"#;
        let bytes = r#"netgpu_transfer_bytes_total{vgpu="unit-a",direction="htod"} 10"#;
        assert!(has(lat) && has(err) && has(bytes));
        drop(m);
        // Still placed here: the counters stay across sessions.
        assert!(has(lat) && has(bytes));
        assert!(!has(r#"vgpu="unit-a",tenant="t",session="7""#));
        let m = open("unit-a");
        // Moved away while a session is open: kept until that session ends.
        forget_vgpus(&BTreeSet::new());
        assert!(has(lat));
        drop(m);
        assert!(
            !has(r#"vgpu="unit-a""#),
            "{}",
            netgpu_metrics::encode_text()
        );
        // Sessions outside the pool are never forgotten.
        let m = open("");
        m.launched();
        drop(m);
        forget_vgpus(&BTreeSet::new());
        assert!(has(r#"netgpu_kernels_total{vgpu="",op="LaunchKernel"}"#));
    }
}
