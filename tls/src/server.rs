//! The backend's TLS endpoint: a rustls server configuration built from the `[tls]` section
//! (TLS 1.3, client certificates from `client_ca` required or optional, ALPN `netgpu`),
//! rebuilt when the files change, and the tenant identity of a connected client.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;

use crate::config::{ClientAuth, ServerTlsConfig};
use crate::identity::{peer_identity, IdentityError, PeerIdentity};
use crate::pem::{load_certified_key, load_crls, load_roots, verifier_error, LoadError};
use crate::reload::Reloading;
use crate::{provider, ALPN, VERSIONS};

/// The backend's TLS state: its configuration and the current rustls server config.
pub struct ServerTls {
    config: ServerTlsConfig,
    current: Reloading<Built>,
}

/// One load of the files: the server config and the client verifier inside it (kept to
/// check established sessions' certificates against CRLs loaded since).
struct Built {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("config", &self.config)
            .field("generation", &self.current.generation())
            .finish()
    }
}

impl ServerTls {
    /// Loads and checks the files; errors here name the file that failed.
    pub fn load(config: ServerTlsConfig) -> Result<ServerTls, LoadError> {
        config.validate().map_err(|e| LoadError::Build {
            files: "[tls]".into(),
            reason: e.to_string(),
        })?;
        let c = config.clone();
        let current = Reloading::new("backend certificate", config.files(), move || build(&c))?;
        Ok(ServerTls { config, current })
    }

    /// The rustls configuration for a new connection (reloaded if the files changed).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.get().config.clone()
    }

    /// Whether the CRLs configured now (reloaded if the files changed) revoke the
    /// certificate of a client that was accepted earlier (`chain`: its certificate first,
    /// then any intermediates it sent). Only a revocation counts: a certificate that has
    /// expired since, or whose issuer has no CRL any more, does not end what it opened.
    pub fn revoked(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let built = self.current.get();
        matches!(
            built
                .verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now()),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked
            ))
        )
    }

    pub fn config(&self) -> &ServerTlsConfig {
        &self.config
    }

    /// How many times the files have been loaded successfully.
    pub fn generation(&self) -> u64 {
        self.current.generation()
    }

    /// The identity in the client's certificate after a completed handshake; `None` when the
    /// client presented none (only possible with `client_auth = "optional"`).
    pub fn identify(conn: &rustls::CommonState) -> Result<Option<PeerIdentity>, IdentityError> {
        match conn.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => peer_identity(leaf).map(Some),
            None => Ok(None),
        }
    }
}

fn build(cfg: &ServerTlsConfig) -> Result<Built, LoadError> {
    let provider = provider();
    let key = load_certified_key(&cfg.cert, &cfg.key, &provider)?;
    let roots = load_roots("client CA", &cfg.client_ca)?;
    let mut crls = Vec::new();
    for path in &cfg.crls {
        crls.extend(load_crls(path)?);
    }
    let files = || {
        format!(
            "{}, {}, {}",
            cfg.cert.display(),
            cfg.key.display(),
            cfg.client_ca.display()
        )
    };
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if cfg.client_auth == ClientAuth::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    if !crls.is_empty() {
        // netgpu's CAs sign end-entity certificates only (path length 0): the client's own
        // certificate is what a CRL can list. An issuer without a CRL here: refused
        // (UnknownRevocationStatus), the default, so a forgotten CRL fails closed.
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier
        .build()
        .map_err(|e| verifier_error(&cfg.client_ca, &cfg.crls, e))?;
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| LoadError::Build {
            files: files(),
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    sc.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Built {
        config: Arc::new(sc),
        verifier,
    })
}
