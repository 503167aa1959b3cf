//! Reading the PEM files an operator configures: certificate chains, private keys and CA
//! bundles. Every error names the file and says what to do about it; a certificate that has
//! expired, is not yet valid, or does not match its key is refused here rather than at the
//! first handshake.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use thiserror::Error;
use tracing::warn;

use crate::identity::{format_time, CertInfo};

/// Largest PEM file read (a chain of a few certificates is a few KiB).
const MAX_PEM_FILE: u64 = 1 << 20;
/// A certificate this close to its end is loaded with a warning.
pub const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {what} {path}: check the path in the [tls] section and that this user may read the file")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is larger than 1 MiB; it is not a PEM certificate or key")]
    TooLarge { what: &'static str, path: PathBuf },
    #[error(
        "{what} {path} holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)"
    )]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not valid PEM: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("private key {path} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY): {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error(
        "private key {path} cannot be used (supported: ECDSA P-256/P-384, Ed25519, RSA): {reason}"
    )]
    BadKey { path: PathBuf, reason: String },
    #[error("certificate {path} is not valid X.509: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("certificate {path} ({subject}) expired at {not_after}: issue a new one (`netgpu-cert backend|hypervisor ...`) and replace the file; it is picked up without a restart")]
    Expired {
        path: PathBuf,
        subject: String,
        not_after: String,
    },
    #[error("certificate {path} ({subject}) is not valid before {not_before}: check this machine's clock (or wait)")]
    NotYetValid {
        path: PathBuf,
        subject: String,
        not_before: String,
    },
    #[error("private key {key} does not belong to certificate {cert}: install the matching pair (when rotating, write both to new files and rename them into place)")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("CA file {path}: certificate {index} ({subject}) cannot be used as a trust anchor: {reason}")]
    BadAnchor {
        path: PathBuf,
        index: usize,
        subject: String,
        reason: String,
    },
    #[error("certificate revocation list {path} holds no CRL (expected a -----BEGIN X509 CRL----- block, or DER): {reason}")]
    NoCrl { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration from {files}: {reason}")]
    Build { files: String, reason: String },
}

pub type Result<T> = std::result::Result<T, LoadError>;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    let err = |source| LoadError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if meta.len() > MAX_PEM_FILE {
        return Err(LoadError::TooLarge {
            what,
            path: path.to_owned(),
        });
    }
    std::fs::read(path).map_err(err)
}

/// All certificates in a PEM file, in file order.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(what, path)?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(c.map_err(|e| LoadError::Pem {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?);
    }
    if certs.is_empty() {
        return Err(LoadError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| LoadError::NoKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The CA certificates of a bundle as rustls trust anchors.
pub fn load_roots(what: &'static str, path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (index, c) in load_certs(what, path)?.into_iter().enumerate() {
        let subject = CertInfo::parse(&c)
            .map(|i| i.subject)
            .unwrap_or_else(|_| "?".into());
        roots.add(c).map_err(|e| LoadError::BadAnchor {
            path: path.to_owned(),
            index: index + 1,
            subject,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The certificate revocation lists in a file: PEM (`-----BEGIN X509 CRL-----` blocks, as
/// `netgpu-cert crl` and `openssl ca -gencrl` write) or one DER CRL. Each is parsed here, so a
/// broken file is refused at load (naming it) rather than at the next handshake; a list past
/// its `nextUpdate` is loaded with a warning (it still revokes what it lists).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = read("certificate revocation list", path)?;
    let no_crl = |reason: String| LoadError::NoCrl {
        path: path.to_owned(),
        reason,
    };
    let mut crls = Vec::new();
    for c in CertificateRevocationListDer::pem_slice_iter(&bytes) {
        crls.push(c.map_err(|e| no_crl(e.to_string()))?);
    }
    if crls.is_empty() {
        if bytes.first() != Some(&0x30) {
            return Err(no_crl("no PEM block found".into()));
        }
        crls.push(CertificateRevocationListDer::from(bytes));
    }
    for c in &crls {
        let (_, crl) = x509_parser::parse_x509_crl(c)
            .map_err(|e| no_crl(format!("not a valid X.509 CRL: {e}")))?;
        if let Some(next) = crl.next_update() {
            if next.timestamp() < now() {
                warn!(
                    crl = %path.display(),
                    issuer = %crl.issuer(),
                    next_update = %format_time(next.timestamp()),
                    "certificate revocation list is past its next update: issue a fresh one (`netgpu-cert crl --ca DIR`) and replace the file"
                );
            }
        }
    }
    Ok(crls)
}

/// A certificate chain and its private key, checked: the key matches the leaf, and the leaf is
/// valid now (a warning is logged when it ends within [`EXPIRY_WARNING_SECS`]).
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = load_certs("certificate", cert_path)?;
    let key = load_key(key_path)?;
    check_validity(cert_path, &chain[0], now())?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| LoadError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(LoadError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(e) => Err(LoadError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Refuses a leaf certificate outside its validity period at `now` (UNIX seconds).
pub fn check_validity(path: &Path, leaf: &CertificateDer<'_>, now: i64) -> Result<CertInfo> {
    let info = CertInfo::parse(leaf).map_err(|e| LoadError::BadCertificate {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if now > info.not_after {
        return Err(LoadError::Expired {
            path: path.to_owned(),
            subject: info.subject,
            not_after: format_time(info.not_after),
        });
    }
    if now < info.not_before {
        return Err(LoadError::NotYetValid {
            path: path.to_owned(),
            subject: info.subject,
            not_before: format_time(info.not_before),
        });
    }
    if info.not_after - now < EXPIRY_WARNING_SECS {
        warn!(
            certificate = %path.display(),
            subject = %info.subject,
            not_after = %format_time(info.not_after),
            "certificate expires soon: issue a new one and replace the file (no restart needed)"
        );
    }
    Ok(info)
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The error of a certificate verifier that would not build from the CA file `ca` and the
/// CRL files `crls`: names them all.
pub fn verifier_error(ca: &Path, crls: &[PathBuf], e: impl std::fmt::Display) -> LoadError {
    LoadError::Build {
        files: std::iter::once(ca)
            .chain(crls.iter().map(PathBuf::as_path))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        reason: e.to_string(),
    }
}
