//! The data-path metrics a session fills (`netgpu_metrics::DataPath`): kernels launched,
//! bytes copied each way, operation latency, errors by CUDA error, session and GPU memory;
//! an ended session's series are gone. One test: the registry is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::kernels::{launch1, read_u32, Arg, Kernels};
use common::TestBackend;
use netgpu_metrics::labels;

/// The value of the sample whose line starts with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn value(series: &str) -> f64 {
    let text = netgpu_metrics::encode_text();
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Waits for `series` to read `want` (replies can reach the client just before the reply
/// path updates the counters).
async fn eventually(series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = netgpu_metrics::encode_text();
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {:?}, not {want}, in\n{text}",
            sample(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_fills_the_data_path_families_and_its_series_go_with_it() {
    netgpu_backend::session::metrics::enable(labels::Gpu {
        gpu: "0".into(),
        UUID: "GPU-test".into(),
        modelName: "test cpu".into(),
        Hostname: "h".into(),
    });
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let k = Kernels::load(&c, ctx).await;
    let p = c.mem_alloc(ctx, 1 << 20).await.unwrap();
    c.memcpy_htod(ctx, p, &vec![0u8; 4096], 0).await.unwrap();
    for v in 1..=3 {
        launch1(&c, k.mad, 0, &[Arg::U64(p), Arg::U32(v)]).await;
    }
    c.ctx_synchronize(ctx).await.unwrap();
    assert_eq!(read_u32(&c, ctx, p).await, 123);
    c.memcpy_dtod(ctx, p + 4096, p, 100, 0).await.unwrap();
    // A failed operation, by its CUDA error.
    assert!(c.mem_free(0xdead_0000).await.is_err());

    eventually(r#"netgpu_kernels_total{vgpu="",op="LaunchKernel"}"#, 3.0).await;
    eventually(
        r#"netgpu_transfer_bytes_total{vgpu="",direction="htod"}"#,
        4096.0,
    )
    .await;
    eventually(
        r#"netgpu_transfer_bytes_total{vgpu="",direction="dtoh"}"#,
        4.0,
    )
    .await;
    eventually(
        r#"netgpu_transfer_bytes_total{vgpu="",direction="dtod"}"#,
        100.0,
    )
    .await;
    eventually(
        r#"netgpu_operation_duration_seconds_count{vgpu="",op="MemAlloc"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(r#"netgpu_operation_duration_seconds_count{vgpu="",op="LaunchKernel"}"#),
        3.0
    );
    assert_eq!(
        value(
            r#"netgpu_operation_errors_total{vgpu="",op="MemFree",error="CUDA_ERROR_INVALID_VALUE"}"#
        ),
        1.0
    );
    let session = r#"{gpu="0",UUID="GPU-test",Hostname="h",vgpu="",tenant="default",session="#;
    let text = netgpu_metrics::encode_text();
    let quota = text
        .lines()
        .find(|l| l.starts_with(&format!("netgpu_session_memory_quota_bytes{session}")))
        .unwrap_or_else(|| panic!("no session quota in\n{text}"));
    assert!(quota.ends_with(&format!(" {}", 64u64 << 20)), "{quota}");
    // Memory is sampled when the session waits for input: after the next request.
    let _ = c.mem_get_info().await.unwrap();
    let used = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("netgpu_session_memory_used_bytes{session}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while used(&netgpu_metrics::encode_text()).unwrap_or(0.0) < f64::from(1u32 << 20) {
        assert!(
            Instant::now() < deadline,
            "{}",
            netgpu_metrics::encode_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gpu = r#"netgpu_gpu_memory_used_bytes{gpu="0",UUID="GPU-test",modelName="test cpu",Hostname="h"}"#;
    assert!(value(gpu) >= f64::from(1u32 << 20));

    // The session ends: its series go, the GPU's memory is given back; per-vGPU counters stay.
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = netgpu_metrics::encode_text();
        if !text.contains("netgpu_session_memory") && sample(&text, gpu) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "session series left:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(r#"netgpu_kernels_total{vgpu="",op="LaunchKernel"}"#),
        3.0
    );
}
