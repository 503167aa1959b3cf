//! The store the pool's records live in: one trait, two implementations.
//!
//! - [`etcd::EtcdStore`]: etcd v3 (the `etcd-client` crate), for real deployments. Consistency
//!   comes from etcd itself: multi-key transactions guarded by revision compares, leases for
//!   liveness, watches. Nothing here implements consensus.
//! - [`file::FileStore`]: one JSON file on one machine (one hypervisor with its GPUs), written
//!   with write-to-temp + fsync + rename under an exclusive `flock`, carrying the same
//!   revisions and leases, so the same code and the same tests run on both.
//!
//! The model is etcd's: every write bumps a global revision; each key carries the revision
//! that created it and the one that last changed it; a transaction applies all its operations
//! only if all its compares hold.

pub mod etcd;
pub mod file;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum Error {
    #[error("etcd at {endpoints}: {message}")]
    Etcd { endpoints: String, message: String },
    #[error("file store {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file store {path} is corrupt: {message} (restore it from a backup, or move it away to start empty)")]
    Corrupt { path: String, message: String },
    #[error("invalid store URL {0:?}: use etcd://HOST:PORT[,HOST:PORT...] or file:///PATH/TO/DIR")]
    Url(String),
    #[error("lease {0} does not exist (it expired or was revoked)")]
    NoLease(i64),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A store revision; 0 means "never".
pub type Revision = i64;
pub type LeaseId = i64;

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// 0 without a lease.
    pub lease: LeaseId,
}

/// What one read fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Key(String),
    Prefix(String),
}

/// The answer to [`Store::read`]: one list per read, all at one revision.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub revision: Revision,
    pub results: Vec<Vec<Kv>>,
}

/// A transaction condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and was last changed at this revision.
    ModRevision(String, Revision),
    /// The key does not exist.
    Absent(String),
}

/// A transaction operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete(String),
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
            lease: None,
        }
    }
}

/// Whether a transaction applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed(Revision),
    /// A compare failed; nothing was written.
    Conflict,
}

impl TxnOutcome {
    pub fn committed(self) -> bool {
        matches!(self, TxnOutcome::Committed(_))
    }
}

/// A change notification: something under the watched prefix changed at this revision.
/// Watchers re-read what they need (the notification carries no values); a closed channel means
/// the watch was lost (store unreachable) and the watcher should re-read and watch again.
pub type Watch = mpsc::Receiver<Revision>;

#[async_trait]
pub trait Store: Send + Sync {
    /// Several reads at one revision, in one round trip.
    async fn read(&self, reads: &[Read]) -> Result<Snapshot>;
    /// Applies `ops` if every compare holds, in one round trip.
    async fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome>;
    /// A lease that expires `ttl` after its last renewal; keys put with it go with it.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Renews a lease; [`Error::NoLease`] when it already expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;
    /// Ends a lease now, deleting its keys.
    async fn revoke(&self, lease: LeaseId) -> Result<()>;
    /// Notifies changes under `prefix` after revision `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch>;
    /// Round trips made so far (for the benchmark and the tests).
    fn round_trips(&self) -> u64;
    /// Where the store is, for messages.
    fn describe(&self) -> String;

    /// One key.
    async fn get(&self, key: &str) -> Result<Option<Kv>> {
        let mut s = self.read(&[Read::Key(key.to_string())]).await?;
        Ok(s.results.pop().and_then(|mut v| v.pop()))
    }

    /// Every key under a prefix, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<Kv>> {
        let mut s = self.read(&[Read::Prefix(prefix.to_string())]).await?;
        Ok(s.results.pop().unwrap_or_default())
    }
}

/// Opens a store by URL: `etcd://HOST:PORT[,HOST:PORT...]` (also `http://`) or
/// `file:///DIR` (a plain path works too).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    match parse_url(url)? {
        StoreUrl::Etcd(endpoints) => Ok(Arc::new(etcd::EtcdStore::connect(&endpoints).await?)),
        StoreUrl::File(dir) => Ok(Arc::new(file::FileStore::open(&dir)?)),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Etcd(Vec<String>),
    File(std::path::PathBuf),
}

pub fn parse_url(url: &str) -> Result<StoreUrl> {
    let bad = || Error::Url(url.to_string());
    if let Some(rest) = url
        .strip_prefix("etcd://")
        .or_else(|| url.strip_prefix("etcd+http://"))
    {
        let eps: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| format!("http://{e}"))
            .collect();
        if eps.is_empty() {
            return Err(bad());
        }
        return Ok(StoreUrl::Etcd(eps));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(StoreUrl::Etcd(
            url.split(',')
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
        ));
    }
    if let Some(p) = url.strip_prefix("file://") {
        if !p.starts_with('/') {
            return Err(bad());
        }
        return Ok(StoreUrl::File(p.into()));
    }
    if url.starts_with('/') {
        return Ok(StoreUrl::File(url.into()));
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_etcd_endpoints_or_a_directory() {
        assert_eq!(
            parse_url("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap(),
            StoreUrl::Etcd(vec![
                "http://10.0.0.1:2379".into(),
                "http://10.0.0.2:2379".into()
            ])
        );
        assert_eq!(
            parse_url("http://127.0.0.1:2379").unwrap(),
            StoreUrl::Etcd(vec!["http://127.0.0.1:2379".into()])
        );
        assert_eq!(
            parse_url("file:///var/lib/netgpu/pool").unwrap(),
            StoreUrl::File("/var/lib/netgpu/pool".into())
        );
        assert!(parse_url("file://relative").is_err());
        assert!(parse_url("etcd://").is_err());
        assert!(parse_url("redis://x").is_err());
    }
}
