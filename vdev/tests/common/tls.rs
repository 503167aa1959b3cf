//! TLS for the harness: a throwaway CA, the backend's and a hypervisor's certificates, and a
//! CPU backend behind the backend's own mutual-TLS listener.

use std::path::PathBuf;
use std::sync::Arc;

use netgpu_backend::config::Config;
use netgpu_backend::tenant::TenantConfig;
use netgpu_backend::testing::{cpu_config, InProcessBackend};
use netgpu_tls::issue::{new_ca, Ca, Role};
use netgpu_tls::{ClientAuth, ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig, TenantName};

use super::{Backend, TOKEN};

/// The name the backend's certificate carries (and clients check).
pub const BACKEND_NAME: &str = "gpu1.test";

/// A CA and the files of what it issued, in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pem = new_ca(name, 30).unwrap();
        let ca_file = dir.path().join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, &pem.cert_pem).unwrap();
        let ca = Ca::from_pem(&pem.cert_pem, &pem.key_pem).unwrap();
        Pki { dir, ca, ca_file }
    }

    /// Certificate and key files `stem.crt`, `stem.key`.
    pub fn issue(&self, stem: &str, role: &Role) -> (PathBuf, PathBuf) {
        let i = self.ca.issue(stem, role, 10).unwrap();
        let c = self.dir.path().join(format!("{stem}.crt"));
        let k = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&c, &i.cert_pem).unwrap();
        std::fs::write(&k, &i.key_pem).unwrap();
        (c, k)
    }

    /// The backend's certificate ([`BACKEND_NAME`] and 127.0.0.1).
    pub fn backend(&self) -> (PathBuf, PathBuf) {
        self.issue(
            "gpu1",
            &Role::Backend {
                dns: vec![BACKEND_NAME.into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            },
        )
    }

    /// A hypervisor's certificate for `tenant`.
    pub fn hypervisor(&self, tenant: &str) -> (PathBuf, PathBuf) {
        self.issue(
            "hv1",
            &Role::Hypervisor {
                tenant: TenantName::new(tenant).unwrap(),
                dns: vec![],
            },
        )
    }

    /// The backend's TLS: its certificate, client certificates from this CA required.
    pub fn server(&self) -> ServerTls {
        let (cert, key) = self.backend();
        ServerTls::load(ServerTlsConfig {
            cert,
            key,
            client_ca: self.ca_file.clone(),
            client_auth: ClientAuth::Required,
            crls: Vec::new(),
        })
        .unwrap()
    }

    /// vdev's `[tls]` as a hypervisor of `tenant`.
    pub fn client(&self, tenant: &str) -> Arc<ClientTls> {
        let (cert, key) = self.hypervisor(tenant);
        Arc::new(
            ClientTls::load(ClientTlsConfig {
                ca: self.ca_file.clone(),
                cert: Some(cert),
                key: Some(key),
                server_name: Some(BACKEND_NAME.into()),
                crls: Vec::new(),
            })
            .unwrap(),
        )
    }
}

/// A CPU backend behind its own mutual-TLS listener serving `tenant` (with the harness's
/// token), configured like [`super::start_backend_with`]'s and then by `tweak`.
pub fn start_backend(
    rt: &tokio::runtime::Runtime,
    pki: &Pki,
    tenant: &str,
    tweak: impl FnOnce(&mut Config),
) -> Backend {
    let mut config = cpu_config(
        "127.0.0.1:0".parse().unwrap(),
        bytesize::ByteSize::mib(64),
        bytesize::ByteSize::mib(256),
    );
    config.tenants = vec![TenantConfig {
        name: TenantName::new(tenant).unwrap(),
        memory_quota: None,
        max_sessions: None,
        session_memory_quota: None,
        kernel_time_limit_ms: None,
        tokens: vec![TOKEN.into()],
        token_files: vec![],
    }];
    tweak(&mut config);
    let served = rt
        .block_on(InProcessBackend::start_tls("tls cpu", config, pki.server()))
        .unwrap();
    Backend::from(served)
}
