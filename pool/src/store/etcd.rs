//! The etcd v3 store (the `etcd-client` crate over gRPC).
//!
//! `read` is one transaction with no compares and one range per read, so all of them see one
//! revision in one round trip; `txn` maps one to one onto an etcd transaction; leases and
//! watches are etcd's. Every call has a timeout, so a lost etcd gives an error, never a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;
use tokio::sync::mpsc;

use super::{
    Compare, Error, Kv, LeaseId, Op, Read, Result, Revision, Snapshot, Store, TxnOutcome, Watch,
};

/// Longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct EtcdStore {
    client: ec::Client,
    endpoints: String,
    round_trips: Arc<AtomicU64>,
}

impl EtcdStore {
    /// Connects to the cluster (`http://HOST:PORT` endpoints).
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let joined = endpoints.join(",");
        let opts = ec::ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_secs(1),
            ec::Client::connect(endpoints, Some(opts)),
        )
        .await
        .map_err(|_| Error::Etcd {
            endpoints: joined.clone(),
            message: "connection timed out (is etcd running and reachable?)".into(),
        })?
        .map_err(|e| Error::Etcd {
            endpoints: joined.clone(),
            message: e.to_string(),
        })?;
        Ok(EtcdStore {
            client,
            endpoints: joined,
            round_trips: Arc::new(AtomicU64::new(0)),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Etcd {
            endpoints: self.endpoints.clone(),
            message: e.to_string(),
        }
    }

    fn count(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, ec::Error>>,
    ) -> Result<T> {
        self.count();
        match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(self.err("request timed out")),
        }
    }
}

fn kv(k: &ec::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        lease: k.lease(),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn read(&self, reads: &[Read]) -> Result<Snapshot> {
        let ops: Vec<ec::TxnOp> = reads
            .iter()
            .map(|r| match r {
                Read::Key(k) => ec::TxnOp::get(k.as_str(), None),
                Read::Prefix(p) => {
                    ec::TxnOp::get(p.as_str(), Some(ec::GetOptions::new().with_prefix()))
                }
            })
            .collect();
        let mut c = self.client.clone();
        let resp = self.timed(c.txn(ec::Txn::new().and_then(ops))).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let results = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                ec::TxnOpResponse::Get(g) => g.kvs().iter().map(kv).collect(),
                _ => Vec::new(),
            })
            .collect();
        Ok(Snapshot { revision, results })
    }

    async fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome> {
        let cmps: Vec<ec::Compare> = compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, r) => {
                    ec::Compare::mod_revision(k.as_str(), ec::CompareOp::Equal, *r)
                }
                Compare::Absent(k) => {
                    ec::Compare::create_revision(k.as_str(), ec::CompareOp::Equal, 0)
                }
            })
            .collect();
        let tops: Vec<ec::TxnOp> = ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => ec::TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    lease.map(|l| ec::PutOptions::new().with_lease(l)),
                ),
                Op::Delete(k) => ec::TxnOp::delete(k.as_str(), None),
            })
            .collect();
        let mut c = self.client.clone();
        let resp = self
            .timed(c.txn(ec::Txn::new().when(cmps).and_then(tops)))
            .await
            .map_err(|e| match e {
                Error::Etcd { message, .. } if message.contains("requested lease not found") => {
                    Error::NoLease(
                        ops.iter()
                            .find_map(|o| match o {
                                Op::Put { lease: Some(l), .. } => Some(*l),
                                _ => None,
                            })
                            .unwrap_or(0),
                    )
                }
                e => e,
            })?;
        if resp.succeeded() {
            Ok(TxnOutcome::Committed(
                resp.header().map_or(0, |h| h.revision()),
            ))
        } else {
            Ok(TxnOutcome::Conflict)
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let mut c = self.client.clone();
        Ok(self.timed(c.lease_grant(secs, None)).await?.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut c = self.client.clone();
        match self.timed(c.lease_keep_alive(lease)).await {
            Ok(_) => Ok(()),
            Err(Error::Etcd { message, .. }) if message.contains("lease not found") => {
                Err(Error::NoLease(lease))
            }
            Err(e) => Err(e),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        let mut c = self.client.clone();
        match self.timed(c.lease_revoke(lease)).await {
            Ok(_) => Ok(()),
            Err(Error::Etcd { message, .. }) if message.contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let mut c = self.client.clone();
        let opts = ec::WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1);
        let (watcher, mut stream) = self.timed(c.watch(prefix, Some(opts))).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let _watcher = watcher; // dropping it cancels the watch
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(resp)) => {
                            if resp.canceled() || resp.compact_revision() > 0 {
                                return;
                            }
                            if let Some(rev) = resp.events().iter().filter_map(|e| e.kv()).map(|k| k.mod_revision()).max() {
                                if tx.send(rev).await.is_err() {
                                    return;
                                }
                            }
                        }
                        _ => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints)
    }
}
