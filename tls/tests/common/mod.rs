//! A throwaway PKI in a temporary directory, made with the crate's own issuer.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use netgpu_tls::issue::{new_ca, Ca, Issued, Role};
use netgpu_tls::{ClientAuth, ClientTlsConfig, ServerTlsConfig, TenantName};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = new_ca(name, 30).unwrap();
        let ca_file = dir.path().join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, &ca_pem.cert_pem).unwrap();
        let ca = Ca::from_pem(&ca_pem.cert_pem, &ca_pem.key_pem).unwrap();
        Pki { dir, ca, ca_file }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an issued pair to `<stem>.crt` / `<stem>.key`.
    pub fn write(&self, stem: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let (c, k) = (
            self.path(&format!("{stem}.crt")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&c, &issued.cert_pem).unwrap();
        std::fs::write(&k, &issued.key_pem).unwrap();
        (c, k)
    }

    pub fn backend(&self, stem: &str, dns: &[&str]) -> (PathBuf, PathBuf) {
        let role = Role::Backend {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let i = self.ca.issue(stem, &role, 10).unwrap();
        self.write(stem, &i)
    }

    pub fn hypervisor(&self, stem: &str, tenant: &str) -> (PathBuf, PathBuf) {
        let role = Role::Hypervisor {
            tenant: TenantName::new(tenant).unwrap(),
            dns: vec![],
        };
        let i = self.ca.issue(stem, &role, 10).unwrap();
        self.write(stem, &i)
    }

    pub fn server_config(&self, cert: (PathBuf, PathBuf), client_ca: &Path) -> ServerTlsConfig {
        ServerTlsConfig {
            cert: cert.0,
            key: cert.1,
            client_ca: client_ca.to_path_buf(),
            client_auth: ClientAuth::Required,
            crls: Vec::new(),
        }
    }

    pub fn client_config(&self, id: Option<(PathBuf, PathBuf)>, ca: &Path) -> ClientTlsConfig {
        ClientTlsConfig {
            ca: ca.to_path_buf(),
            cert: id.as_ref().map(|i| i.0.clone()),
            key: id.map(|i| i.1),
            server_name: None,
            crls: Vec::new(),
        }
    }
}
