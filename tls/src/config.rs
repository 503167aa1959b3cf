//! The `[tls]` sections of the TOML configs: the backend's (server) and a client's (vdev,
//! libcuda). Each config file embeds one of these; see `docs/security.md` for the annotated
//! reference and `netgpu-cert`, which prints matching snippets.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("[tls] sets {set} but not {missing}: a client certificate needs both its certificate and its private key")]
    HalfIdentity {
        set: &'static str,
        missing: &'static str,
    },
    #[error("[tls] {field} is empty")]
    EmptyPath { field: &'static str },
}

/// Whether the backend demands a client certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client presents a certificate from `client_ca` (mutual TLS); the default.
    #[default]
    Required,
    /// A client may connect without a certificate; it then must present a tenant's token in
    /// its `Hello` (inside TLS). Clients that do present one are still verified.
    Optional,
}

/// The backend's `[tls]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The backend's certificate chain (PEM, leaf first), with serverAuth and the names
    /// clients connect to.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificate(s) (PEM) whose client certificates are accepted.
    pub client_ca: PathBuf,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Certificate revocation lists (PEM or DER files) of the CAs in `client_ca`: a client
    /// certificate listed in one is refused. With any CRL configured, every client
    /// certificate's issuer must have one here (an empty CRL is fine): a certificate whose
    /// revocation status is unknown is refused too. Reloaded with the certificates.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

impl ServerTlsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("cert", &self.cert)?;
        non_empty("key", &self.key)?;
        non_empty("client_ca", &self.client_ca)?;
        self.crls.iter().try_for_each(|c| non_empty("crls", c))
    }

    /// The files whose change triggers a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()];
        f.extend(self.crls.iter().cloned());
        f
    }
}

/// A client's `[tls]` section (vdev, libcuda, tools).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA certificate(s) (PEM) that issued the backends' certificates.
    pub ca: PathBuf,
    /// This client's certificate chain (PEM, leaf first), with clientAuth and the tenant URI.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the backend's certificate must carry. Default: the host part of the backend
    /// address (a DNS name or an IP address).
    #[serde(default, alias = "server-name")]
    pub server_name: Option<String>,
    /// Certificate revocation lists (PEM or DER) of the CAs in `ca`: a backend certificate
    /// listed in one is refused. With any configured, every backend certificate's issuer
    /// must have one here (fail closed). Reloaded with the certificates.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

impl ClientTlsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("ca", &self.ca)?;
        self.crls.iter().try_for_each(|c| non_empty("crls", c))?;
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                non_empty("cert", c)?;
                non_empty("key", k)
            }
            (Some(_), None) => Err(ConfigError::HalfIdentity {
                set: "cert",
                missing: "key",
            }),
            (None, Some(_)) => Err(ConfigError::HalfIdentity {
                set: "key",
                missing: "cert",
            }),
            (None, None) => Ok(()),
        }
    }

    /// The files whose change triggers a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.ca.clone()];
        f.extend(self.cert.iter().cloned());
        f.extend(self.key.iter().cloned());
        f.extend(self.crls.iter().cloned());
        f
    }
}

fn non_empty(field: &'static str, p: &Path) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        Err(ConfigError::EmptyPath { field })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_section_parses_with_required_client_auth_by_default() {
        let c: ServerTlsConfig = toml::from_str(
            "cert = \"/etc/netgpu/tls/b.crt\"\nkey = \"/k\"\nclient_ca = \"/ca.crt\"\n",
        )
        .unwrap();
        assert_eq!(c.client_auth, ClientAuth::Required);
        assert!(c.validate().is_ok());
        assert_eq!(c.files().len(), 3);
        assert!(c.crls.is_empty());
        let c: ServerTlsConfig = toml::from_str(
            "cert = \"/c\"\nkey = \"/k\"\nclient_ca = \"/ca\"\ncrls = [\"/ca.crl\", \"/old.crl\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.files().len(),
            5,
            "CRLs are reloaded with the certificates"
        );
        let c: ServerTlsConfig =
            toml::from_str("cert = \"/c\"\nkey = \"/k\"\nclient_ca = \"/ca\"\ncrls = [\"\"]\n")
                .unwrap();
        assert_eq!(c.validate(), Err(ConfigError::EmptyPath { field: "crls" }));
        assert!(toml::from_str::<ServerTlsConfig>("cert = \"/x\"\nkey = \"/k\"\n").is_err());
        assert!(toml::from_str::<ServerTlsConfig>(
            "cert = \"/x\"\nkey = \"/k\"\nclient_ca = \"/c\"\nclientca = 1\n"
        )
        .is_err());
    }

    #[test]
    fn client_section_needs_cert_and_key_together() {
        let c: ClientTlsConfig =
            toml::from_str("ca = \"/ca\"\ncert = \"/c\"\nserver-name = \"gpu1\"\n").unwrap();
        assert_eq!(c.server_name.as_deref(), Some("gpu1"));
        assert_eq!(
            c.validate(),
            Err(ConfigError::HalfIdentity {
                set: "cert",
                missing: "key"
            })
        );
        let c: ClientTlsConfig = toml::from_str("ca = \"/ca\"\n").unwrap();
        assert!(c.validate().is_ok());
    }
}
