//! The control plane's metrics, registered in the process-wide `netgpu-metrics` registry on
//! first use: counters any process that places vGPUs updates (`netgpuctl`, the controller),
//! and gauges the controller refreshes from the store every round.

use std::sync::LazyLock;

use netgpu_metrics::labels;
use netgpu_metrics::prometheus_client::metrics::counter::Counter;
use netgpu_metrics::prometheus_client::metrics::family::Family;
use netgpu_metrics::prometheus_client::metrics::gauge::Gauge;

use crate::placement::Reason;

pub struct PoolMetrics {
    pub hosts: Gauge,
    pub hosts_up: Gauge,
    pub vgpus: Gauge,
    /// vGPUs placed on hosts that are down.
    pub vgpus_stranded: Gauge,
    pub gpu_memory_total: Family<labels::PoolGpu, Gauge>,
    pub gpu_memory_free: Family<labels::PoolGpu, Gauge>,
    pub placement_failures: Family<labels::Reason, Counter>,
    pub failovers: Counter,
    /// 1 while this process leads the failover controllers.
    pub leader: Gauge,
}

static METRICS: LazyLock<PoolMetrics> = LazyLock::new(|| {
    let m = PoolMetrics {
        hosts: Gauge::default(),
        hosts_up: Gauge::default(),
        vgpus: Gauge::default(),
        vgpus_stranded: Gauge::default(),
        gpu_memory_total: Family::default(),
        gpu_memory_free: Family::default(),
        placement_failures: Family::default(),
        failovers: Counter::default(),
        leader: Gauge::default(),
    };
    let r = |n: &str, h: &str, x: Gauge| netgpu_metrics::register(n, h, x);
    r("pool_hosts", "GPU hosts registered", m.hosts.clone());
    r(
        "pool_hosts_up",
        "GPU hosts with a live lease",
        m.hosts_up.clone(),
    );
    r("pool_vgpus", "vGPUs defined", m.vgpus.clone());
    r(
        "pool_vgpus_stranded",
        "vGPUs placed on hosts that are down",
        m.vgpus_stranded.clone(),
    );
    netgpu_metrics::register(
        "pool_gpu_memory_total_bytes",
        "Memory a GPU may give out (memory x oversubscription - reserve)",
        m.gpu_memory_total.clone(),
    );
    netgpu_metrics::register(
        "pool_gpu_memory_free_bytes",
        "Memory a GPU has not given out",
        m.gpu_memory_free.clone(),
    );
    netgpu_metrics::register(
        "pool_placement_failures",
        "vGPU placements that found no host, by the reason that removed the most hosts",
        m.placement_failures.clone(),
    );
    netgpu_metrics::register(
        "pool_failovers",
        "vGPUs re-placed off a host whose lease expired",
        m.failovers.clone(),
    );
    r(
        "pool_controller_leader",
        "1 while this process leads the failover controllers",
        m.leader.clone(),
    );
    m
});

pub fn get() -> &'static PoolMetrics {
    &METRICS
}

pub(crate) fn placement_failed(r: Reason) {
    get()
        .placement_failures
        .get_or_create(&labels::Reason {
            reason: r.as_str().into(),
        })
        .inc();
}

pub(crate) fn failover() {
    get().failovers.inc();
}
