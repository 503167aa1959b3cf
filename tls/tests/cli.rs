//! The `netgpu-cert` CLI as an operator runs it: CA, backend and hypervisor certificates,
//! the printed config sections, file modes, and refusal to overwrite.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn cert(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netgpu-cert"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operator_flow_makes_files_that_load_and_config_that_parses() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(cert(&["ca", "--out", "pki"], dir).0);
    let mode = std::fs::metadata(dir.join("pki/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");

    let (ok, out, err) = cert(
        &[
            "backend",
            "--ca",
            "pki",
            "--name",
            "gpu1",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
            "b",
        ],
        dir,
    );
    assert!(ok, "{err}");
    // The printed [tls] section is the backend's config, ready to use.
    let section: String = out
        .split("\n\n")
        .find(|s| s.contains("client_ca"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    #[derive(serde::Deserialize)]
    struct B {
        tls: netgpu_tls::ServerTlsConfig,
    }
    let b: B = toml::from_str(&section).unwrap();
    netgpu_tls::ServerTls::load(b.tls).unwrap();

    let (ok, out, err) = cert(
        &[
            "--json",
            "hypervisor",
            "--ca",
            "pki",
            "--name",
            "hv1",
            "--tenant",
            "acme",
            "--out",
            "h",
        ],
        dir,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["certificate"]["tenant"], "acme");
    assert_eq!(v["certificate"]["key_purposes"][0], "clientAuth");

    let (ok, out, _) = cert(&["show", "h/hv1.crt"], dir);
    assert!(ok && out.contains("tenant:    acme"), "{out}");

    let (ok, _, err) = cert(
        &[
            "hypervisor",
            "--ca",
            "pki",
            "--name",
            "hv1",
            "--tenant",
            "acme",
            "--out",
            "h",
        ],
        dir,
    );
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = cert(&["backend", "--ca", "pki", "--name", "x"], dir);
    assert!(!ok && err.contains("--dns or --ip"), "{err}");
    let (ok, _, err) = cert(
        &["backend", "--ca", "none", "--name", "x", "--dns", "x"],
        dir,
    );
    assert!(!ok && err.contains("netgpu-cert ca --out none"), "{err}");
}

/// `revoke` and `crl`: the CRL the CLI writes makes a backend refuse exactly the revoked
/// certificate; a certificate of another CA cannot be revoked by this one.
#[test]
fn revoked_certificates_are_refused_by_a_backend_using_the_crl() {
    use netgpu_tls::blocking::{accept, connect};
    use netgpu_tls::{ClientAuth, ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(cert(&["ca", "--out", "pki"], dir).0);
    assert!(cert(&["ca", "--out", "other"], dir).0);
    let b = [
        "backend",
        "--ca",
        "pki",
        "--name",
        "gpu1",
        "--ip",
        "127.0.0.1",
        "--out",
        "b",
    ];
    assert!(cert(&b, dir).0);
    for hv in ["hv1", "hv2"] {
        let a = [
            "hypervisor",
            "--ca",
            "pki",
            "--name",
            hv,
            "--tenant",
            "acme",
            "--out",
            "h",
        ];
        assert!(cert(&a, dir).0);
    }
    let (ok, out, err) = cert(&["--json", "crl", "--ca", "pki"], dir);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], 0, "a first, empty CRL");
    let (ok, out, err) = cert(&["revoke", "--ca", "pki", "h/hv2.crt"], dir);
    assert!(ok, "{err}");
    assert!(
        out.contains("revoked h/hv2.crt (CN=hv2)") && out.contains("crls = ["),
        "{out}"
    );
    let (ok, _, err) = cert(&["revoke", "--ca", "other", "h/hv1.crt"], dir);
    assert!(!ok && err.contains("not by this CA"), "{err}");
    let text = std::fs::read_to_string(dir.join("pki/revoked.txt")).unwrap();
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
    // Revoking again lists it once.
    assert!(cert(&["revoke", "--ca", "pki", "h/hv2.crt"], dir).0);
    let (_, out, _) = cert(&["--json", "crl", "--ca", "pki"], dir);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], 1);

    let server = ServerTls::load(ServerTlsConfig {
        cert: dir.join("b/gpu1.crt"),
        key: dir.join("b/gpu1.key"),
        client_ca: dir.join("pki/ca.crt"),
        client_auth: ClientAuth::Required,
        crls: vec![dir.join("pki/ca.crl")],
    })
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = Duration::from_secs(5);
    let th = std::thread::spawn(move || {
        (0..2)
            .map(|_| {
                let (s, _) = l.accept().unwrap();
                accept(s, &server, t).map(|mut s| {
                    let mut b = [0u8; 1];
                    let _ = s.read_exact(&mut b);
                })
            })
            .map(|r| r.is_ok())
            .collect::<Vec<_>>()
    });
    for hv in ["hv1", "hv2"] {
        let c = ClientTls::load(ClientTlsConfig {
            ca: dir.join("pki/ca.crt"),
            cert: Some(dir.join(format!("h/{hv}.crt"))),
            key: Some(dir.join(format!("h/{hv}.key"))),
            server_name: None,
            crls: Vec::new(),
        })
        .unwrap();
        if let Ok(mut s) = connect(TcpStream::connect(&addr).unwrap(), &c, &addr, t) {
            let _ = s.write_all(b"x").and_then(|_| s.flush());
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        }
    }
    assert_eq!(
        th.join().unwrap(),
        vec![true, false],
        "hv1 admitted, the revoked hv2 refused"
    );
}
