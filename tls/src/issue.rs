//! A small certificate authority for operators (feature `issue`, used by `netgpu-cert`):
//! a CA, backend (GPU host) certificates and hypervisor (client) certificates, with rcgen.
//!
//! All keys are ECDSA P-256 (fast handshakes, understood by every TLS stack). The CA may
//! sign end-entity certificates only (path length 0). A backend certificate carries the DNS
//! names and IP addresses clients connect to and only the serverAuth usage; a hypervisor
//! certificate carries its tenant as the SAN URI `netgpu://tenant/<name>` and only the
//! clientAuth usage, so neither can pose as the other. Certificates start one hour in the
//! past (clock skew between machines) and get a random 127-bit serial.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use crate::identity::TenantName;

#[derive(Debug, Error)]
pub enum IssueError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable: {reason}")]
    BadInput {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "a backend certificate needs at least one --dns or --ip: the names clients connect to"
    )]
    NoNames,
    #[error("{0:?} is not a valid DNS name for a certificate")]
    DnsName(String),
    #[error("validity of {0} days is out of range (1 to 36500)")]
    Days(u32),
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

pub type Result<T> = std::result::Result<T, IssueError>;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Clone, Debug)]
pub enum Role {
    /// A GPU host's backend: the names clients use to reach it.
    Backend { dns: Vec<String>, ips: Vec<IpAddr> },
    /// A hypervisor (vdev) or another client: its tenant, and optional DNS names for logs.
    Hypervisor {
        tenant: TenantName,
        dns: Vec<String>,
    },
}

/// A certificate listed in a CA's revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's serial number (DER integer content, big-endian).
    pub serial: Vec<u8>,
    /// When it was revoked (UNIX seconds).
    pub time: i64,
}

/// A loaded CA that can sign certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    if !(1..=36_500).contains(&days) {
        return Err(IssueError::Days(days));
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    Ok(())
}

fn serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    // Positive and minimal in DER: top bit clear, first byte non-zero.
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

/// `n` as the content of a minimal, positive DER INTEGER.
fn der_uint(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
    let mut v = b[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

fn dns(name: &str) -> Result<SanType> {
    name.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| IssueError::DnsName(name.to_string()))
}

/// A new self-signed CA named `name`, valid for `days`.
pub fn new_ca(name: &str, days: u32) -> Result<Issued> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    validity(&mut p, days)?;
    p.serial_number = Some(serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Ca {
    /// A CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| IssueError::BadInput {
            what: "CA key",
            path: "(PEM)".into(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| IssueError::BadInput {
            what: "CA certificate",
            path: "(PEM)".into(),
            reason: e.to_string(),
        })?;
        Ok(Ca { issuer })
    }

    /// A CA from `ca.crt` and `ca.key` files.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca> {
        let read = |what, p: &Path| {
            std::fs::read_to_string(p).map_err(|source| IssueError::Read {
                what,
                path: p.display().to_string(),
                source,
            })
        };
        let (c, k) = (read("CA certificate", cert)?, read("CA key", key)?);
        let key_pair = KeyPair::from_pem(&k).map_err(|e| IssueError::BadInput {
            what: "CA key",
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&c, key_pair).map_err(|e| IssueError::BadInput {
            what: "CA certificate",
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Ca { issuer })
    }

    /// A certificate revocation list (PEM) listing `revoked`, numbered `number` (must grow
    /// with every list the CA issues), valid from now for `days`.
    pub fn crl(&self, revoked: &[Revoked], number: u64, days: u32) -> Result<String> {
        if !(1..=36_500).contains(&days) {
            return Err(IssueError::Days(days));
        }
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.time).unwrap_or(now),
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(i64::from(days)),
            crl_number: SerialNumber::from_slice(&der_uint(number)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Issues a certificate named `name` (its common name) for `role`, valid for `days`.
    pub fn issue(&self, name: &str, role: &Role, days: u32) -> Result<Issued> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        validity(&mut p, days)?;
        p.serial_number = Some(serial());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        match role {
            Role::Backend { dns: names, ips } => {
                if names.is_empty() && ips.is_empty() {
                    return Err(IssueError::NoNames);
                }
                for n in names {
                    p.subject_alt_names.push(dns(n)?);
                }
                p.subject_alt_names
                    .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Role::Hypervisor { tenant, dns: names } => {
                let uri = tenant
                    .uri()
                    .try_into()
                    .map_err(|_| IssueError::DnsName(tenant.uri()))?;
                p.subject_alt_names.push(SanType::URI(uri));
                for n in names {
                    p.subject_alt_names.push(dns(n)?);
                }
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A CA, a backend certificate for `localhost` and a hypervisor certificate of `tenant`,
/// written into `dir` (`ca.crt`, `b.crt`/`b.key`, `h.crt`/`h.key`), and the two ends loaded
/// from them (mutual authentication, the client expecting `localhost`): the TLS setup of
/// this crate's tests and benchmarks over loopback.
pub fn loopback_pki(
    dir: &Path,
    tenant: &str,
) -> std::result::Result<(crate::ServerTls, crate::ClientTls), Box<dyn std::error::Error>> {
    let ca = new_ca("loopback test CA", 1)?;
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem)?;
    let ca = Ca::from_pem(&ca.cert_pem, &ca.key_pem)?;
    let backend = Role::Backend {
        dns: vec!["localhost".into()],
        ips: vec![],
    };
    let hypervisor = Role::Hypervisor {
        tenant: TenantName::new(tenant)?,
        dns: vec![],
    };
    for (n, role) in [("b", &backend), ("h", &hypervisor)] {
        let i = ca.issue(n, role, 1)?;
        std::fs::write(dir.join(format!("{n}.crt")), &i.cert_pem)?;
        std::fs::write(dir.join(format!("{n}.key")), &i.key_pem)?;
    }
    let server = crate::ServerTls::load(crate::ServerTlsConfig {
        cert: dir.join("b.crt"),
        key: dir.join("b.key"),
        client_ca: dir.join("ca.crt"),
        client_auth: crate::ClientAuth::Required,
        crls: Vec::new(),
    })?;
    let client = crate::ClientTls::load(crate::ClientTlsConfig {
        ca: dir.join("ca.crt"),
        cert: Some(dir.join("h.crt")),
        key: Some(dir.join("h.key")),
        server_name: Some("localhost".into()),
        crls: Vec::new(),
    })?;
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{peer_identity, CertInfo};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn issued_certificates_carry_their_role() {
        let ca_pem = new_ca("test CA", 30).unwrap();
        let ca_info = CertInfo::parse(&der(&ca_pem.cert_pem)).unwrap();
        assert!(ca_info.is_ca);
        assert_eq!(ca_info.subject, "CN=test CA");
        let ca = Ca::from_pem(&ca_pem.cert_pem, &ca_pem.key_pem).unwrap();

        let b = ca
            .issue(
                "gpu1",
                &Role::Backend {
                    dns: vec!["gpu1.dc".into()],
                    ips: vec!["198.18.0.1".parse().unwrap()],
                },
                10,
            )
            .unwrap();
        let bi = CertInfo::parse(&der(&b.cert_pem)).unwrap();
        assert_eq!(bi.sans, vec!["DNS:gpu1.dc", "IP:198.18.0.1"]);
        assert_eq!(bi.key_purposes, vec!["serverAuth"]);
        assert_eq!(bi.issuer, "CN=test CA");
        assert!(!bi.is_ca);
        assert!(bi.not_after - bi.not_before > 10 * 86_400);

        let tenant = TenantName::new("acme").unwrap();
        let h = ca
            .issue(
                "hv1",
                &Role::Hypervisor {
                    tenant: tenant.clone(),
                    dns: vec![],
                },
                10,
            )
            .unwrap();
        let hi = CertInfo::parse(&der(&h.cert_pem)).unwrap();
        assert_eq!(hi.key_purposes, vec!["clientAuth"]);
        assert_eq!(hi.tenant.as_deref(), Some("acme"));
        let id = peer_identity(&der(&h.cert_pem)).unwrap();
        assert_eq!(id.tenant, Some(tenant));
        assert_eq!(id.subject, "CN=hv1");
        assert_ne!(bi.serial, hi.serial);
    }

    #[test]
    fn crl_numbers_are_minimal_positive_integers() {
        assert_eq!(der_uint(0), vec![0]);
        assert_eq!(der_uint(1), vec![1]);
        assert_eq!(der_uint(0x80), vec![0, 0x80]);
        assert_eq!(der_uint(0x1234), vec![0x12, 0x34]);
        assert_eq!(der_uint(u64::MAX), [vec![0], vec![0xff; 8]].concat());
    }

    #[test]
    fn a_crl_lists_the_revoked_serials() {
        let ca_pem = new_ca("crl CA", 30).unwrap();
        let ca = Ca::from_pem(&ca_pem.cert_pem, &ca_pem.key_pem).unwrap();
        let r = Revoked {
            serial: vec![0x41, 0x02, 0x03],
            time: 1_700_000_000,
        };
        let pem = ca.crl(std::slice::from_ref(&r), 7, 30).unwrap();
        let der =
            rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        assert_eq!(crl.issuer().to_string(), "CN=crl CA");
        let listed: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].raw_serial(), &r.serial[..]);
        assert_eq!(listed[0].revocation_date.timestamp(), r.time);
        assert!(matches!(ca.crl(&[], 8, 0), Err(IssueError::Days(0))));
    }

    #[test]
    fn bad_requests_are_refused() {
        let ca_pem = new_ca("c", 1).unwrap();
        let ca = Ca::from_pem(&ca_pem.cert_pem, &ca_pem.key_pem).unwrap();
        let none = Role::Backend {
            dns: vec![],
            ips: vec![],
        };
        assert!(matches!(ca.issue("b", &none, 1), Err(IssueError::NoNames)));
        assert!(matches!(new_ca("c", 0), Err(IssueError::Days(0))));
        assert!(Ca::from_pem(&ca_pem.cert_pem, "not a key").is_err());
    }
}
