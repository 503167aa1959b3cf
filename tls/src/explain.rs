//! Handshake failures in words an operator can act on: which certificate or name failed,
//! on which side, and what to change. rustls' own errors say what is wrong with a
//! certificate; these add whose certificate it was, which configured file is involved and
//! the fix.

use std::io;
use std::path::Path;

use rustls::{AlertDescription, CertificateError, Error};

/// The rustls error inside an I/O error from a TLS stream, if it is one.
pub fn rustls_error(e: &io::Error) -> Option<&Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
}

/// What a client was configured with, for the message.
pub struct ClientSide<'a> {
    /// The backend address dialled.
    pub addr: &'a str,
    /// The name its certificate had to carry.
    pub server_name: &'a str,
    pub ca: &'a Path,
    pub cert: Option<&'a Path>,
}

/// Why a client's handshake with the backend failed, and what to do.
pub fn client_failure(e: &io::Error, side: &ClientSide<'_>) -> String {
    let addr = side.addr;
    let ca = side.ca.display();
    let cert = side
        .cert
        .map(|c| c.display().to_string())
        .unwrap_or_else(|| "(none configured)".into());
    let Some(err) = rustls_error(e) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => format!(
                "the connection to {addr} closed during the TLS handshake ({e}): the backend may have refused this client's certificate {cert} (see the backend's log), the network cut the connection, or {addr} is not a netgpu backend"
            ),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
                "the TLS handshake with {addr} timed out: the backend or the network is not answering"
            ),
            _ => format!("TLS handshake with {addr} failed: {e}"),
        };
    };
    match err {
        Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the backend at {addr} presented a certificate that is not valid for {:?} ({c}): connect by a name its certificate carries, set [tls] server_name to one, or reissue the backend's certificate with that name (`netgpu-cert backend --dns/--ip`)",
                side.server_name
            ),
            CertificateError::UnknownIssuer => format!(
                "the backend at {addr} presented a certificate not issued by a CA in {ca}: set [tls] ca to the CA that signed the backend's certificate"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "the backend at {addr} presented an expired certificate ({c}): renew it on the backend host (it is reloaded without a restart)"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the backend at {addr} presented a certificate that is not valid yet ({c}): check the clocks of both machines"
            ),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => format!(
                "the backend at {addr} presented a certificate without the serverAuth usage ({c}): it is not a backend certificate; issue one with `netgpu-cert backend`"
            ),
            CertificateError::Revoked => format!(
                "the backend at {addr} presented a revoked certificate (a CRL in [tls] crls lists it): do not use this host until it has a new certificate (`netgpu-cert backend`)"
            ),
            CertificateError::UnknownRevocationStatus => format!(
                "the revocation status of the certificate of the backend at {addr} is unknown: no CRL in [tls] crls is from its issuer; add that CA's CRL (`netgpu-cert crl --ca DIR`)"
            ),
            other => format!("the backend at {addr} presented an unacceptable certificate: {other}"),
        },
        Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => format!(
                "the backend at {addr} requires a client certificate: set [tls] cert and key (issue one with `netgpu-cert hypervisor --tenant NAME`)"
            ),
            AlertDescription::UnknownCA => format!(
                "the backend at {addr} refused this client's certificate {cert}: it was not issued by a CA the backend trusts (its client_ca); issue it from that CA"
            ),
            AlertDescription::UnsupportedCertificate => format!(
                "the backend at {addr} refused this client's certificate {cert}: it lacks the clientAuth usage (a backend certificate used as a client's?); issue one with `netgpu-cert hypervisor`"
            ),
            AlertDescription::CertificateExpired => format!(
                "the backend at {addr} refused this client's certificate {cert}: expired or not yet valid; renew it (it is reloaded without a restart) or check the clocks"
            ),
            AlertDescription::CertificateRevoked => format!(
                "the backend at {addr} refused this client's certificate {cert}: it has been revoked (a CRL in the backend's [tls] crls lists it); ask the operator for a new certificate (`netgpu-cert hypervisor`) and replace the files"
            ),
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied => format!(
                "the backend at {addr} refused this client's certificate {cert} ({alert:?}); the backend's log says why"
            ),
            AlertDescription::NoApplicationProtocol => format!(
                "{addr} does not speak the netgpu protocol over TLS (ALPN): is it a netgpu backend?"
            ),
            AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => format!(
                "{addr} and this client share no TLS version or cipher suite ({alert:?}): netgpu uses TLS 1.3 only"
            ),
            other => format!("the backend at {addr} aborted the TLS handshake: {other:?}"),
        },
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => format!(
            "{addr} does not speak TLS ({err}): is the backend in plain mode (`insecure_plain_loopback`)? Configure [tls] on the backend, or connect in plain mode on loopback"
        ),
        Error::NoApplicationProtocol => format!(
            "{addr} does not speak the netgpu protocol over TLS (ALPN): is it a netgpu backend?"
        ),
        Error::PeerIncompatible(_) => format!(
            "{addr} cannot use TLS 1.3 with this client ({err}): netgpu uses TLS 1.3 only"
        ),
        other => format!("TLS handshake with {addr} failed: {other}"),
    }
}

/// What the backend was configured with, for the message.
pub struct ServerSide<'a> {
    pub peer: &'a str,
    pub client_ca: &'a Path,
}

/// Why a client's handshake with this backend failed (for the backend's log).
pub fn server_failure(e: &io::Error, side: &ServerSide<'_>) -> String {
    let peer = side.peer;
    let ca = side.client_ca.display();
    let Some(err) = rustls_error(e) else {
        return match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                format!("client {peer} did not complete the TLS handshake in time")
            }
            _ => format!("TLS handshake with client {peer} failed: {e}"),
        };
    };
    match err {
        Error::NoCertificatesPresented => format!(
            "client {peer} presented no certificate, and client_auth is \"required\": give it a certificate (`netgpu-cert hypervisor --tenant NAME`) and set its [tls] cert and key"
        ),
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "client {peer} presented a certificate not issued by a CA in {ca}: issue its certificate from the CA in client_ca, or add its CA there"
            ),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => format!(
                "client {peer} presented a certificate without the clientAuth usage ({c}): it is not a hypervisor certificate; issue one with `netgpu-cert hypervisor`"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "client {peer} presented an expired certificate ({c}): renew it on that hypervisor"
            ),
            CertificateError::Revoked => format!(
                "client {peer} presented a revoked certificate: a CRL in [tls] crls lists it; the hypervisor needs a new certificate (`netgpu-cert hypervisor`)"
            ),
            CertificateError::UnknownRevocationStatus => format!(
                "client {peer} presented a certificate whose revocation status is unknown: no CRL in [tls] crls is from its issuer; add that CA's CRL (`netgpu-cert crl --ca DIR`, an empty one is fine)"
            ),
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => format!(
                "client {peer}'s certificate could not be checked: the CRL of its issuer in [tls] crls is past its next update ({c}); issue a fresh CRL (`netgpu-cert crl --ca DIR`)"
            ),
            other => format!("client {peer} presented an unacceptable certificate: {other}"),
        },
        Error::InvalidCertRevocationList(e) => format!(
            "client {peer}'s certificate could not be checked against [tls] crls ({e:?}): is each CRL signed by the CA in {ca} that it names as issuer?"
        ),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => format!(
            "client {peer} does not speak TLS ({err}): configure its [tls] section (plain clients are refused by this backend)"
        ),
        Error::AlertReceived(a) => format!(
            "client {peer} aborted the TLS handshake ({a:?}): it does not accept this backend's certificate; its log says why (name, CA or expiry)"
        ),
        Error::PeerIncompatible(_) => {
            format!("client {peer} cannot use TLS 1.3 ({err}): netgpu uses TLS 1.3 only")
        }
        other => format!("TLS handshake with client {peer} failed: {other}"),
    }
}
