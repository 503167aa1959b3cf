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
