//! Who a certificate says its holder is: the tenant scheme and certificate summaries.
//!
//! A hypervisor's (client's) certificate names its tenant in a subjectAltName URI
//! `netgpu://tenant/<name>`; exactly one such URI is allowed. The backend trusts it because
//! the certificate chains to the operator's CA (checked by rustls before this module is
//! asked), so a hypervisor cannot claim another tenant without the CA's key. Tenant names
//! are 1 to 63 characters of `a-z 0-9 - _ .`, starting with a letter or digit, so they can
//! appear unquoted in logs, metric labels and file names.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SAN URI prefix that names a tenant.
pub const TENANT_URI_PREFIX: &str = "netgpu://tenant/";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("invalid tenant name {name:?}: {why} (use 1-63 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit)")]
    TenantName { name: String, why: &'static str },
    #[error("the certificate is not valid X.509: {0}")]
    Parse(String),
    #[error("certificate {subject} names {count} tenants ({uris}); a client certificate must name exactly one (SAN URI {TENANT_URI_PREFIX}<name>)")]
    SeveralTenants {
        subject: String,
        count: usize,
        uris: String,
    },
    #[error("certificate {subject} has SAN URI {uri:?}, which is not a valid tenant")]
    BadTenantUri {
        subject: String,
        uri: String,
        #[source]
        source: Box<IdentityError>,
    },
}

/// A validated tenant name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    pub fn new(name: &str) -> Result<TenantName, IdentityError> {
        let bad = |why| IdentityError::TenantName {
            name: name.to_string(),
            why,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > 63 {
            return Err(bad("it is longer than 63 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(bad("it has a character outside a-z 0-9 - _ ."));
        }
        if !name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(bad("it does not start with a letter or digit"));
        }
        Ok(TenantName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SAN URI that names this tenant in a client certificate.
    pub fn uri(&self) -> String {
        format!("{TENANT_URI_PREFIX}{}", self.0)
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantName {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantName::new(s)
    }
}

impl TryFrom<String> for TenantName {
    type Error = IdentityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TenantName::new(&s)
    }
}

impl From<TenantName> for String {
    fn from(t: TenantName) -> String {
        t.0
    }
}

/// What the backend knows about an authenticated client from its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The tenant the certificate names, if any.
    pub tenant: Option<TenantName>,
    /// Subject distinguished name, for logs.
    pub subject: String,
    /// Serial number (hex), for logs and revocation.
    pub serial: String,
}

/// A summary of one certificate, for logs, errors and `netgpu-cert show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// subjectAltNames as `DNS:x`, `IP:x`, `URI:x`.
    pub sans: Vec<String>,
    /// Seconds since the UNIX epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    /// Extended key usages, as `serverAuth` / `clientAuth` / dotted OIDs.
    pub key_purposes: Vec<String>,
    /// The tenant named by a `netgpu://tenant/` URI, when exactly one valid one is present.
    pub tenant: Option<String>,
}

impl CertInfo {
    pub fn parse(der: &CertificateDer<'_>) -> Result<CertInfo, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let mut sans = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => {
                        sans.push(format!("URI:{u}"));
                        uris.push(u.to_string());
                    }
                    GeneralName::IPAddress(b) => sans.push(format!("IP:{}", ip_text(b))),
                    GeneralName::RFC822Name(m) => sans.push(format!("email:{m}")),
                    other => sans.push(format!("{other:?}")),
                }
            }
        }
        let mut key_purposes = Vec::new();
        if let Ok(Some(eku)) = cert.extended_key_usage() {
            let e = eku.value;
            if e.server_auth {
                key_purposes.push("serverAuth".into());
            }
            if e.client_auth {
                key_purposes.push("clientAuth".into());
            }
            if e.any {
                key_purposes.push("any".into());
            }
            for o in &e.other {
                key_purposes.push(o.to_id_string());
            }
        }
        let subject = cert.subject().to_string();
        let tenant = tenant_from_uris(&subject, &uris)
            .ok()
            .flatten()
            .map(|t| t.0);
        Ok(CertInfo {
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            sans,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            key_purposes,
            tenant,
            subject,
        })
    }

    /// One line for error messages: subject, names and validity end.
    pub fn brief(&self) -> String {
        format!(
            "subject \"{}\", names [{}], valid until {}",
            self.subject,
            self.sans.join(", "),
            format_time(self.not_after)
        )
    }
}

/// The identity of a client from its end-entity certificate (already verified by rustls).
pub fn peer_identity(end_entity: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(end_entity).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let subject = cert.subject().to_string();
    let mut uris = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            if let GeneralName::URI(u) = name {
                uris.push(u.to_string());
            }
        }
    }
    let tenant = tenant_from_uris(&subject, &uris)?;
    Ok(PeerIdentity {
        tenant,
        subject,
        serial: cert.raw_serial_as_string(),
    })
}

fn tenant_from_uris(subject: &str, uris: &[String]) -> Result<Option<TenantName>, IdentityError> {
    let tenant_uris: Vec<&String> = uris
        .iter()
        .filter(|u| u.starts_with(TENANT_URI_PREFIX))
        .collect();
    match tenant_uris.as_slice() {
        [] => Ok(None),
        [one] => {
            let name = &one[TENANT_URI_PREFIX.len()..];
            TenantName::new(name)
                .map(Some)
                .map_err(|e| IdentityError::BadTenantUri {
                    subject: subject.to_string(),
                    uri: one.to_string(),
                    source: Box::new(e),
                })
        }
        many => Err(IdentityError::SeveralTenants {
            subject: subject.to_string(),
            count: many.len(),
            uris: many
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{b:02x?}"),
    }
}

/// A UNIX time as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, no calendar crate needed).
pub fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_checked() {
        assert!(TenantName::new("acme").is_ok());
        assert!(TenantName::new("team-7.ml_a").is_ok());
        for bad in ["", "-x", "Acme", "a b", "a/b", &"x".repeat(64), "é"] {
            assert!(TenantName::new(bad).is_err(), "{bad:?} accepted");
        }
        let e = TenantName::new("Acme").unwrap_err().to_string();
        assert!(e.contains("Acme") && e.contains("a-z"), "{e}");
    }

    #[test]
    fn tenant_uri_round_trips() {
        let t = TenantName::new("acme").unwrap();
        assert_eq!(t.uri(), "netgpu://tenant/acme");
        let got = tenant_from_uris("CN=x", &[t.uri(), "https://other".into()]).unwrap();
        assert_eq!(got, Some(t));
        assert_eq!(tenant_from_uris("CN=x", &[]).unwrap(), None);
    }

    #[test]
    fn two_tenants_or_a_bad_one_are_refused() {
        let e = tenant_from_uris(
            "CN=hv",
            &["netgpu://tenant/a".into(), "netgpu://tenant/b".into()],
        )
        .unwrap_err();
        assert!(matches!(e, IdentityError::SeveralTenants { count: 2, .. }));
        let e = tenant_from_uris("CN=hv", &["netgpu://tenant/../x".into()]).unwrap_err();
        assert!(e.to_string().contains("netgpu://tenant/../x"), "{e}");
    }

    #[test]
    fn times_format_as_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }
}
