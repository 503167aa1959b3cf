//! Command line and TOML configuration of `netgpu-vdev`.
//!
//! Every option can be given on the command line or in the TOML file named by `--config`;
//! the command line wins. `--socket-path=` and `--fd=` follow the vhost-user/vfio-user
//! backend program convention, so a management layer can start vdev like any other
//! backend program.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use thiserror::Error;

use crate::config_space::Ids;
use crate::device::DeviceConfig;
use crate::server::OnDisconnect;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("invalid configuration file {0}")]
    Parse(PathBuf, #[source] toml::de::Error),
    #[error("one of --socket, --socket-path or --fd is required")]
    NoSocket,
    #[error("--backend is required (or --vgpu NAME --store URL to take it from the pool)")]
    NoBackend,
    #[error("--vgpu needs --store URL (or `store` in the config): where the pool's records are")]
    NoStore,
    #[error("invalid --metrics-listen address {0:?} (e.g. 127.0.0.1:9501)")]
    MetricsAddr(String),
    #[error("the token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("invalid size {0:?} (e.g. 16GiB, 512MiB, 1073741824)")]
    Size(String),
    #[error("invalid PCI id {0:?} (e.g. 0x10de)")]
    Id(String),
    #[error("cannot resolve the backend address {0:?} (HOST:PORT)")]
    Resolve(String, #[source] std::io::Error),
    #[error("cannot load the TLS files of [tls] / --tls-*")]
    Tls(#[source] netgpu_tls::pem::LoadError),
    #[error("{0}")]
    Policy(#[from] netgpu_tls::policy::PolicyError),
    #[error("--tls-cert/--tls-key/--tls-server-name need --tls-ca (or [tls] ca in the config)")]
    TlsWithoutCa,
}

pub type Result<T> = std::result::Result<T, Error>;

/// netgpu-vdev: presents a remote netgpu GPU to a VM as a vfio-user PCI device.
#[derive(Debug, Default, Parser)]
#[command(name = "netgpu-vdev", version, about)]
pub struct Args {
    /// UNIX socket to listen on (QEMU `vfio-user-pci` socket, cloud-hypervisor `--user-device`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Same as --socket (backend program convention).
    #[arg(long = "socket-path", value_name = "PATH", conflicts_with = "socket")]
    pub socket_path: Option<PathBuf>,
    /// Inherited socket fd: listening (accepted on) or connected (served once).
    #[arg(long, value_name = "FD", conflicts_with_all = ["socket", "socket_path"])]
    pub fd: Option<i32>,
    /// Backend address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub backend: Option<String>,
    /// File holding the backend authentication token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Device memory quota reported to the guest (e.g. 16GiB).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Device name used in logs and sent to the backend.
    #[arg(long)]
    pub name: Option<String>,
    /// PCI vendor id.
    #[arg(long)]
    pub vendor_id: Option<String>,
    /// PCI device id.
    #[arg(long)]
    pub device_id: Option<String>,
    /// PCI subsystem vendor id.
    #[arg(long)]
    pub subsystem_vendor_id: Option<String>,
    /// PCI subsystem id.
    #[arg(long)]
    pub subsystem_id: Option<String>,
    /// What to do when the VMM disconnects.
    #[arg(long, value_enum)]
    pub on_disconnect: Option<OnDisconnect>,
    /// Microseconds a busy queue keeps polling the fast doorbell page.
    #[arg(long)]
    pub poll_us: Option<u64>,
    /// After start-up (socket bound, token read), drop to this user (no supplementary
    /// groups, its group; root cannot be regained). The socket file is given to it.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Install the seccomp filter (the default).
    #[arg(long, overrides_with = "no_seccomp")]
    pub seccomp: bool,
    /// Run without the seccomp filter (to debug a system call the filter refuses).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Log calls the filter would refuse to the kernel audit log instead of exiting
    /// (diagnosis).
    #[arg(long, hide = true)]
    pub seccomp_log: bool,
    /// Serve this vGPU from the pool: backend, token and memory quota come from its record,
    /// and new sessions follow its placement (moves, failover). Needs --store.
    #[arg(long, value_name = "NAME")]
    pub vgpu: Option<String>,
    /// The pool's store: etcd://HOST:PORT[,HOST:PORT...] or file:///DIR.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Serve Prometheus metrics on this address (one port per vdev instance).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// CA certificate(s) (PEM) that issued the backends' certificates: enables TLS (the
    /// `[tls] ca` line).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This hypervisor's client certificate (PEM, leaf first; `netgpu-cert hypervisor`).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The name the backend's certificate must carry (default: the host of --backend as
    /// given, before it is resolved).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// A certificate revocation list (PEM or DER) of the backends' CA: a backend certificate
    /// it lists is refused (repeatable; the `[tls] crls` list; replaces the file's).
    #[arg(long, value_name = "FILE")]
    pub tls_crl: Vec<PathBuf>,
    /// Plain TCP to a loopback backend, for development on one machine (also the default
    /// without TLS; never allowed off loopback).
    #[arg(long)]
    pub insecure_plain_loopback: bool,
}

/// The TOML file: the same options as the command line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub socket: Option<PathBuf>,
    pub backend: Option<String>,
    pub token_file: Option<PathBuf>,
    pub memory: Option<String>,
    pub name: Option<String>,
    pub vendor_id: Option<String>,
    pub device_id: Option<String>,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_id: Option<String>,
    pub on_disconnect: Option<OnDisconnect>,
    pub poll_us: Option<u64>,
    pub user: Option<String>,
    pub seccomp: Option<bool>,
    pub vgpu: Option<String>,
    pub store: Option<String>,
    pub metrics_listen: Option<String>,
    /// TLS to the backend (`netgpu-tls`'s client section: ca, cert, key, server_name).
    pub tls: Option<netgpu_tls::ClientTlsConfig>,
    pub insecure_plain_loopback: Option<bool>,
}

/// `--vgpu` with its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub vgpu: String,
    pub store: String,
}

/// Where the vfio-user socket comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    Path(PathBuf),
    Fd(i32),
}

/// Whether and how the seccomp filter is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seccomp {
    Enforce,
    /// Log what it would refuse (diagnosis).
    Log,
    Off,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: SocketSpec,
    pub device: DeviceConfig,
    pub on_disconnect: OnDisconnect,
    /// Drop to this user after start-up.
    pub user: Option<String>,
    pub seccomp: Seccomp,
    /// Set with `--vgpu`: main resolves it before the device starts.
    pub pool: Option<PoolSpec>,
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| Error::Size(s.into()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        _ => return Err(Error::Size(s.into())),
    };
    n.checked_mul(mult).ok_or(Error::Size(s.into()))
}

/// Resolves `HOST:PORT` once, at start-up (vdev then runs under a seccomp filter that has no
/// room for name lookups): the first address the resolver gives, as `IP:PORT`.
pub fn resolve_backend(addr: &str) -> Result<String> {
    use std::net::ToSocketAddrs;
    let mut addrs = addr
        .to_socket_addrs()
        .map_err(|e| Error::Resolve(addr.into(), e))?;
    addrs.next().map(|a| a.to_string()).ok_or_else(|| {
        Error::Resolve(
            addr.into(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        )
    })
}

/// The `--tls-*` flags.
struct TlsArgs {
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_server_name: Option<String>,
    tls_crl: Vec<PathBuf>,
}

/// The TLS client settings from the file's `[tls]` and the `--tls-*` flags (flags win), with
/// the server name defaulting to the host of `backend` as the operator wrote it (vdev
/// resolves the address at start-up, and an IP address is not what the certificate names).
fn tls_config(
    args: &TlsArgs,
    file: Option<netgpu_tls::ClientTlsConfig>,
    backend: &str,
) -> Result<Option<netgpu_tls::ClientTlsConfig>> {
    let any_flag = args.tls_ca.is_some()
        || args.tls_cert.is_some()
        || args.tls_key.is_some()
        || args.tls_server_name.is_some()
        || !args.tls_crl.is_empty();
    let mut c = match (file, any_flag) {
        (None, false) => return Ok(None),
        (Some(c), _) => c,
        (None, true) => netgpu_tls::ClientTlsConfig::default(),
    };
    if let Some(ca) = &args.tls_ca {
        c.ca = ca.clone();
    }
    if args.tls_cert.is_some() {
        c.cert = args.tls_cert.clone();
    }
    if args.tls_key.is_some() {
        c.key = args.tls_key.clone();
    }
    if args.tls_server_name.is_some() {
        c.server_name = args.tls_server_name.clone();
    }
    if !args.tls_crl.is_empty() {
        c.crls = args.tls_crl.clone();
    }
    if c.ca.as_os_str().is_empty() {
        return Err(Error::TlsWithoutCa);
    }
    // With --vgpu the backend is the placement's, known at connect time (empty here).
    if c.server_name.is_none() && !backend.is_empty() {
        c.server_name = Some(netgpu_tls::policy::host_part(backend).to_string());
    }
    Ok(Some(c))
}

/// Refuses plain TCP to a backend that is not on loopback (`backend`: resolved `IP:PORT`).
pub fn check_transport(device: &DeviceConfig) -> Result<()> {
    if device.transport.tls.is_none() && !crate::session::plain_allowed(&device.backend) {
        return Err(Error::Policy(
            netgpu_tls::policy::PolicyError::NotLoopback {
                addr: device.backend.clone(),
            },
        ));
    }
    Ok(())
}

fn parse_id(s: &str) -> Result<u16> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| Error::Id(s.into()))
}

fn read_token(path: &Path) -> Result<String> {
    let t = std::fs::read_to_string(path).map_err(|e| Error::Read(path.into(), e))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(Error::EmptyToken(path.into()));
    }
    Ok(t)
}

impl Config {
    pub fn resolve(args: Args) -> Result<Config> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Read(p.clone(), e))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| Error::Parse(p.clone(), e))?
            }
            None => FileConfig::default(),
        };
        let socket = match (args.fd, args.socket.or(args.socket_path).or(file.socket)) {
            (Some(fd), _) => SocketSpec::Fd(fd),
            (None, Some(p)) => SocketSpec::Path(p),
            (None, None) => return Err(Error::NoSocket),
        };
        let pool = match args.vgpu.or(file.vgpu) {
            Some(vgpu) => Some(PoolSpec {
                vgpu,
                store: args.store.or(file.store).ok_or(Error::NoStore)?,
            }),
            None => None,
        };
        let metrics_listen = match args.metrics_listen.or(file.metrics_listen) {
            Some(a) => Some(a.parse().map_err(|_| Error::MetricsAddr(a))?),
            None => None,
        };
        // From the pool, the backend is the vGPU's placement (resolved in main).
        let backend = match (args.backend.or(file.backend), &pool) {
            (Some(b), _) => b,
            (None, Some(_)) => String::new(),
            (None, None) => return Err(Error::NoBackend),
        };
        let flags = TlsArgs {
            tls_ca: args.tls_ca,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            tls_server_name: args.tls_server_name,
            tls_crl: args.tls_crl,
        };
        let tls = tls_config(&flags, file.tls, &backend)?;
        let plain = args.insecure_plain_loopback || file.insecure_plain_loopback == Some(true);
        let config_name = args
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the command line".into());
        // Certificates are read now: under the seccomp filter vdev opens no files later.
        let tls = match tls {
            Some(t) => Some(std::sync::Arc::new(
                netgpu_tls::ClientTls::load(t).map_err(Error::Tls)?,
            )),
            None => None,
        };
        if tls.is_some() && plain {
            return Err(Error::Policy(netgpu_tls::policy::PolicyError::Both {
                config: config_name,
            }));
        }
        let token = match args.token_file.or(file.token_file) {
            Some(p) => read_token(&p)?,
            None => String::new(),
        };
        let memory_quota = match args.memory.or(file.memory) {
            Some(s) => parse_size(&s)?,
            None => 0,
        };
        let d = Ids::default();
        let id = |a: Option<String>, f: Option<String>, def: u16| -> Result<u16> {
            match a.or(f) {
                Some(s) => parse_id(&s),
                None => Ok(def),
            }
        };
        let ids = Ids {
            vendor: id(args.vendor_id, file.vendor_id, d.vendor)?,
            device: id(args.device_id, file.device_id, d.device)?,
            subsystem_vendor: id(
                args.subsystem_vendor_id,
                file.subsystem_vendor_id,
                d.subsystem_vendor,
            )?,
            subsystem: id(args.subsystem_id, file.subsystem_id, d.subsystem)?,
        };
        let defaults = DeviceConfig::default();
        let seccomp = if args.seccomp_log {
            Seccomp::Log
        } else if args.no_seccomp || (!args.seccomp && file.seccomp == Some(false)) {
            Seccomp::Off
        } else {
            Seccomp::Enforce
        };
        Ok(Config {
            user: args.user.or(file.user),
            seccomp,
            socket,
            device: DeviceConfig {
                name: args
                    .name
                    .or(file.name)
                    .or_else(|| pool.as_ref().map(|p| p.vgpu.clone()))
                    .unwrap_or(defaults.name),
                ids,
                backend,
                token,
                memory_quota,
                poll: args
                    .poll_us
                    .or(file.poll_us)
                    .map(Duration::from_micros)
                    .unwrap_or(defaults.poll),
                pool: None,
                transport: crate::session::Transport {
                    tls,
                    ..defaults.transport
                },
            },
            on_disconnect: args
                .on_disconnect
                .or(file.on_disconnect)
                .unwrap_or_default(),
            pool,
            metrics_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgpu_mode_needs_a_store_and_no_backend() {
        let a = Args::try_parse_from([
            "netgpu-vdev",
            "--socket",
            "/tmp/v.sock",
            "--vgpu",
            "vm1",
            "--store",
            "etcd://127.0.0.1:2379",
            "--metrics-listen",
            "127.0.0.1:9501",
        ])
        .unwrap();
        let c = Config::resolve(a).unwrap();
        assert_eq!(
            c.pool,
            Some(PoolSpec {
                vgpu: "vm1".into(),
                store: "etcd://127.0.0.1:2379".into()
            })
        );
        assert_eq!(c.device.name, "vm1");
        assert_eq!(c.metrics_listen.map(|a| a.port()), Some(9501));
        let a = Args::try_parse_from(["netgpu-vdev", "--socket", "/tmp/v.sock", "--vgpu", "vm1"])
            .unwrap();
        assert!(matches!(Config::resolve(a), Err(Error::NoStore)));
        let a = Args::try_parse_from(["netgpu-vdev", "--socket", "/tmp/v.sock"]).unwrap();
        assert!(Config::resolve(a)
            .unwrap_err()
            .to_string()
            .contains("--vgpu"));
    }

    #[test]
    fn the_packaged_vdev_config_parses() {
        let f: FileConfig =
            toml::from_str(include_str!("../../packaging/etc/netgpu/vdev.toml")).unwrap();
        assert!(f.store.is_some());
    }

    #[test]
    fn backend_addresses_resolve_to_ip_and_port() {
        assert_eq!(resolve_backend("127.0.0.1:7070").unwrap(), "127.0.0.1:7070");
        assert_eq!(resolve_backend("[::1]:7").unwrap(), "[::1]:7");
        assert!(resolve_backend("localhost:7070").is_ok());
        assert!(matches!(
            resolve_backend("nonsense"),
            Err(Error::Resolve(..))
        ));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
    }

    #[test]
    fn backend_program_convention_is_accepted() {
        let a = Args::try_parse_from([
            "netgpu-vdev",
            "--socket-path=/tmp/x.sock",
            "--backend",
            "h:1",
        ])
        .unwrap();
        let c = Config::resolve(a).unwrap();
        assert_eq!(c.socket, SocketSpec::Path("/tmp/x.sock".into()));
        let a = Args::try_parse_from(["netgpu-vdev", "--fd=3", "--backend", "h:1"]).unwrap();
        assert_eq!(Config::resolve(a).unwrap().socket, SocketSpec::Fd(3));
        let a = Args::try_parse_from([
            "netgpu-vdev",
            "--fd=3",
            "--backend",
            "h:1",
            "--no-seccomp",
            "--user",
            "netgpu",
        ])
        .unwrap();
        let c = Config::resolve(a).unwrap();
        assert_eq!(
            (c.seccomp, c.user.as_deref()),
            (Seccomp::Off, Some("netgpu"))
        );
        assert!(Args::try_parse_from(["netgpu-vdev", "--fd=3", "--socket", "/x"]).is_err());
    }

    #[test]
    fn toml_file_fills_in_and_command_line_wins() {
        let dir = std::env::temp_dir().join(format!("vdev-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tok = dir.join("token");
        std::fs::write(&tok, "secret\n").unwrap();
        let cfg = dir.join("vdev.toml");
        std::fs::write(
            &cfg,
            format!(
                "socket = \"/run/a.sock\"\nbackend = \"gpu:7070\"\ntoken-file = \"{}\"\nmemory = \"2GiB\"\nvendor-id = \"0x10de\"\non-disconnect = \"exit\"\n",
                tok.display()
            ),
        )
        .unwrap();
        let a = Args::try_parse_from([
            "netgpu-vdev",
            "--config",
            cfg.to_str().unwrap(),
            "--backend",
            "other:1",
        ])
        .unwrap();
        let c = Config::resolve(a).unwrap();
        assert_eq!(c.socket, SocketSpec::Path("/run/a.sock".into()));
        assert_eq!(c.device.backend, "other:1");
        assert_eq!(c.device.token, "secret");
        assert_eq!(c.device.memory_quota, 2 << 30);
        assert_eq!(c.device.ids.vendor, 0x10de);
        assert_eq!(c.on_disconnect, OnDisconnect::Exit);
        assert_eq!(c.seccomp, Seccomp::Enforce, "the filter is on by default");
        std::fs::write(&cfg, "bogus = 1\n").unwrap();
        let a = Args::try_parse_from(["netgpu-vdev", "--config", cfg.to_str().unwrap()]).unwrap();
        assert!(matches!(Config::resolve(a), Err(Error::Parse(..))));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tls_section_and_flags_choose_the_transport() {
        let dir = std::env::temp_dir().join(format!("vdev-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = netgpu_tls::issue::new_ca("vdev-cfg", 1).unwrap();
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        let cfg = dir.join("vdev.toml");
        std::fs::write(
            &cfg,
            format!(
                "socket = \"/run/a.sock\"\nbackend = \"gpu1.dc:7070\"\n[tls]\nca = \"{}\"\n",
                ca_file.display()
            ),
        )
        .unwrap();
        let args = |extra: &[&str]| {
            let mut a = vec!["netgpu-vdev", "--config", cfg.to_str().unwrap()];
            a.extend_from_slice(extra);
            Args::try_parse_from(a).unwrap()
        };
        // The server name defaults to the host as written, not the address it resolves to.
        let c = Config::resolve(args(&[])).unwrap();
        let tls = c.device.transport.tls.expect("[tls] enables TLS");
        assert_eq!(tls.config().server_name.as_deref(), Some("gpu1.dc"));
        let c = Config::resolve(args(&["--tls-server-name", "gpu1.example"])).unwrap();
        assert_eq!(
            c.device
                .transport
                .tls
                .unwrap()
                .config()
                .server_name
                .as_deref(),
            Some("gpu1.example")
        );
        // --tls-crl: read at start (a file that is not a CRL fails there, naming it).
        let crl = dir.join("ca.crl");
        let issuer = netgpu_tls::issue::Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        std::fs::write(&crl, issuer.crl(&[], 1, 1).unwrap()).unwrap();
        let c = Config::resolve(args(&["--tls-crl", crl.to_str().unwrap()])).unwrap();
        assert_eq!(c.device.transport.tls.unwrap().config().crls, vec![crl]);
        let e = Config::resolve(args(&["--tls-crl", cfg.to_str().unwrap()])).unwrap_err();
        assert!(
            format!("{e:#}").contains("vdev.toml") || matches!(e, Error::Tls(_)),
            "{e}"
        );
        // TLS and the plain-loopback line together are refused.
        let e = Config::resolve(args(&["--insecure-plain-loopback"])).unwrap_err();
        assert!(e.to_string().contains("remove one"), "{e}");
        // A certificate without its key, or a CA file that does not exist, fail at start.
        let e = Config::resolve(args(&["--tls-cert", "/x.crt"])).unwrap_err();
        assert!(matches!(e, Error::Tls(_)), "{e}");
        let a = Args::try_parse_from([
            "netgpu-vdev",
            "--socket=/x",
            "--backend=127.0.0.1:1",
            "--tls-cert=/x.crt",
        ])
        .unwrap();
        assert!(matches!(Config::resolve(a), Err(Error::TlsWithoutCa)));
        let a = Args::try_parse_from([
            "netgpu-vdev",
            "--socket=/x",
            "--backend=127.0.0.1:1",
            "--tls-ca=/no/such/ca.crt",
        ])
        .unwrap();
        let e = Config::resolve(a).unwrap_err();
        assert!(netgpu_tls::chain(&e).contains("/no/such/ca.crt"), "{e}");
        // Without TLS: plain, loopback only.
        let a =
            Args::try_parse_from(["netgpu-vdev", "--socket=/x", "--backend=127.0.0.1:1"]).unwrap();
        let c = Config::resolve(a).unwrap();
        assert!(c.device.transport.tls.is_none());
        assert!(check_transport(&c.device).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
