//! The embedded store for one machine: the whole key space in `DIR/state.json`.
//!
//! Every operation takes an exclusive `flock` on `DIR/lock`, reads the file, drops keys whose
//! lease expired, applies itself and, if it changed anything, writes `state.json.tmp`, fsyncs
//! it, renames it over `state.json` and fsyncs the directory. A crash leaves the old or the new
//! state, never a mix. Several processes (backends, vdevs, `netgpuctl`) on one machine share
//! it safely. Revisions, compares and leases behave as etcd's do; lease expiry uses the wall
//! clock, which all processes of one machine share. Watches poll the file (every 100 ms).
//!
//! Meant for one hypervisor with a few GPU hosts: every operation reads and writes the whole
//! file. Use etcd beyond that.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Compare, Error, Kv, LeaseId, Op, Read, Result, Revision, Snapshot, Store, TxnOutcome, Watch,
};

const STATE: &str = "state.json";
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    revision: Revision,
    next_lease: LeaseId,
    kvs: BTreeMap<String, Entry>,
    leases: BTreeMap<LeaseId, LeaseState>,
    /// Set by changes that bump no revision (a lease renewal); never saved.
    #[serde(skip)]
    dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Values are UTF-8 (every record is JSON).
    value: String,
    create_revision: Revision,
    mod_revision: Revision,
    #[serde(default)]
    lease: LeaseId,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct LeaseState {
    ttl_ms: u64,
    expires_ms: u64,
}

impl State {
    /// Drops expired leases and their keys; true if anything changed.
    fn expire(&mut self, now_ms: u64) -> bool {
        let dead: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return false;
        }
        for id in &dead {
            self.drop_lease(*id);
        }
        true
    }

    fn drop_lease(&mut self, id: LeaseId) {
        self.leases.remove(&id);
        let before = self.kvs.len();
        self.kvs.retain(|_, e| e.lease != id);
        if self.kvs.len() != before {
            self.revision += 1;
        }
    }

    fn kv(&self, key: &str, e: &Entry) -> Kv {
        Kv {
            key: key.to_string(),
            value: e.value.clone().into_bytes(),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            lease: e.lease,
        }
    }

    fn read(&self, r: &Read) -> Vec<Kv> {
        match r {
            Read::Key(k) => self.kvs.get(k).map(|e| self.kv(k, e)).into_iter().collect(),
            Read::Prefix(p) => self
                .kvs
                .range(p.clone()..)
                .take_while(|(k, _)| k.starts_with(p.as_str()))
                .map(|(k, e)| self.kv(k, e))
                .collect(),
        }
    }

    /// A cheap summary of a prefix: changes when any key under it is put or deleted.
    fn fingerprint(&self, prefix: &str) -> (usize, Revision) {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .fold((0, 0), |(n, r), (_, e)| (n + 1, r.max(e.mod_revision)))
    }
}

/// The file store. Cheap to clone (shared inner state).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    round_trips: AtomicU64,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<FileStore> {
        std::fs::create_dir_all(dir).map_err(|source| Error::File {
            path: dir.display().to_string(),
            source,
        })?;
        let s = FileStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                round_trips: AtomicU64::new(0),
            }),
        };
        // Fail now, not at the first operation, on an unreadable or corrupt file.
        s.inner.with_state(|_| ())?;
        Ok(s)
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> R + Send + 'static,
    ) -> Result<R> {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || inner.with_state(f)).await {
            Ok(r) => r,
            Err(e) => Err(Error::File {
                path: self.inner.dir.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

impl Inner {
    fn io(&self, source: std::io::Error) -> Error {
        Error::File {
            path: self.dir.display().to_string(),
            source,
        }
    }

    /// Runs `f` on the state under the lock, saving it if `f` (or lease expiry) changed the
    /// revision.
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.dir.join("lock"))
            .map_err(|e| self.io(e))?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| self.io(std::io::Error::from(e)))?;
        let path = self.dir.join(STATE);
        let mut state: State = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(self.io(e)),
        };
        let before = (state.revision, state.next_lease, state.leases.len());
        let expired = state.expire(crate::model::now_ms());
        let r = f(&mut state);
        let after = (state.revision, state.next_lease, state.leases.len());
        if expired || state.dirty || before != after {
            self.save(&state)?;
        }
        Ok(r)
    }

    fn save(&self, state: &State) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| self.io(std::io::Error::other(e)))?;
        let mut f = File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(&bytes).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(STATE)).map_err(|e| self.io(e))?;
        let dir = File::open(&self.dir).map_err(|e| self.io(e))?;
        dir.sync_all().map_err(|e| self.io(e))?;
        Ok(())
    }
}

#[async_trait]
impl Store for FileStore {
    async fn read(&self, reads: &[Read]) -> Result<Snapshot> {
        let reads = reads.to_vec();
        self.blocking(move |s| Snapshot {
            revision: s.revision,
            results: reads.iter().map(|r| s.read(r)).collect(),
        })
        .await
    }

    async fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome> {
        let mut values = Vec::with_capacity(ops.len());
        for op in ops {
            if let Op::Put { key, value, .. } = op {
                values.push(
                    String::from_utf8(value.clone()).map_err(|_| Error::Corrupt {
                        path: self.inner.dir.display().to_string(),
                        message: format!("refusing a non-UTF-8 value for {key}"),
                    })?,
                );
            }
        }
        let compares = compares.to_vec();
        let ops = ops.to_vec();
        self.blocking(move |s| {
            let holds = compares.iter().all(|c| match c {
                Compare::ModRevision(k, r) => s.kvs.get(k).is_some_and(|e| e.mod_revision == *r),
                Compare::Absent(k) => !s.kvs.contains_key(k),
            });
            let leases_ok = ops.iter().all(|op| match op {
                Op::Put { lease: Some(l), .. } => s.leases.contains_key(l),
                _ => true,
            });
            if !holds {
                return Ok(TxnOutcome::Conflict);
            }
            if !leases_ok {
                return Err(ops
                    .iter()
                    .find_map(|op| match op {
                        Op::Put { lease: Some(l), .. } if !s.leases.contains_key(l) => {
                            Some(Error::NoLease(*l))
                        }
                        _ => None,
                    })
                    .unwrap_or(Error::NoLease(0)));
            }
            let rev = s.revision + 1;
            let mut values = values.into_iter();
            let mut changed = false;
            for op in ops {
                match op {
                    Op::Put { key, lease, .. } => {
                        let value = values.next().unwrap_or_default();
                        let create = s.kvs.get(&key).map_or(rev, |e| e.create_revision);
                        s.kvs.insert(
                            key,
                            Entry {
                                value,
                                create_revision: create,
                                mod_revision: rev,
                                lease: lease.unwrap_or(0),
                            },
                        );
                        changed = true;
                    }
                    Op::Delete(key) => changed |= s.kvs.remove(&key).is_some(),
                }
            }
            if changed {
                s.revision = rev;
            }
            Ok(TxnOutcome::Committed(s.revision))
        })
        .await?
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.blocking(move |s| {
            s.next_lease += 1;
            let id = s.next_lease;
            s.leases.insert(
                id,
                LeaseState {
                    ttl_ms,
                    expires_ms: crate::model::now_ms().saturating_add(ttl_ms),
                },
            );
            id
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |s| match s.leases.get_mut(&lease) {
            Some(l) => {
                l.expires_ms = crate::model::now_ms().saturating_add(l.ttl_ms);
                s.dirty = true;
                Ok(())
            }
            None => Err(Error::NoLease(lease)),
        })
        .await?
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |s| s.drop_lease(lease)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let (tx, rx) = mpsc::channel(16);
        let store = self.clone();
        let prefix = prefix.to_string();
        let p2 = prefix.clone();
        let mut last = self.blocking(move |s| s.fingerprint(&p2)).await?;
        // Changes between `after` and now are reported at once.
        if last.1 > after {
            let _ = tx.try_send(last.1);
        }
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let p = prefix.clone();
                let inner = Arc::clone(&store.inner);
                let now = match tokio::task::spawn_blocking(move || {
                    inner.with_state(|s| (s.fingerprint(&p), s.revision))
                })
                .await
                {
                    Ok(Ok(v)) => v,
                    _ => return, // dropping tx tells the watcher the watch is lost
                };
                if now.0 != last {
                    last = now.0;
                    if tx.send(now.1).await.is_err() {
                        return;
                    }
                } else if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.inner.dir.display())
    }
}
