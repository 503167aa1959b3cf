//! What this crate's unit tests share: a throwaway PKI and checkable data.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::{ClientTls, ServerTls};

/// Every handshake's deadline in the tests.
pub(crate) const T: Duration = Duration::from_secs(10);

/// A loopback server and a client of tenant `acme`, their files in `dir`.
pub(crate) fn pki(dir: &std::path::Path) -> (Arc<ServerTls>, Arc<ClientTls>) {
    let (s, c) = crate::issue::loopback_pki(dir, "acme").unwrap();
    (Arc::new(s), Arc::new(c))
}

/// `len` bytes no two seeds share, with no short period (a reordered or dropped piece shows).
pub(crate) fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
        .collect()
}
