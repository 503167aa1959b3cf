//! `netgpuctl cert` works on a machine with no store: the CA and certificates an operator
//! makes before any GPU host exists.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn cert_commands_need_no_store() {
    let d = std::env::temp_dir().join(format!("netgpuctl-cert-{}", std::process::id()));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netgpuctl"))
            .args(args)
            .env("NETGPU_STORE", "etcd://127.0.0.1:1")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    let pki = d.join("pki");
    let o = run(&["cert", "ca", "--out", pki.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "--json",
        "cert",
        "backend",
        "--ca",
        pki.to_str().unwrap(),
        "--name",
        "gpu1",
        "--dns",
        "gpu1.dc",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["certificate"]["sans"][0], "DNS:gpu1.dc");
    // Revocation needs no store either: revoke writes the CA's CRL, crl re-signs it.
    let crt = d.join("gpu1.crt");
    let o = run(&[
        "cert",
        "revoke",
        "--ca",
        pki.to_str().unwrap(),
        crt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--json", "cert", "crl", "--ca", pki.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["revoked"], 1);
    assert!(pki.join("ca.crl").exists());
    let _ = std::fs::remove_dir_all(d);
}
