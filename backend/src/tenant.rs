//! Tenants: whom a session belongs to, and how much of this backend is theirs.
//!
//! A connection's tenant comes from its client certificate (SAN URI `netgpu://tenant/<name>`,
//! see `netgpu_tls::identity`) or, without one, from its token; the token-only path exists for
//! `client_auth = "optional"` backends and for plain loopback development. The backend's
//! config lists the tenants (`[[tenants]]`) with their limits, and enforces them itself over
//! all of a tenant's sessions: a hypervisor's `Hello.limits` can make them stricter, never
//! looser. Tokens at the top level of the config belong to the tenant `default`, whose limits
//! are the backend's own.
//!
//! Memory is charged to the tenant's pool at allocation time, next to the session's quota
//! and the executor's total (`executor::budget`), so sessions of one tenant together never
//! hold more than `memory_quota`, however many there are.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytesize::ByteSize;
use netgpu_tls::TenantName;
use serde::Deserialize;
use thiserror::Error;

use crate::executor::budget::MemoryPool;

/// The tenant of top-level `tokens` and `token_files`.
pub const DEFAULT_TENANT: &str = "default";

/// One `[[tenants]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: TenantName,
    /// Device memory all the tenant's sessions on this backend may hold together (default:
    /// no tenant-wide cap beyond the executor's memory).
    #[serde(default)]
    pub memory_quota: Option<ByteSize>,
    /// Sessions open at once (default: the backend's `max_sessions`).
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// Device memory one session may hold (default: the backend's `session_memory_quota`).
    #[serde(default)]
    pub session_memory_quota: Option<ByteSize>,
    /// Longest a kernel may run, in ms (default: the backend's `kernel_time_limit_ms`).
    #[serde(default)]
    pub kernel_time_limit_ms: Option<u64>,
    /// Tokens of this tenant, inline.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Files each holding one token of this tenant (first line).
    #[serde(default)]
    pub token_files: Vec<PathBuf>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TenantConfigError {
    #[error("tenant {0} is listed twice in [[tenants]]")]
    Duplicate(String),
    #[error("the same token is configured for tenants {0} and {1}: each token names one tenant")]
    SharedToken(String, String),
    #[error("cannot read token file {path} of tenant {tenant}: {reason}")]
    TokenFile {
        tenant: String,
        path: String,
        reason: String,
    },
}

/// Why a connection was refused (the text goes to the client in the goodbye frame).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("the client certificate names tenant {0:?}, which this backend does not serve: add a [[tenants]] entry for it or use a certificate of a listed tenant")]
    UnknownTenant(String),
    #[error("authentication failed: no client certificate and no token (give the client a certificate or a tenant's token)")]
    NoCredentials,
    #[error("authentication failed: unknown token")]
    BadToken,
    #[error("the token belongs to tenant {token} but the client certificate names tenant {cert}: use the token of the certificate's tenant")]
    TokenOfAnotherTenant { cert: String, token: String },
    #[error(
        "tenant {0} requires a token in addition to its certificate: set the client's token file"
    )]
    TokenRequired(String),
    #[error("tenant {tenant} already has {max} sessions open on this backend (max_sessions): close one or raise the limit")]
    SessionLimit { tenant: String, max: u32 },
}

/// A tenant and what it holds on this backend now.
#[derive(Debug)]
pub struct Tenant {
    pub name: TenantName,
    pub config: TenantConfig,
    tokens: Vec<String>,
    /// The tenant-wide memory pool, when `memory_quota` is set.
    pub memory: Option<Arc<MemoryPool>>,
    sessions: AtomicU32,
    max_sessions: u32,
}

impl Tenant {
    /// Sessions open now.
    pub fn sessions(&self) -> u32 {
        self.sessions.load(Ordering::Acquire)
    }

    /// Device memory its sessions hold together (when it has a tenant-wide quota).
    pub fn memory_used(&self) -> Option<u64> {
        self.memory.as_ref().map(|m| m.used())
    }

    /// Takes one of the tenant's session slots; the slot is returned when the guard drops.
    pub fn admit(self: &Arc<Self>) -> Result<TenantSession, AuthError> {
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            })
            .map_err(|_| AuthError::SessionLimit {
                tenant: self.name.to_string(),
                max: self.max_sessions,
            })?;
        Ok(TenantSession {
            tenant: self.clone(),
        })
    }

    fn token_matches(&self, token: &str) -> bool {
        let mut ok = false;
        for t in &self.tokens {
            ok |= constant_time_eq(t.as_bytes(), token.as_bytes());
        }
        ok
    }
}

/// A session's claim on its tenant; dropping it frees the tenant's session slot.
#[derive(Debug)]
pub struct TenantSession {
    tenant: Arc<Tenant>,
}

impl TenantSession {
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }
}

impl Drop for TenantSession {
    fn drop(&mut self) {
        self.tenant.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every tenant this backend serves.
#[derive(Debug, Default)]
pub struct Tenants {
    by_name: HashMap<TenantName, Arc<Tenant>>,
}

/// The backend-wide defaults a tenant entry falls back to.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub max_sessions: u32,
}

impl Tenants {
    /// Builds the registry from `[[tenants]]` and the top-level tokens (tenant `default`).
    pub fn build(
        configs: &[TenantConfig],
        default_tokens: Vec<String>,
        defaults: Defaults,
    ) -> Result<Tenants, TenantConfigError> {
        let mut by_name = HashMap::new();
        let mut all = configs.to_vec();
        if !default_tokens.is_empty() {
            match all.iter_mut().find(|c| c.name.as_str() == DEFAULT_TENANT) {
                Some(d) => d.tokens.extend(default_tokens),
                None => all.push(TenantConfig {
                    // The constant is a valid name.
                    name: TenantName::new(DEFAULT_TENANT)
                        .map_err(|_| TenantConfigError::Duplicate(DEFAULT_TENANT.into()))?,
                    memory_quota: None,
                    max_sessions: None,
                    session_memory_quota: None,
                    kernel_time_limit_ms: None,
                    tokens: default_tokens,
                    token_files: Vec::new(),
                }),
            }
        }
        let mut seen_tokens: HashMap<String, String> = HashMap::new();
        for c in all {
            let mut tokens: Vec<String> =
                c.tokens.iter().filter(|t| !t.is_empty()).cloned().collect();
            for f in &c.token_files {
                let text =
                    std::fs::read_to_string(f).map_err(|e| TenantConfigError::TokenFile {
                        tenant: c.name.to_string(),
                        path: f.display().to_string(),
                        reason: e.to_string(),
                    })?;
                let t = text.lines().next().unwrap_or("").trim().to_string();
                if t.is_empty() {
                    return Err(TenantConfigError::TokenFile {
                        tenant: c.name.to_string(),
                        path: f.display().to_string(),
                        reason: "the file is empty".into(),
                    });
                }
                tokens.push(t);
            }
            for t in &tokens {
                if let Some(other) = seen_tokens.insert(t.clone(), c.name.to_string()) {
                    if other != c.name.as_str() {
                        return Err(TenantConfigError::SharedToken(other, c.name.to_string()));
                    }
                }
            }
            let tenant = Tenant {
                name: c.name.clone(),
                memory: c.memory_quota.map(|q| MemoryPool::new(q.as_u64())),
                max_sessions: c.max_sessions.unwrap_or(defaults.max_sessions),
                sessions: AtomicU32::new(0),
                tokens,
                config: c.clone(),
            };
            if by_name.insert(c.name.clone(), Arc::new(tenant)).is_some() {
                return Err(TenantConfigError::Duplicate(c.name.to_string()));
            }
        }
        Ok(Tenants { by_name })
    }

    pub fn get(&self, name: &TenantName) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.values()
    }

    /// The tenant of a connection: from its certificate's tenant (if it presented one) and
    /// its token. Every token is compared (in constant time) whatever the outcome.
    pub fn authenticate(
        &self,
        cert_tenant: Option<&TenantName>,
        token: &str,
    ) -> Result<Arc<Tenant>, AuthError> {
        let by_token = if token.is_empty() {
            None
        } else {
            let mut found = None;
            for t in self.by_name.values() {
                if t.token_matches(token) {
                    found = Some(t.clone());
                }
            }
            found
        };
        match cert_tenant {
            Some(name) => {
                let tenant = self
                    .by_name
                    .get(name)
                    .ok_or_else(|| AuthError::UnknownTenant(name.to_string()))?;
                match by_token {
                    Some(t) if Arc::ptr_eq(&t, tenant) => Ok(t),
                    Some(t) => Err(AuthError::TokenOfAnotherTenant {
                        cert: name.to_string(),
                        token: t.name.to_string(),
                    }),
                    None if !token.is_empty() => Err(AuthError::BadToken),
                    None if !tenant.tokens.is_empty() => {
                        Err(AuthError::TokenRequired(name.to_string()))
                    }
                    None => Ok(tenant.clone()),
                }
            }
            None => match by_token {
                Some(t) => Ok(t),
                None if token.is_empty() => Err(AuthError::NoCredentials),
                None => Err(AuthError::BadToken),
            },
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, tokens: &[&str]) -> TenantConfig {
        TenantConfig {
            name: TenantName::new(name).unwrap(),
            memory_quota: Some(ByteSize::mib(64)),
            max_sessions: Some(2),
            session_memory_quota: None,
            kernel_time_limit_ms: None,
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            token_files: Vec::new(),
        }
    }

    fn tenants() -> Tenants {
        Tenants::build(
            &[cfg("acme", &[]), cfg("beta", &["beta-token"])],
            vec!["legacy".into()],
            Defaults { max_sessions: 64 },
        )
        .unwrap()
    }

    fn name(s: &str) -> TenantName {
        TenantName::new(s).unwrap()
    }

    #[test]
    fn a_certificate_names_the_tenant_and_tokens_must_agree() {
        let t = tenants();
        assert_eq!(
            t.authenticate(Some(&name("acme")), "")
                .unwrap()
                .name
                .as_str(),
            "acme"
        );
        assert_eq!(
            t.authenticate(Some(&name("beta")), "beta-token")
                .unwrap()
                .name
                .as_str(),
            "beta"
        );
        assert_eq!(
            t.authenticate(Some(&name("beta")), "").unwrap_err(),
            AuthError::TokenRequired("beta".into())
        );
        assert!(matches!(
            t.authenticate(Some(&name("acme")), "beta-token"),
            Err(AuthError::TokenOfAnotherTenant { .. })
        ));
        assert_eq!(
            t.authenticate(Some(&name("acme")), "nope").unwrap_err(),
            AuthError::BadToken
        );
        let e = t.authenticate(Some(&name("gamma")), "").unwrap_err();
        assert!(
            e.to_string().contains("gamma") && e.to_string().contains("[[tenants]]"),
            "{e}"
        );
    }

    #[test]
    fn without_a_certificate_the_token_names_the_tenant() {
        let t = tenants();
        assert_eq!(
            t.authenticate(None, "legacy").unwrap().name.as_str(),
            DEFAULT_TENANT
        );
        assert_eq!(
            t.authenticate(None, "beta-token").unwrap().name.as_str(),
            "beta"
        );
        assert_eq!(
            t.authenticate(None, "").unwrap_err(),
            AuthError::NoCredentials
        );
        assert_eq!(t.authenticate(None, "x").unwrap_err(), AuthError::BadToken);
    }

    #[test]
    fn session_slots_are_counted_per_tenant_and_returned() {
        let t = tenants();
        let acme = t.get(&name("acme")).unwrap().clone();
        let a = acme.admit().unwrap();
        let b = acme.admit().unwrap();
        assert!(matches!(
            acme.admit(),
            Err(AuthError::SessionLimit { max: 2, .. })
        ));
        // Another tenant is unaffected.
        let _c = t.get(&name("beta")).unwrap().admit().unwrap();
        drop(a);
        let _d = acme.admit().unwrap();
        drop(b);
        assert_eq!(acme.sessions(), 1);
    }

    #[test]
    fn bad_tenant_lists_are_refused() {
        let d = Defaults { max_sessions: 1 };
        assert!(matches!(
            Tenants::build(&[cfg("a", &[]), cfg("a", &[])], vec![], d),
            Err(TenantConfigError::Duplicate(_))
        ));
        assert!(matches!(
            Tenants::build(&[cfg("a", &["t"]), cfg("b", &["t"])], vec![], d),
            Err(TenantConfigError::SharedToken(..))
        ));
        let toml_ok: TenantConfig =
            toml::from_str("name = \"acme\"\nmemory_quota = \"16GiB\"\nmax_sessions = 8\n")
                .unwrap();
        assert_eq!(toml_ok.memory_quota, Some(ByteSize::gib(16)));
        assert!(toml::from_str::<TenantConfig>("name = \"Acme\"\n").is_err());
        assert!(toml::from_str::<TenantConfig>("name = \"a\"\nquota = 1\n").is_err());
    }
}
