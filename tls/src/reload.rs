//! Certificate rotation without a restart: a value built from files, rebuilt when any of the
//! files changes.
//!
//! Every [`Reloading::get`] (once per new connection) compares the files' modification time,
//! size, inode and device with those of the last build; when any differs, the value is rebuilt
//! and new connections get the new one, while established connections keep the
//! configuration they were made with. A rebuild that fails (a half-written file, a key that
//! does not match the new certificate yet) keeps the previous value, logs an error naming the
//! file, and is retried as soon as the files change again. `stat` of three files per new
//! connection costs microseconds against a TLS handshake's hundreds; no timer thread, no
//! inotify, and symlink swaps (as Kubernetes does with secrets) are seen too, since the
//! metadata of the link's target is compared.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::{error, info};

use crate::pem::LoadError;

/// What identifies one version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
    ino: u64,
    dev: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        size: m.size(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

type Build<T> = Box<dyn Fn() -> Result<T, LoadError> + Send + Sync>;

struct State<T> {
    current: Arc<T>,
    built_from: Vec<Option<Stamp>>,
    /// Stamps of the last failed rebuild: not retried until the files change again.
    failed: Option<Vec<Option<Stamp>>>,
    generation: u64,
}

/// A value built from files and rebuilt when they change.
pub struct Reloading<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    build: Build<T>,
    state: Mutex<State<T>>,
}

impl<T> Reloading<T> {
    /// Builds the first value; an error here is a startup error.
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, LoadError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, LoadError> {
        let built_from = files.iter().map(stamp).collect();
        let current = Arc::new(build()?);
        Ok(Reloading {
            what,
            files,
            build: Box::new(build),
            state: Mutex::new(State {
                current,
                built_from,
                failed: None,
                generation: 1,
            }),
        })
    }

    /// The current value, rebuilt first if a file changed since the last build.
    pub fn get(&self) -> Arc<T> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now: Vec<Option<Stamp>> = self.files.iter().map(stamp).collect();
        if now != st.built_from && st.failed.as_ref() != Some(&now) {
            match (self.build)() {
                Ok(v) => {
                    st.current = Arc::new(v);
                    st.built_from = now;
                    st.failed = None;
                    st.generation += 1;
                    info!(
                        what = self.what,
                        generation = st.generation,
                        "TLS files changed: reloaded; new connections use them"
                    );
                }
                Err(e) => {
                    error!(
                        what = self.what,
                        error = %crate::chain(&e),
                        "TLS files changed but cannot be loaded; still using the previous ones"
                    );
                    st.failed = Some(now);
                }
            }
        }
        st.current.clone()
    }

    /// How many builds succeeded (1 after [`Reloading::new`]).
    pub fn generation(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn rebuilds_on_change_and_keeps_the_old_value_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        std::fs::write(&f, "1").unwrap();
        let builds = Arc::new(AtomicU32::new(0));
        let (ff, b) = (f.clone(), builds.clone());
        let r = Reloading::new("test", vec![f.clone()], move || {
            b.fetch_add(1, Ordering::SeqCst);
            let s = std::fs::read_to_string(&ff).map_err(|source| LoadError::Read {
                what: "value",
                path: ff.clone(),
                source,
            })?;
            s.trim().parse::<u32>().map_err(|e| LoadError::Pem {
                what: "value",
                path: ff.clone(),
                reason: e.to_string(),
            })
        })
        .unwrap();
        assert_eq!(*r.get(), 1);
        assert_eq!(*r.get(), 1);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "unchanged files are not rebuilt"
        );
        std::fs::write(&f, "22").unwrap();
        assert_eq!(*r.get(), 22);
        assert_eq!(r.generation(), 2);
        std::fs::write(&f, "garbage").unwrap();
        assert_eq!(*r.get(), 22, "a broken file keeps the previous value");
        assert_eq!(*r.get(), 22);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            3,
            "a failed build is not retried"
        );
        // Rename into place (what operators should do): a new inode.
        let tmp = dir.path().join("v.new");
        std::fs::write(&tmp, "333").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(*r.get(), 333);
        assert_eq!(r.generation(), 3);
    }
}
