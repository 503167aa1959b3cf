//! The whole stack over TLS with tenants: mutual authentication end to end, the tenant's
//! quota and session limit enforced by the backend across sessions, tenants isolated, and a
//! partition between two network namespaces noticed within 5 s with nothing leaked.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use common::{fnv, pattern};
use netgpu_backend::config::{Config, ExecutorKind};
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::server::{Server, Shared};
use netgpu_backend::tenant::TenantConfig;
use netgpu_client::{Client, ClientOptions, CuResult};
use netgpu_tls::issue::{new_ca, Ca, Role};
use netgpu_tls::{
    ClientAuth, ClientTls, ClientTlsConfig, Security, ServerTls, ServerTlsConfig, TenantName,
};

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("test CA", 1).unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
        let ca = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let b = ca
            .issue(
                "gpu",
                &Role::Backend {
                    dns: vec!["localhost".into()],
                    ips: vec!["127.0.0.1".parse().unwrap(), "198.18.0.1".parse().unwrap()],
                },
                1,
            )
            .unwrap();
        std::fs::write(dir.path().join("gpu.crt"), &b.cert_pem).unwrap();
        std::fs::write(dir.path().join("gpu.key"), &b.key_pem).unwrap();
        Pki { dir, ca }
    }

    fn p(&self, n: &str) -> std::path::PathBuf {
        self.dir.path().join(n)
    }

    fn server(&self) -> ServerTls {
        ServerTls::load(ServerTlsConfig {
            cert: self.p("gpu.crt"),
            key: self.p("gpu.key"),
            client_ca: self.p("ca.crt"),
            client_auth: ClientAuth::Required,
            crls: Vec::new(),
        })
        .unwrap()
    }

    fn client(&self, tenant: &str) -> ClientOptions {
        let h = self
            .ca
            .issue(
                tenant,
                &Role::Hypervisor {
                    tenant: TenantName::new(tenant).unwrap(),
                    dns: vec![],
                },
                1,
            )
            .unwrap();
        std::fs::write(self.p(&format!("{tenant}.crt")), &h.cert_pem).unwrap();
        std::fs::write(self.p(&format!("{tenant}.key")), &h.key_pem).unwrap();
        let tls = ClientTls::load(ClientTlsConfig {
            ca: self.p("ca.crt"),
            cert: Some(self.p(&format!("{tenant}.crt"))),
            key: Some(self.p(&format!("{tenant}.key"))),
            server_name: None,
            crls: Vec::new(),
        })
        .unwrap();
        ClientOptions {
            tls: Some(Arc::new(tls)),
            ..Default::default()
        }
    }
}

fn tenant(name: &str, quota_mib: u64, sessions: u32) -> TenantConfig {
    TenantConfig {
        name: TenantName::new(name).unwrap(),
        memory_quota: Some(ByteSize::mib(quota_mib)),
        max_sessions: Some(sessions),
        session_memory_quota: None,
        kernel_time_limit_ms: None,
        tokens: vec![],
        token_files: vec![],
    }
}

struct TlsBackend {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    executor: Arc<CpuExecutor>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(pki: &Pki, listen: &str, tenants: Vec<TenantConfig>) -> TlsBackend {
    start_with(pki.server(), listen, tenants).await
}

async fn start_with(server: ServerTls, listen: &str, tenants: Vec<TenantConfig>) -> TlsBackend {
    let mut config = Config {
        listen: listen.parse().unwrap(),
        executor: ExecutorKind::Cpu,
        session_memory_quota: ByteSize::mib(256),
        tenants,
        ..Config::default()
    };
    config.cpu.total_memory = ByteSize::mib(512);
    let executor = Arc::new(CpuExecutor::new(
        "tls cpu",
        config.cpu.total_memory.as_u64(),
        2,
    ));
    let shared = Shared::build(
        config,
        vec![],
        executor.clone(),
        Security::Tls(Arc::new(server)),
    )
    .unwrap();
    let server = Server::bind(shared.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    TlsBackend {
        addr,
        shared,
        executor,
        _stop: tx,
    }
}

async fn idle(b: &TlsBackend, within: Duration) -> (usize, u64) {
    let deadline = Instant::now() + within;
    loop {
        let left = (b.shared.session_count(), b.executor.memory_used());
        if left == (0, 0) || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_share_by_quota_and_never_reach_each_other() {
    let pki = Pki::new();
    let b = start(
        &pki,
        "127.0.0.1:0",
        vec![tenant("acme", 8, 2), tenant("beta", 64, 4)],
    )
    .await;
    let addr = format!("localhost:{}", b.addr.port());
    let acme = pki.client("acme");
    let a1 = Client::connect_with(&addr, "", acme.clone()).await.unwrap();
    let a2 = Client::connect_with(&addr, "", acme.clone()).await.unwrap();
    // Data crosses TLS intact.
    let c1 = a1.ctx_create(0).await.unwrap();
    let p1 = a1.mem_alloc(c1, 6 << 20).await.unwrap();
    let d = pattern(6 << 20, 9);
    a1.memcpy_htod(c1, p1, &d, 0).await.unwrap();
    assert_eq!(
        fnv(&a1.memcpy_dtoh(c1, p1, 6 << 20, 0).await.unwrap()),
        fnv(&d)
    );
    // The tenant's 8 MiB hold across its sessions, whatever each session's own quota.
    let c2 = a2.ctx_create(0).await.unwrap();
    let e = a2.mem_alloc(c2, 4 << 20).await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::OUT_OF_MEMORY);
    a2.mem_alloc(c2, 1 << 20).await.unwrap();
    // Its session limit too, with a reason.
    let e = Client::connect_with(&addr, "", acme.clone())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("already has 2 sessions"), "{e}");
    assert_eq!(e.cuda_result(), CuResult::NOT_PERMITTED, "{e}");
    // Another tenant is not limited by acme's use, and cannot touch acme's objects.
    let beta = Client::connect_with(&addr, "", pki.client("beta"))
        .await
        .unwrap();
    let cb = beta.ctx_create(0).await.unwrap();
    beta.mem_alloc(cb, 32 << 20).await.unwrap();
    let e = beta.memcpy_dtoh(cb, p1, 16, 0).await.unwrap_err();
    assert_eq!(
        e.cuda_result(),
        CuResult::INVALID_VALUE,
        "acme's pointer in beta's session"
    );
    assert!(
        beta.memcpy_dtoh(c1, p1, 16, 0).await.is_err(),
        "acme's context handle in beta's session"
    );
    // acme's memory comes back when its session ends.
    drop(a1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a2.mem_alloc(c2, 6 << 20).await.unwrap();
    // And so does its session slot: a new session is admitted again.
    let a3 = Client::connect_with(&addr, "", acme.clone()).await.unwrap();
    drop((a2, a3, beta));
    assert_eq!(idle(&b, Duration::from_secs(5)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_under_load_serves_new_sessions_and_running_ones_continue() {
    let pki = Pki::new();
    let b = start(&pki, "127.0.0.1:0", vec![tenant("acme", 64, 4)]).await;
    let addr = format!("localhost:{}", b.addr.port());
    let acme = pki.client("acme");
    // A session copying (checksummed) the whole time.
    let a = Client::connect_with(&addr, "", acme.clone()).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (st, dn) = (stop.clone(), done.clone());
    let load = tokio::spawn(async move {
        let c = a.ctx_create(0).await.unwrap();
        let p = a.mem_alloc(c, 2 << 20).await.unwrap();
        let mut seed = 0;
        while !st.load(std::sync::atomic::Ordering::Acquire) {
            seed += 1;
            let d = pattern(2 << 20, seed);
            a.memcpy_htod(c, p, &d, 0).await.unwrap();
            let back = a.memcpy_dtoh(c, p, 2 << 20, 0).await.unwrap();
            assert_eq!(
                fnv(&back),
                fnv(&d),
                "copy {seed} intact across the rotation"
            );
            dn.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    });
    while done.load(std::sync::atomic::Ordering::Acquire) < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Rotate the backend to a certificate from a new CA, as documented: new files renamed
    // over the old ones while the session above runs.
    let next = new_ca("next CA", 1).unwrap();
    std::fs::write(pki.p("next-ca.crt"), &next.cert_pem).unwrap();
    let next = Ca::from_pem(&next.cert_pem, &next.key_pem).unwrap();
    let cert = next
        .issue(
            "gpu-next",
            &Role::Backend {
                dns: vec!["localhost".into()],
                ips: vec![],
            },
            1,
        )
        .unwrap();
    std::fs::write(pki.p("gpu.key.new"), &cert.key_pem).unwrap();
    std::fs::write(pki.p("gpu.crt.new"), &cert.cert_pem).unwrap();
    std::fs::rename(pki.p("gpu.key.new"), pki.p("gpu.key")).unwrap();
    std::fs::rename(pki.p("gpu.crt.new"), pki.p("gpu.crt")).unwrap();
    // A new handshake gets the new certificate: a client trusting only the new CA is
    // admitted, one trusting only the old CA is refused with a certificate error.
    let next_ca = ClientTls::load(ClientTlsConfig {
        ca: pki.p("next-ca.crt"),
        cert: Some(pki.p("acme.crt")),
        key: Some(pki.p("acme.key")),
        server_name: None,
        crls: Vec::new(),
    })
    .unwrap();
    let n = Client::connect_with(
        &addr,
        "",
        ClientOptions {
            tls: Some(Arc::new(next_ca)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = n.ctx_create(0).await.unwrap();
    n.mem_alloc(c, 1 << 20).await.unwrap();
    let e = Client::connect_with(&addr, "", acme.clone())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // The session that ran through the rotation carries on.
    let at = done.load(std::sync::atomic::Ordering::Acquire);
    while done.load(std::sync::atomic::Ordering::Acquire) < at + 2 {
        assert!(!load.is_finished(), "the running session failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    load.await.unwrap();
    drop(n);
    assert_eq!(idle(&b, Duration::from_secs(5)).await, (0, 0));
}

/// The serial number of the certificate in `path` (DER integer content).
fn serial_of(path: &std::path::Path) -> Vec<u8> {
    let der = netgpu_tls::pem::load_certs("test", path).unwrap().remove(0);
    let hex = netgpu_tls::identity::CertInfo::parse(&der).unwrap().serial;
    hex.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_loses_its_open_sessions_and_others_keep_theirs() {
    let pki = Pki::new();
    // The backend checks a CRL of its client CA (empty at first).
    std::fs::write(pki.p("ca.crl"), pki.ca.crl(&[], 1, 1).unwrap()).unwrap();
    let server = ServerTls::load(ServerTlsConfig {
        cert: pki.p("gpu.crt"),
        key: pki.p("gpu.key"),
        client_ca: pki.p("ca.crt"),
        client_auth: ClientAuth::Required,
        crls: vec![pki.p("ca.crl")],
    })
    .unwrap();
    let b = start_with(
        server,
        "127.0.0.1:0",
        vec![tenant("acme", 64, 4), tenant("evil", 64, 4)],
    )
    .await;
    let addr = format!("localhost:{}", b.addr.port());
    let (acme, evil) = (pki.client("acme"), pki.client("evil"));
    let a = Client::connect_with(&addr, "", acme.clone()).await.unwrap();
    let e = Client::connect_with(&addr, "", evil.clone()).await.unwrap();
    let (ca, ce) = (
        a.ctx_create(0).await.unwrap(),
        e.ctx_create(0).await.unwrap(),
    );
    e.mem_alloc(ce, 8 << 20).await.unwrap();
    a.mem_alloc(ca, 1 << 20).await.unwrap();
    // The operator revokes evil's certificate: a new CRL replaces the old file.
    let revoked = netgpu_tls::issue::Revoked {
        serial: serial_of(&pki.p("evil.crt")),
        time: 1,
    };
    std::fs::write(pki.p("ca.crl.new"), pki.ca.crl(&[revoked], 2, 1).unwrap()).unwrap();
    std::fs::rename(pki.p("ca.crl.new"), pki.p("ca.crl")).unwrap();
    // Within seconds its open session ends (its memory freed) and it cannot come back,
    // while acme's session goes on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.ctx_synchronize(ce).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the revoked client's session still serves"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        Client::connect_with(&addr, "", evil).await.is_err(),
        "a revoked client is refused"
    );
    a.mem_alloc(ca, 1 << 20).await.unwrap();
    a.ctx_synchronize(ca).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.executor.memory_used() != 2 << 20 {
        assert!(
            Instant::now() < deadline,
            "the revoked session's memory was freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.shared.session_count(), 1);
    drop((a, e));
    assert_eq!(idle(&b, Duration::from_secs(5)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tenant_and_a_plain_client_are_refused_with_reasons() {
    let pki = Pki::new();
    let b = start(&pki, "127.0.0.1:0", vec![tenant("acme", 8, 2)]).await;
    let addr = format!("localhost:{}", b.addr.port());
    let e = Client::connect_with(&addr, "", pki.client("gamma"))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("\"gamma\"") && e.to_string().contains("[[tenants]]"),
        "{e}"
    );
    assert_eq!(e.cuda_result(), CuResult::NOT_PERMITTED);
    let e = Client::connect(&format!("127.0.0.1:{}", b.addr.port()), "t")
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("speaks TLS only"), "{e}");
    assert_eq!(idle(&b, Duration::from_secs(5)).await, (0, 0));
}

#[test]
fn a_partition_between_namespaces_fails_a_tls_copy_within_five_seconds() {
    if netgpu_netfault::netns::skipped() {
        return;
    }
    let pki = Arc::new(Pki::new());
    let pair = netgpu_netfault::Pair::create().unwrap();
    // The backend in the GPU host's namespace.
    let (tx, rx) = std::sync::mpsc::channel();
    let p2 = pki.clone();
    pair.gpu.spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let b = start(&p2, "198.18.0.1:7070", vec![tenant("acme", 64, 4)]).await;
            tx.send((b.shared.clone(), b.executor.clone())).unwrap();
            std::future::pending::<()>().await;
            drop(b);
        });
    });
    let (shared, executor) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // The client in the hypervisor's namespace, straight across the veth.
    let opts = pki.client("acme");
    let hv = pair.hv.handle();
    let (ctx_tx, ctx_rx) = std::sync::mpsc::channel();
    let (res_tx, res_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        hv.enter().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let c = Client::connect_with("198.18.0.1:7070", "", opts)
                .await
                .unwrap();
            let ctx = c.ctx_create(0).await.unwrap();
            let len = 64usize << 20;
            let p = c.mem_alloc(ctx, len as u64).await.unwrap();
            let data = pattern(len, 2);
            ctx_tx.send(()).unwrap();
            let r = c.memcpy_htod(ctx, p, &data, 0).await;
            res_tx
                .send((r.map_err(|e| e.cuda_result()), Instant::now()))
                .unwrap();
        });
    });
    ctx_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("session setup (a hang guard: debug builds under load take seconds)");
    pair.partition().unwrap();
    let cut = Instant::now();
    let (r, at) = res_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the copy hangs");
    let took = at.saturating_duration_since(cut);
    eprintln!("TLS copy across a partition: {r:?} after {took:?}");
    assert_eq!(
        r,
        Err(CuResult::DEVICE_UNAVAILABLE),
        "64 MiB cannot cross a partition"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The backend notices too and frees the session.
    let deadline = Instant::now() + Duration::from_secs(8);
    while (shared.session_count(), executor.memory_used()) != (0, 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((shared.session_count(), executor.memory_used()), (0, 0));
}
