//! vdev's backend connections over TLS (issue 9): a throwaway PKI made with `netgpu-tls`'s
//! issuer, a rustls server (`netgpu_tls::tokio::accept`, mutual TLS, the backend's TLS
//! endpoint code) in front of the CPU backend, and vdev configured with `[tls]`. Copies of
//! several frames move through vdev's own TLS data path unchanged; the server sees the
//! hypervisor's tenant; a wrong CA, a wrong server name or a missing client certificate get
//! no session (the device reads FATAL / backend refused, the reason in vdev's log); plain TCP
//! to a non-loopback address is refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tls::Pki;
use common::Harness;
use netgpu_proto::abi::{self, op, Command, SgEntry};
use netgpu_proto::cuda::CuResult;
use netgpu_tls::issue::Role;
use netgpu_tls::{ClientAuth, ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig, TenantName};
use tokio::net::{TcpListener, TcpStream};

const SQ: u64 = 0x10_000;
const CQ: u64 = 0x20_000;

/// A TLS endpoint on loopback in front of `upstream` (the CPU backend): every connection is
/// accepted with mutual TLS and its plaintext relayed. Records the tenant of each client.
struct Terminator {
    addr: String,
    tenants: Arc<Mutex<Vec<Option<String>>>>,
}

fn terminator(rt: &tokio::runtime::Runtime, tls: ServerTls, upstream: String) -> Terminator {
    let tls = Arc::new(tls);
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tenants: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let t2 = Arc::clone(&tenants);
    rt.spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            let tls = Arc::clone(&tls);
            let upstream = upstream.clone();
            let tenants = Arc::clone(&t2);
            tokio::spawn(async move {
                let peer = peer.to_string();
                let Ok(mut s) =
                    netgpu_tls::tokio::accept(sock, &peer, &tls, Duration::from_secs(5)).await
                else {
                    return;
                };
                let id = ServerTls::identify(s.conn()).ok().flatten();
                tenants
                    .lock()
                    .unwrap()
                    .push(id.and_then(|i| i.tenant).map(|t| t.to_string()));
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    Terminator { addr, tenants }
}

fn client_tls(cfg: ClientTlsConfig) -> Arc<ClientTls> {
    Arc::new(ClientTls::load(cfg).unwrap())
}

/// A device whose backend is reached through a TLS terminator; `client` makes vdev's
/// `[tls]` from the PKI.
fn tls_device(
    tag: &str,
    client: impl FnOnce(&Pki) -> ClientTlsConfig,
) -> (Harness, Terminator, Pki) {
    let pki = Pki::new(tag);
    let server = ServerTls::load(ServerTlsConfig {
        cert: pki.backend().0,
        key: pki.backend().1,
        client_ca: pki.ca_file.clone(),
        client_auth: ClientAuth::Required,
        crls: Vec::new(),
    })
    .unwrap();
    let ccfg = client(&pki);
    let mut term = None;
    let h = Harness::start_rt(
        tag,
        |b| b.max_frame_data = bytesize::ByteSize::mib(1),
        |rt, c| {
            let t = terminator(rt, server, c.backend.clone());
            c.backend = t.addr.clone();
            c.transport.tls = Some(client_tls(ccfg));
            term = Some(t);
        },
    );
    (h, term.unwrap(), pki)
}

fn run(h: &mut Harness, slot: u32, cmd: Command) -> netgpu_proto::abi::Completion {
    h.put_command(SQ, slot, &cmd);
    h.ring(0, slot + 1);
    h.wait_completion(CQ, slot, true)
}

#[test]
fn copies_of_several_frames_travel_through_tls_unchanged() {
    let (mut h, term, pki) = tls_device("tlscopy", |p| ClientTlsConfig {
        ca: p.ca_file.clone(),
        cert: Some(p.hypervisor("tenant-a").0),
        key: Some(p.hypervisor("tenant-a").1),
        server_name: Some("gpu1.test".into()),
        crls: Vec::new(),
    });
    let _ = &pki;
    h.wait_status(abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let ctx = run(&mut h, 0, Command::new(op::CTX_CREATE, 1, &[0])).value0;
    const LEN: u32 = 0x38_0000; // 3.5 MiB: four frames, many TLS records
    let ptr = run(
        &mut h,
        1,
        Command::new(op::MEM_ALLOC, 2, &[ctx, u64::from(LEN)]),
    )
    .value0;
    let src: Vec<u8> = (0..LEN).map(|i| (i ^ (i >> 9) ^ (i >> 17)) as u8).collect();
    let back = h.copy_there_and_back_in_pages(SQ, CQ, ctx, ptr, &src);
    assert!(back == src, "the copy came back changed");
    // The probe and the queue both authenticated as the hypervisor's tenant.
    let tenants = term.tenants.lock().unwrap().clone();
    assert!(tenants.len() >= 2, "{tenants:?}");
    assert!(
        tenants.iter().all(|t| t.as_deref() == Some("tenant-a")),
        "{tenants:?}"
    );
}

/// The device's probe runs over the same TLS as the queues: a refused handshake leaves the
/// device FATAL with `FATAL_BACKEND_AUTH` (the driver reports "backend refused"), and nothing
/// reaches the backend.
fn refused(h: &mut Harness, term: &Terminator, what: &str) {
    assert_eq!(
        h.wait_status(abi::STATUS_FATAL),
        abi::STATUS_FATAL,
        "{what}: the device must not come up"
    );
    assert_eq!(
        h.read32(abi::REGS_BAR, netgpu_proto::abi::reg::FATAL_REASON),
        abi::FATAL_BACKEND_AUTH,
        "{what}"
    );
    assert!(
        term.tenants.lock().unwrap().is_empty(),
        "{what}: no session got through"
    );
}

#[test]
fn a_backend_certificate_from_another_ca_is_refused() {
    let other = Pki::new("other");
    let (mut h, term, _pki) = tls_device("tlsca", |p| ClientTlsConfig {
        ca: other.ca_file.clone(),
        cert: Some(p.hypervisor("t").0),
        key: Some(p.hypervisor("t").1),
        server_name: Some("gpu1.test".into()),
        crls: Vec::new(),
    });
    refused(&mut h, &term, "unknown CA");
}

#[test]
fn a_wrong_server_name_or_no_client_certificate_gets_no_session() {
    for (tag, with_cert, name) in [
        ("tlsname", true, "gpu2.test"),
        ("tlsnocert", false, "gpu1.test"),
    ] {
        let (mut h, term, _pki) = tls_device(tag, |p| ClientTlsConfig {
            ca: p.ca_file.clone(),
            cert: with_cert.then(|| p.hypervisor("t").0),
            key: with_cert.then(|| p.hypervisor("t").1),
            server_name: Some(name.into()),
            crls: Vec::new(),
        });
        refused(&mut h, &term, tag);
    }
}

#[test]
fn plain_tcp_goes_to_loopback_only() {
    let d = netgpu_vdev::DeviceConfig {
        backend: "198.18.0.1:7070".into(),
        ..netgpu_vdev::DeviceConfig::default()
    };
    let e = netgpu_vdev::check_transport(&d).unwrap_err();
    assert!(e.to_string().contains("configure [tls]"), "{e}");
    let d = netgpu_vdev::DeviceConfig {
        backend: "127.0.0.1:7070".into(),
        ..netgpu_vdev::DeviceConfig::default()
    };
    assert!(netgpu_vdev::check_transport(&d).is_ok());
}

/// The `netgpu-vdev` binary, jailed (seccomp filter on, the default), with `--tls-*`: the
/// probe and a queue's copies go through TLS under the filter; then the certificate files
/// are replaced (rotation): the jailed vdev cannot read them, survives, and keeps serving
/// new sessions with the certificate it loaded.
#[test]
fn the_jailed_binary_speaks_tls_and_survives_a_certificate_rotation() {
    let pki = Pki::new("tlsjail");
    let (bc, bk) = pki.backend();
    let server = ServerTls::load(ServerTlsConfig {
        cert: bc,
        key: bk,
        client_ca: pki.ca_file.clone(),
        client_auth: ClientAuth::Required,
        crls: Vec::new(),
    })
    .unwrap();
    let (hc, hk) = pki.hypervisor("tenant-j");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = common::start_backend(&rt);
    let term = terminator(&rt, server, backend.addr.clone());
    let token = pki.dir.path().join("token");
    std::fs::write(&token, common::TOKEN).unwrap();
    let socket = common::socket_path("tlsjail");
    let _ = std::fs::remove_file(&socket);
    let mut vdev = std::process::Command::new(env!("CARGO_BIN_EXE_netgpu-vdev"))
        .arg("--socket")
        .arg(&socket)
        .arg("--backend")
        .arg(&term.addr)
        .arg("--token-file")
        .arg(&token)
        .arg("--tls-ca")
        .arg(&pki.ca_file)
        .arg("--tls-cert")
        .arg(&hc)
        .arg("--tls-key")
        .arg(&hk)
        .args(["--tls-server-name", "gpu1.test"])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut h = Harness::attach(socket.clone(), rt, backend);
    assert_eq!(h.wait_status(abi::STATUS_READY), abi::STATUS_READY);
    h.map_memory();
    let copy_through = |h: &mut Harness| {
        assert_eq!(
            h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
            abi::QSTATUS_ENABLED
        );
        let ctx = run(h, 0, Command::new(op::CTX_CREATE, 1, &[0])).value0;
        let ptr = run(h, 1, Command::new(op::MEM_ALLOC, 2, &[ctx, 1 << 20])).value0;
        let src: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + (i >> 11)) as u8).collect();
        h.mem.write_all_at(&src, 0x10_0000).unwrap();
        let c = run(
            h,
            2,
            Command::new(op::MEMCPY_HTOD, 3, &[ctx, ptr, 0])
                .with_sg(&[SgEntry::new(0x10_0000, 1 << 20)]),
        );
        assert_eq!(CuResult(c.result), CuResult::SUCCESS);
        let c = run(
            h,
            3,
            Command::new(op::MEMCPY_DTOH, 4, &[ctx, ptr, 0])
                .with_sg(&[SgEntry::device_write(0x30_0000, 1 << 20)]),
        );
        assert_eq!(CuResult(c.result), CuResult::SUCCESS);
        let mut back = vec![0u8; 1 << 20];
        h.mem.read_exact_at(&mut back, 0x30_0000).unwrap();
        assert!(back == src, "the copy came back changed");
        h.write32(
            abi::REGS_BAR,
            Harness::qreg(0, netgpu_proto::abi::queue::ENABLE),
            0,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while h.read32(
            abi::REGS_BAR,
            Harness::qreg(0, netgpu_proto::abi::queue::STATUS),
        ) != 0
        {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        h.mem.write_all_at(&[0u8; 8 * 32], CQ).unwrap();
    };
    copy_through(&mut h);
    // Rotation: new files renamed into place, as an operator (or a secret manager) does.
    let (nc, nk) = pki.issue(
        "hv1-next",
        &Role::Hypervisor {
            tenant: TenantName::new("tenant-j").unwrap(),
            dns: vec![],
        },
    );
    std::fs::rename(&nc, &hc).unwrap();
    std::fs::rename(&nk, &hk).unwrap();
    copy_through(&mut h);
    assert!(
        vdev.try_wait().unwrap().is_none(),
        "the jailed vdev must survive a certificate change it cannot read"
    );
    let tenants = term.tenants.lock().unwrap().clone();
    assert!(tenants.len() >= 3, "{tenants:?}");
    assert!(tenants.iter().all(|t| t.as_deref() == Some("tenant-j")));
    drop(h);
    let _ = vdev.kill();
    let _ = vdev.wait();
    let _ = std::fs::remove_file(&socket);
}

/// The CPU backend's own TLS listener (mutual TLS, the hypervisor's tenant from its
/// certificate), no terminator in between.
#[test]
fn copies_through_the_backends_own_tls_listener() {
    let (mut h, _pki) = Harness::start_tls(
        "tlsreal",
        "tenant-r",
        |b| b.max_frame_data = bytesize::ByteSize::mib(1),
        |_| {},
    );
    assert_eq!(h.wait_status(abi::STATUS_READY), abi::STATUS_READY);
    h.map_memory();
    assert_eq!(
        h.setup_queue(0, SQ, CQ, 8, abi::NO_VECTOR),
        abi::QSTATUS_ENABLED
    );
    let ctx = run(&mut h, 0, Command::new(op::CTX_CREATE, 1, &[0])).value0;
    const LEN: u32 = 0x38_0000;
    let ptr = run(
        &mut h,
        1,
        Command::new(op::MEM_ALLOC, 2, &[ctx, u64::from(LEN)]),
    )
    .value0;
    let src: Vec<u8> = (0..LEN).map(|i| (i ^ (i >> 7) ^ (i >> 19)) as u8).collect();
    h.mem.write_all_at(&src, 0x10_0000).unwrap();
    let c = run(
        &mut h,
        2,
        Command::new(op::MEMCPY_HTOD, 3, &[ctx, ptr, 0]).with_sg(&[SgEntry::new(0x10_0000, LEN)]),
    );
    assert_eq!(CuResult(c.result), CuResult::SUCCESS);
    let c = run(
        &mut h,
        3,
        Command::new(op::MEMCPY_DTOH, 4, &[ctx, ptr, 0])
            .with_sg(&[SgEntry::device_write(0x48_0000, LEN)]),
    );
    assert_eq!(
        (CuResult(c.result), c.value0),
        (CuResult::SUCCESS, u64::from(LEN))
    );
    let mut back = vec![0u8; LEN as usize];
    h.mem.read_exact_at(&mut back, 0x48_0000).unwrap();
    assert!(back == src, "the copy came back changed");
}
