//! A client's TLS endpoint (vdev, libcuda, tools): a rustls client configuration built from
//! the `[tls]` section (TLS 1.3, the backend's certificate checked against `ca` and the
//! expected server name, this client's certificate offered when configured, ALPN `netgpu`),
//! rebuilt when the files change.

use std::sync::Arc;

use rustls::sign::SingleCertAndKey;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use thiserror::Error;

use crate::config::ClientTlsConfig;
use crate::pem::{load_certified_key, load_crls, load_roots, verifier_error, LoadError};
use crate::policy::host_part;
use crate::reload::Reloading;
use crate::{provider, ALPN, VERSIONS};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{name:?} is not a valid server name (a DNS name or an IP address); set [tls] server_name to the name in the backend's certificate")]
pub struct NameError {
    pub name: String,
}

/// A client's TLS state: its configuration and the current rustls client config.
pub struct ClientTls {
    config: ClientTlsConfig,
    current: Reloading<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("config", &self.config)
            .field("generation", &self.current.generation())
            .finish()
    }
}

impl ClientTls {
    /// Loads and checks the files; errors here name the file that failed.
    pub fn load(config: ClientTlsConfig) -> Result<ClientTls, LoadError> {
        config.validate().map_err(|e| LoadError::Build {
            files: "[tls]".into(),
            reason: e.to_string(),
        })?;
        let c = config.clone();
        let current = Reloading::new("client certificate", config.files(), move || build(&c))?;
        Ok(ClientTls { config, current })
    }

    /// The rustls configuration for a new connection (reloaded if the files changed).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current.get()
    }

    pub fn config(&self) -> &ClientTlsConfig {
        &self.config
    }

    /// How many times the files have been loaded successfully.
    pub fn generation(&self) -> u64 {
        self.current.generation()
    }

    /// The name the backend at `addr` (`host:port`) must prove: `server_name` from the config,
    /// else the host part of `addr`.
    pub fn server_name(&self, addr: &str) -> Result<ServerName<'static>, NameError> {
        let name = self
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| host_part(addr).to_string());
        ServerName::try_from(name.clone()).map_err(|_| NameError { name })
    }
}

fn build(cfg: &ClientTlsConfig) -> Result<ClientConfig, LoadError> {
    let provider = provider();
    let roots = load_roots("backend CA", &cfg.ca)?;
    let mut crls = Vec::new();
    for path in &cfg.crls {
        crls.extend(load_crls(path)?);
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| LoadError::Build {
            files: cfg.ca.display().to_string(),
            reason: e.to_string(),
        })?;
    let builder = if crls.is_empty() {
        builder.with_root_certificates(roots)
    } else {
        // As at the backend: the end-entity certificate is checked, an issuer without a
        // CRL here is refused (fail closed).
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| verifier_error(&cfg.ca, &cfg.crls, e))?;
        builder.with_webpki_verifier(verifier)
    };
    let mut cc = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let ck = load_certified_key(cert, key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ck)))
        }
        _ => builder.with_no_client_auth(),
    };
    cc.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cc)
}
