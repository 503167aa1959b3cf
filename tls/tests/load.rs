//! Loading configured files: every failure names the file and what to do.

#![allow(clippy::unwrap_used)]

mod common;

use common::Pki;
use netgpu_tls::issue::Role;
use netgpu_tls::{chain, ClientTls, ServerTls};

fn server_err(cfg: netgpu_tls::ServerTlsConfig) -> String {
    let e = ServerTls::load(cfg).unwrap_err();
    let s = chain(&e);
    eprintln!("{s}");
    s
}

#[test]
fn a_missing_file_is_named() {
    let pki = Pki::new("ops");
    let mut cfg = pki.server_config(pki.backend("gpu1", &[]), &pki.ca_file);
    cfg.client_ca = pki.path("nope.crt");
    let e = server_err(cfg);
    assert!(
        e.contains("client CA") && e.contains("nope.crt") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let pki = Pki::new("ops");
    let (cert, _) = pki.backend("gpu1", &[]);
    let (_, other_key) = pki.backend("gpu2", &[]);
    let e = server_err(pki.server_config((cert, other_key), &pki.ca_file));
    assert!(
        e.contains("does not belong to certificate")
            && e.contains("gpu2.key")
            && e.contains("gpu1.crt"),
        "{e}"
    );
}

#[test]
fn swapped_cert_and_key_paths_are_explained() {
    let pki = Pki::new("ops");
    let (cert, key) = pki.backend("gpu1", &[]);
    let e = server_err(pki.server_config((key, cert), &pki.ca_file));
    assert!(
        e.contains("gpu1.key") && e.contains("holds no PEM certificate"),
        "{e}"
    );
}

#[test]
fn an_expired_certificate_is_refused_at_load() {
    let pki = Pki::new("ops");
    // rcgen directly, to back-date the certificate.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), ca_key);
    let cert = p.signed_by(&key, &issuer).unwrap();
    let c = pki.path("old.crt");
    let k = pki.path("old.key");
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let e = server_err(pki.server_config((c, k), &pki.ca_file));
    assert!(
        e.contains("old.crt")
            && e.contains("expired at 2021-01-01")
            && e.contains("replace the file"),
        "{e}"
    );
}

#[test]
fn a_client_with_a_certificate_but_no_key_is_refused() {
    let pki = Pki::new("ops");
    let (cert, _) = pki.hypervisor("hv1", "acme");
    let mut cfg = pki.client_config(None, &pki.ca_file);
    cfg.cert = Some(cert);
    let e = chain(&ClientTls::load(cfg).unwrap_err());
    assert!(e.contains("cert but not key"), "{e}");
}

#[test]
fn garbage_in_a_ca_file_is_named() {
    let pki = Pki::new("ops");
    let bad = pki.path("bad-ca.crt");
    std::fs::write(&bad, "hello\n").unwrap();
    let e = chain(&ClientTls::load(pki.client_config(None, &bad)).unwrap_err());
    assert!(
        e.contains("backend CA") && e.contains("bad-ca.crt") && e.contains("no PEM certificate"),
        "{e}"
    );
}

#[test]
fn a_hypervisor_certificate_with_two_tenants_is_refused_as_identity() {
    let pki = Pki::new("ops");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    for t in ["a", "b"] {
        p.subject_alt_names.push(rcgen::SanType::URI(
            format!("netgpu://tenant/{t}").try_into().unwrap(),
        ));
    }
    let cert = p.self_signed(&key).unwrap();
    let e = netgpu_tls::identity::peer_identity(cert.der())
        .unwrap_err()
        .to_string();
    assert!(e.contains("names 2 tenants"), "{e}");
    // The issuer never makes such a certificate.
    let ok = pki
        .ca
        .issue(
            "hv",
            &Role::Hypervisor {
                tenant: "a".parse().unwrap(),
                dns: vec!["hv.dc".into()],
            },
            1,
        )
        .unwrap();
    assert!(ok.cert_pem.contains("BEGIN CERTIFICATE"));
}
