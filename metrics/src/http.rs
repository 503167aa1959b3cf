//! The `/metrics` endpoint: HTTP/1.1 via hyper, one task per connection, answering `GET
//! /metrics` (and `/`) with the registry in the text format and anything else with 404.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use thiserror::Error;
use tracing::{debug, warn};

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot listen for metrics on {addr} (is another process using the port? pick another with --metrics-listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ok = req.method() == Method::GET && matches!(req.uri().path(), "/metrics" | "/");
    let resp = if ok {
        Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(crate::encode_text())))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"try GET /metrics\n")))
    };
    Ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Listens on `addr` and serves the registry until the runtime stops. Returns the bound
/// address (port 0 picks a free one).
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper::service::service_fn(handle);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(io, svc)
                    .await
                {
                    debug!(%peer, error = %e, "metrics: connection ended");
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_are_served_over_http_with_dcgm_labels() {
        let c: Counter = Counter::default();
        crate::register("test_things", "Things", c.clone());
        c.inc_by(3);
        let d = crate::DataPath::global();
        let g = crate::labels::Gpu {
            gpu: "0".into(),
            UUID: "GPU-1".into(),
            modelName: "H100".into(),
            Hostname: "h1".into(),
        };
        d.gpu_memory_total.get_or_create(&g).set(80 << 30);
        d.op_latency
            .get_or_create(&crate::labels::Op {
                vgpu: "vm1".into(),
                op: "LaunchKernel".into(),
            })
            .observe(0.002);
        let addr = serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let body = get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("netgpu_test_things_total 3"), "{body}");
        assert!(
            body.contains(r#"netgpu_gpu_memory_total_bytes{gpu="0",UUID="GPU-1",modelName="H100",Hostname="h1"} 85899345920"#),
            "{body}"
        );
        assert!(
            body.contains("netgpu_operation_duration_seconds_bucket"),
            "{body}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
