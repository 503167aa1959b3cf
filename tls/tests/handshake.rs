//! Real TLS handshakes over loopback sockets: mutual authentication, tenant identity, the
//! errors operators see for each misconfiguration, and rotation without a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Pki;
use netgpu_tls::blocking::{accept, connect, HandshakeError};
use netgpu_tls::identity::CertInfo;
use netgpu_tls::{ClientAuth, ClientTls, PeerIdentity, ServerTls};

const T: Duration = Duration::from_secs(5);

/// What the server side saw of one connection.
#[derive(Debug)]
enum Served {
    Ok(Option<PeerIdentity>),
    Failed(String),
}

/// Serves `n` connections: handshake, then echo 4 bytes back.
fn serve(tls: Arc<ServerTls>, n: usize) -> (String, mpsc::Receiver<Served>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..n {
            let (s, _) = l.accept().unwrap();
            let tls = tls.clone();
            let tx = tx.clone();
            thread::spawn(move || match accept(s, &tls, T) {
                Ok(mut s) => {
                    let id = ServerTls::identify(&s.conn()).unwrap();
                    tx.send(Served::Ok(id)).unwrap();
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                        let _ = s.flush();
                    }
                }
                Err(e) => tx.send(Served::Failed(e.to_string())).unwrap(),
            });
        }
    });
    (addr, rx)
}

/// Connects and exchanges 4 bytes; the error text is what the operator reads.
fn client(tls: &ClientTls, addr: &str) -> Result<[u8; 4], String> {
    let r = client_inner(tls, addr);
    if let Err(e) = &r {
        eprintln!("client error: {e}");
    }
    r
}

fn client_inner(tls: &ClientTls, addr: &str) -> Result<[u8; 4], String> {
    let tcp = TcpStream::connect(addr).unwrap();
    let mut s = connect(tcp, tls, addr, T).map_err(|e: HandshakeError| e.to_string())?;
    s.write_all(b"ping").map_err(|e| tls.explain(&e, addr))?;
    s.flush().map_err(|e| tls.explain(&e, addr))?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b).map_err(|e| tls.explain(&e, addr))?;
    Ok(b)
}

fn served(rx: &mpsc::Receiver<Served>) -> Served {
    let s = rx.recv_timeout(T).expect("server saw no connection");
    if let Served::Failed(e) = &s {
        eprintln!("server error: {e}");
    }
    s
}

#[test]
fn mutual_tls_names_the_tenant_and_carries_data() {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &["localhost"]), &pki.ca_file))
            .unwrap();
    let (addr, rx) = serve(Arc::new(server), 1);
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    assert_eq!(client(&c, &addr).unwrap(), *b"ping");
    match served(&rx) {
        Served::Ok(Some(id)) => {
            assert_eq!(id.tenant.unwrap().as_str(), "acme");
            assert_eq!(id.subject, "CN=hv1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_tls13_is_offered_and_spoken() {
    let pki = Pki::new("ops");
    let server = Arc::new(
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap(),
    );
    let (addr, _rx) = serve(server.clone(), 1);
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let s = connect(TcpStream::connect(&addr).unwrap(), &c, &addr, T).unwrap();
    assert_eq!(
        s.conn().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.conn().alpn_protocol(), Some(netgpu_tls::ALPN));
    let cfg = c.client_config();
    assert!(cfg
        .crypto_provider()
        .cipher_suites
        .iter()
        .all(|s| s.version() == &rustls::version::TLS13));
}

#[test]
fn wrong_server_name_says_which_name_and_what_to_do() {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &["gpu1.dc"]), &pki.ca_file))
            .unwrap();
    let (addr, _rx) = serve(Arc::new(server), 1);
    let mut cfg = pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file);
    cfg.server_name = Some("gpu2.dc".into());
    let c = ClientTls::load(cfg).unwrap();
    let e = client(&c, &addr).unwrap_err();
    assert!(
        e.contains("\"gpu2.dc\"") && e.contains("server_name"),
        "{e}"
    );
    assert!(
        e.contains("gpu1.dc"),
        "the names the certificate does carry: {e}"
    );
}

#[test]
fn backend_from_an_unknown_ca_names_the_ca_file() {
    let (pki, other) = (Pki::new("ops"), Pki::new("rogue"));
    let server =
        ServerTls::load(other.server_config(other.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let (addr, _rx) = serve(Arc::new(server), 1);
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let e = client(&c, &addr).unwrap_err();
    assert!(
        e.contains("not issued by a CA in") && e.contains("ops-ca.crt"),
        "{e}"
    );
}

#[test]
fn client_from_an_unknown_ca_is_refused_on_both_sides_with_reasons() {
    let (pki, rogue) = (Pki::new("ops"), Pki::new("rogue"));
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let (addr, rx) = serve(Arc::new(server), 1);
    // The rogue client trusts the real backend but has a certificate from its own CA.
    let c = ClientTls::load(pki.client_config(Some(rogue.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let e = client(&c, &addr).unwrap_err();
    assert!(
        e.contains("refused this client's certificate") && e.contains("hv1.crt"),
        "{e}"
    );
    match served(&rx) {
        Served::Failed(s) => assert!(
            s.contains("not issued by a CA in") && s.contains("ops-ca.crt"),
            "{s}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_without_certificate_is_told_to_configure_one() {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let (addr, rx) = serve(Arc::new(server), 1);
    let c = ClientTls::load(pki.client_config(None, &pki.ca_file)).unwrap();
    let e = client(&c, &addr).unwrap_err();
    assert!(
        e.contains("requires a client certificate") && e.contains("cert and key"),
        "{e}"
    );
    match served(&rx) {
        Served::Failed(s) => assert!(s.contains("presented no certificate"), "{s}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn optional_client_auth_admits_a_client_without_certificate() {
    let pki = Pki::new("ops");
    let mut cfg = pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file);
    cfg.client_auth = ClientAuth::Optional;
    let (addr, rx) = serve(Arc::new(ServerTls::load(cfg).unwrap()), 2);
    let c = ClientTls::load(pki.client_config(None, &pki.ca_file)).unwrap();
    assert_eq!(client(&c, &addr).unwrap(), *b"ping");
    assert!(matches!(served(&rx), Served::Ok(None)));
    // A rogue certificate is still refused: optional does not mean unchecked.
    let rogue = Pki::new("rogue");
    let c = ClientTls::load(pki.client_config(Some(rogue.hypervisor("x", "acme")), &pki.ca_file))
        .unwrap();
    assert!(client(&c, &addr).is_err());
    assert!(matches!(served(&rx), Served::Failed(_)));
}

#[test]
fn certificates_cannot_swap_roles() {
    let pki = Pki::new("ops");
    // A hypervisor certificate as the backend's: the client refuses it (no serverAuth).
    let server =
        ServerTls::load(pki.server_config(pki.hypervisor("hvb", "acme"), &pki.ca_file)).unwrap();
    let (addr, _rx) = serve(Arc::new(server), 1);
    let mut cfg = pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file);
    cfg.server_name = Some("localhost".into());
    let c = ClientTls::load(cfg).unwrap();
    let e = client(&c, &addr).unwrap_err();
    assert!(e.contains("presented a certificate"), "{e}");
    // A backend certificate as a client's: the backend refuses it (no clientAuth).
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let (addr, rx) = serve(Arc::new(server), 1);
    let c =
        ClientTls::load(pki.client_config(Some(pki.backend("gpu2", &[])), &pki.ca_file)).unwrap();
    assert!(client(&c, &addr).is_err());
    match served(&rx) {
        Served::Failed(s) => assert!(s.contains("clientAuth"), "{s}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_peers_are_recognised_on_both_sides() {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let (addr, rx) = serve(Arc::new(server), 1);
    // A plain netgpu client (frame magic "NG") at a TLS backend.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[
        0x4e, 0x47, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ])
    .unwrap();
    match served(&rx) {
        Served::Failed(e) => assert!(e.contains("does not speak TLS"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A TLS client at a plain backend, which answers with a plain goodbye frame.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = l.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
        let _ = s.write_all(&[
            0x4e, 0x47, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
    });
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let e = client(&c, &plain).unwrap_err();
    assert!(
        e.contains("does not speak TLS") && e.contains("plain mode"),
        "{e}"
    );
}

#[test]
fn a_silent_server_times_the_handshake_out() {
    let pki = Pki::new("ops");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let start = Instant::now();
    let e = connect(
        TcpStream::connect(&addr).unwrap(),
        &c,
        &addr,
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(e.to_string().contains("timed out"), "{e}");
    drop(l);
}

#[test]
fn rotated_files_serve_new_connections_and_old_ones_keep_working() {
    let pki = Pki::new("ops");
    let (cert, key) = pki.backend("gpu1", &[]);
    let server = Arc::new(
        ServerTls::load(pki.server_config((cert.clone(), key.clone()), &pki.ca_file)).unwrap(),
    );
    let (addr, _rx) = serve(server.clone(), 3);
    let c = ClientTls::load(pki.client_config(Some(pki.hypervisor("hv1", "acme")), &pki.ca_file))
        .unwrap();
    let serial = |s: &netgpu_tls::blocking::ClientStream| {
        CertInfo::parse(&s.conn().peer_certificates().unwrap()[0])
            .unwrap()
            .serial
    };
    let mut old = connect(TcpStream::connect(&addr).unwrap(), &c, &addr, T).unwrap();
    let before = serial(&old);

    // Rotate as documented: new files renamed over the old ones.
    let (nc, nk) = pki.backend("gpu1-next", &[]);
    std::fs::rename(&nk, &key).unwrap();
    std::fs::rename(&nc, &cert).unwrap();
    let s = connect(TcpStream::connect(&addr).unwrap(), &c, &addr, T).unwrap();
    let after = serial(&s);
    assert_ne!(before, after, "a new connection gets the new certificate");
    assert_eq!(server.generation(), 2);

    // A broken file keeps the last good certificate.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    let s = connect(TcpStream::connect(&addr).unwrap(), &c, &addr, T).unwrap();
    assert_eq!(serial(&s), after);

    old.write_all(b"pong").unwrap();
    old.flush().unwrap();
    let mut b = [0u8; 4];
    old.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong", "the established connection is untouched");
}

#[test]
fn client_certificate_rotation_is_picked_up_too() {
    let pki = Pki::new("ops");
    let server =
        ServerTls::load(pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file)).unwrap();
    let (addr, rx) = serve(Arc::new(server), 2);
    let (cert, key) = pki.hypervisor("hv1", "acme");
    let c = ClientTls::load(pki.client_config(Some((cert.clone(), key.clone())), &pki.ca_file))
        .unwrap();
    client(&c, &addr).unwrap();
    let Served::Ok(Some(a)) = served(&rx) else {
        panic!()
    };
    let (nc, nk) = pki.hypervisor("hv1-next", "acme");
    std::fs::rename(&nk, &key).unwrap();
    std::fs::rename(&nc, &cert).unwrap();
    client(&c, &addr).unwrap();
    let Served::Ok(Some(b)) = served(&rx) else {
        panic!()
    };
    assert_ne!(a.serial, b.serial);
    assert_eq!(b.subject, "CN=hv1-next");
}
