//! A real etcd on loopback for tests and benchmarks: `etcd` (Debian's `etcd-server`;
//! `scripts/test` installs it) started on free 127.0.0.1 ports with a temporary data directory,
//! killed and removed on drop. `NETGPU_ETCD` names another binary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    /// `etcd://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary: `$NETGPU_ETCD`, else `etcd` on PATH, else `/usr/bin/etcd`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NETGPU_ETCD") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .chain(std::iter::once(PathBuf::from("/usr/bin/etcd")))
        .find(|p| p.is_file())
}

impl Etcd {
    /// Starts etcd and waits until it answers (up to 20 s).
    pub fn start() -> std::io::Result<Etcd> {
        let bin = etcd_binary().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "etcd not found: install Debian's etcd-server (`apt-get install etcd-server`; scripts/test does) or set NETGPU_ETCD",
            )
        })?;
        let dir = std::env::temp_dir().join(format!(
            "netgpu-etcd-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let peer = free_port()?;
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new(bin)
            .arg("--name=netgpu-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=netgpu-test={peer_url}"))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--unsafe-no-fsync")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut e = Etcd {
            child,
            dir,
            url: format!("etcd://127.0.0.1:{port}"),
            port,
        };
        e.wait_ready()?;
        Ok(e)
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "etcd exited ({status}): {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                )));
            }
            // etcd answers /health once it has a leader.
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                if body.contains("\"health\":\"true\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("etcd did not become healthy in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops etcd now (SIGKILL): the store becomes unreachable.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh temporary directory for a file store, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!(
            "netgpu-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
