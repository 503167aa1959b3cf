//! Certificate revocation lists at the backend (`[tls] crls`): a revoked hypervisor
//! certificate is refused with the reason on both sides, a CRL renamed into place is picked up
//! by the next connection, a client whose issuer has no CRL is refused (fail closed), and a
//! broken CRL file is refused at load, naming it.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::Pki;
use netgpu_tls::blocking::{accept, connect};
use netgpu_tls::identity::CertInfo;
use netgpu_tls::issue::Revoked;
use netgpu_tls::pem::{load_certs, LoadError};
use netgpu_tls::{ClientTls, ServerTls};

const T: Duration = Duration::from_secs(5);

/// Serves `n` connections (echo 4 bytes); sends what the backend saw of each.
fn serve(tls: Arc<ServerTls>, n: usize) -> (String, mpsc::Receiver<Result<(), String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..n {
            let (s, _) = l.accept().unwrap();
            match accept(s, &tls, T) {
                Ok(mut s) => {
                    tx.send(Ok(())).unwrap();
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                        let _ = s.flush();
                    }
                }
                Err(e) => tx.send(Err(e.to_string())).unwrap(),
            }
        }
    });
    (addr, rx)
}

fn exchange(tls: &ClientTls, addr: &str) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).unwrap();
    let mut s = connect(tcp, tls, addr, T).map_err(|e| e.to_string())?;
    s.write_all(b"ping").map_err(|e| tls.explain(&e, addr))?;
    s.flush().map_err(|e| tls.explain(&e, addr))?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b).map_err(|e| tls.explain(&e, addr))?;
    Ok(())
}

fn serial_of(cert: &Path) -> Vec<u8> {
    let c = load_certs("certificate", cert).unwrap();
    let hex = CertInfo::parse(&c[0]).unwrap().serial.replace(':', "");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Writes the CA's CRL listing `certs` to `path` by a rename, as operators install it.
fn write_crl(pki: &Pki, path: &Path, certs: &[&Path], number: u64) {
    let list: Vec<Revoked> = certs
        .iter()
        .map(|c| Revoked {
            serial: serial_of(c),
            time: 1_700_000_000,
        })
        .collect();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, pki.ca.crl(&list, number, 30).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_revoked_client_certificate_is_refused_and_a_new_crl_is_picked_up() {
    let pki = Pki::new("ops");
    let good = pki.hypervisor("hv-good", "acme");
    let lost = pki.hypervisor("hv-lost", "acme");
    let crl: PathBuf = pki.path("ca.crl");
    write_crl(&pki, &crl, &[], 1);
    let mut cfg = pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file);
    cfg.crls = vec![crl.clone()];
    let server = Arc::new(ServerTls::load(cfg).unwrap());
    let (addr, rx) = serve(server.clone(), 4);
    let lost_client = ClientTls::load(pki.client_config(Some(lost.clone()), &pki.ca_file)).unwrap();
    let good_client = ClientTls::load(pki.client_config(Some(good), &pki.ca_file)).unwrap();

    // Not listed yet: admitted.
    exchange(&lost_client, &addr).unwrap();
    rx.recv_timeout(T).unwrap().unwrap();

    // Its key is lost: the operator revokes it and renames the new CRL into place.
    write_crl(&pki, &crl, &[&lost.0], 2);
    let e = exchange(&lost_client, &addr).unwrap_err();
    eprintln!("client: {e}");
    assert!(
        e.contains("has been revoked") && e.contains("hv-lost.crt") && e.contains("crls"),
        "{e}"
    );
    let s = rx.recv_timeout(T).unwrap().unwrap_err();
    eprintln!("backend: {s}");
    assert!(
        s.contains("presented a revoked certificate") && s.contains("crls"),
        "{s}"
    );
    assert_eq!(
        server.generation(),
        2,
        "the CRL change reloaded the configuration"
    );

    // Others of the same CA go on.
    exchange(&good_client, &addr).unwrap();
    rx.recv_timeout(T).unwrap().unwrap();

    // A broken CRL written over it keeps the last good one (still refusing).
    std::fs::write(&crl, "-----BEGIN X509 CRL-----\ntruncated").unwrap();
    assert!(exchange(&lost_client, &addr).is_err());
    assert!(rx.recv_timeout(T).unwrap().is_err());
}

#[test]
fn a_client_whose_issuer_has_no_crl_is_refused() {
    let (ops, other) = (Pki::new("ops"), Pki::new("other"));
    // client_ca trusts both CAs, but only ops has a CRL.
    let bundle = ops.path("both-ca.crt");
    let pem = [
        std::fs::read_to_string(&ops.ca_file).unwrap(),
        std::fs::read_to_string(&other.ca_file).unwrap(),
    ]
    .concat();
    std::fs::write(&bundle, pem).unwrap();
    let crl = ops.path("ops.crl");
    write_crl(&ops, &crl, &[], 1);
    let mut cfg = ops.server_config(ops.backend("gpu1", &[]), &bundle);
    cfg.crls = vec![crl];
    let (addr, rx) = serve(Arc::new(ServerTls::load(cfg).unwrap()), 2);

    let c = ClientTls::load(ops.client_config(Some(other.hypervisor("hv2", "acme")), &ops.ca_file))
        .unwrap();
    assert!(exchange(&c, &addr).is_err());
    let s = rx.recv_timeout(T).unwrap().unwrap_err();
    eprintln!("backend: {s}");
    assert!(s.contains("revocation status is unknown"), "{s}");
    // ops' own hypervisors are checked against ops' CRL and admitted.
    let c = ClientTls::load(ops.client_config(Some(ops.hypervisor("hv1", "acme")), &ops.ca_file))
        .unwrap();
    exchange(&c, &addr).unwrap();
    rx.recv_timeout(T).unwrap().unwrap();
}

#[test]
fn a_broken_crl_file_is_refused_at_load_naming_it() {
    let pki = Pki::new("ops");
    let crl = pki.path("bad.crl");
    std::fs::write(&crl, "not a crl").unwrap();
    let mut cfg = pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file);
    cfg.crls = vec![crl.clone()];
    let e = ServerTls::load(cfg.clone()).unwrap_err();
    assert!(matches!(e, LoadError::NoCrl { .. }), "{e:?}");
    assert!(e.to_string().contains("bad.crl"), "{e}");
    cfg.crls = vec![pki.path("missing.crl")];
    let e = ServerTls::load(cfg).unwrap_err();
    assert!(
        matches!(e, LoadError::Read { .. }) && e.to_string().contains("missing.crl"),
        "{e}"
    );
}

#[test]
fn a_client_with_crls_refuses_a_revoked_backend_certificate() {
    let pki = Pki::new("ops");
    let hv = pki.hypervisor("hv1", "acme");
    let stolen = pki.backend("gpu-stolen", &[]);
    let crl = pki.path("ops.crl");
    write_crl(&pki, &crl, &[&stolen.0], 1);
    // A host whose key was stolen still serves with its (revoked) certificate.
    let (addr, rx) = serve(
        Arc::new(ServerTls::load(pki.server_config(stolen, &pki.ca_file)).unwrap()),
        2,
    );
    let mut cfg = pki.client_config(Some(hv), &pki.ca_file);
    let without = ClientTls::load(cfg.clone()).unwrap();
    exchange(&without, &addr).unwrap();
    rx.recv_timeout(T).unwrap().unwrap();
    cfg.crls = vec![crl];
    let with = ClientTls::load(cfg).unwrap();
    let e = exchange(&with, &addr).unwrap_err();
    eprintln!("client: {e}");
    assert!(
        e.contains("presented a revoked certificate") && e.contains("crls"),
        "{e}"
    );
    let _ = rx.recv_timeout(T);
}
