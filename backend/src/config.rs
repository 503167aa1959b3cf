//! The backend's TOML configuration: every field has a default, so an empty file (or none)
//! gives a working CPU-executor backend on loopback for development. See
//! `docs/backend.md` for the annotated reference.

use bytesize::ByteSize;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot read token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("no authentication token configured: set `tokens` or `token_files` in the config, or pass --token-file")]
    NoToken,
    #[error("{field} must be between {min} and {max}, got {value}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// The CUDA executor when a usable GPU and driver are present, else the CPU executor.
    #[default]
    Auto,
    /// A physical GPU through the CUDA driver API; refuse to start without one.
    Cuda,
    /// The PTX CPU executor.
    Cpu,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    pub executor: ExecutorKind,
    /// Accepted authentication tokens.
    pub tokens: Vec<String>,
    /// Files each holding one accepted token (first line, surrounding white space ignored).
    pub token_files: Vec<PathBuf>,
    /// Most sessions (connections) served at once; more are refused at the handshake.
    pub max_sessions: u32,
    /// Device memory one session may hold (allocations and module globals).
    pub session_memory_quota: ByteSize,
    /// Largest data section of one frame; clients split larger copies.
    pub max_frame_data: ByteSize,
    /// A client that has not completed the handshake by then is dropped.
    pub handshake_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long to wait for sessions to finish their current operation.
    pub shutdown_grace_ms: u64,
    /// Longest one kernel may run before it fails with `CUDA_ERROR_LAUNCH_TIMEOUT` (which
    /// poisons that session's context, as a GPU watchdog does); none by default. A client may
    /// ask for a shorter limit in its handshake, never a longer one.
    pub kernel_time_limit_ms: Option<u64>,
    /// TLS for every connection (docs/security.md); required unless
    /// `insecure_plain_loopback` is set.
    pub tls: Option<netgpu_tls::ServerTlsConfig>,
    /// Development only: plain TCP, on a loopback `listen` address, to loopback peers.
    pub insecure_plain_loopback: bool,
    /// Keepalive and user timeout of every connection.
    pub net: netgpu_tls::NetTuning,
    /// The tenants this backend serves, with their limits (docs/security.md).
    pub tenants: Vec<crate::tenant::TenantConfig>,
    pub cpu: CpuConfig,
    pub cuda: CudaConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuConfig {
    /// Device memory the CPU executor offers to all sessions together.
    pub total_memory: ByteSize,
    /// Worker threads that run thread blocks; 0 means one per core.
    pub threads: u32,
    /// Name the virtual device reports.
    pub device_name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaConfig {
    /// CUDA device ordinal to serve.
    pub device: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            executor: ExecutorKind::Auto,
            tokens: Vec::new(),
            token_files: Vec::new(),
            max_sessions: 64,
            session_memory_quota: ByteSize::gib(4),
            max_frame_data: ByteSize::b(netgpu_proto::wire::DEFAULT_MAX_DATA_LEN as u64),
            handshake_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            kernel_time_limit_ms: None,
            tls: None,
            insecure_plain_loopback: false,
            net: netgpu_tls::NetTuning::default(),
            tenants: Vec::new(),
            cpu: CpuConfig::default(),
            cuda: CudaConfig::default(),
        }
    }
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            total_memory: ByteSize::gib(8),
            threads: 0,
            device_name: "netgpu CPU executor".to_string(),
        }
    }
}

impl Config {
    /// Reads a config file; a missing `path` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let cfg: Config = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: p.to_owned(),
                    source,
                })?
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let range = |field, value: u64, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        range(
            "max_frame_data",
            self.max_frame_data.as_u64(),
            4096,
            1 << 30,
        )?;
        range("max_sessions", self.max_sessions.into(), 1, 65_536)?;
        range("cpu.threads", self.cpu.threads.into(), 0, 4096)?;
        if let Some(ms) = self.kernel_time_limit_ms {
            range("kernel_time_limit_ms", ms, 1, 86_400_000)?;
        }
        Ok(())
    }

    /// All accepted tokens: the inline ones and those read from token files.
    pub fn load_tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut tokens: Vec<String> = self
            .tokens
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect();
        for path in &self.token_files {
            tokens.push(read_token_file(path)?);
        }
        if tokens.is_empty() {
            return Err(ConfigError::NoToken);
        }
        Ok(tokens)
    }
}

/// Reads a token file: its first line, trimmed.
pub fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(ConfigError::EmptyToken(path.to_owned()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let cfg: Config = toml::from_str("").unwrap();
        assert_eq!(cfg.listen.port(), 7070);
        assert_eq!(cfg.executor, ExecutorKind::Auto);
        assert_eq!(cfg.session_memory_quota, ByteSize::gib(4));
    }

    #[test]
    fn sizes_accept_units_and_unknown_fields_are_refused() {
        let cfg: Config = toml::from_str(
            "session_memory_quota = \"512MiB\"\nexecutor = \"cpu\"\n[cpu]\ntotal_memory = 1048576\n",
        )
        .unwrap();
        assert_eq!(cfg.session_memory_quota.as_u64(), 512 << 20);
        assert_eq!(cfg.cpu.total_memory.as_u64(), 1 << 20);
        assert_eq!(cfg.executor, ExecutorKind::Cpu);
        assert!(toml::from_str::<Config>("listne = \"1.2.3.4:5\"").is_err());
    }

    #[test]
    fn out_of_range_values_are_reported_by_name() {
        let cfg: Config = toml::from_str("max_frame_data = 10").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("max_frame_data"), "{err}");
    }

    #[test]
    fn tokens_come_from_config_and_files() {
        let dir = std::env::temp_dir().join(format!("netgpu-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tok");
        std::fs::write(&f, "  s3cret \nignored\n").unwrap();
        let cfg = Config {
            tokens: vec!["inline".into()],
            token_files: vec![f],
            ..Config::default()
        };
        assert_eq!(
            cfg.load_tokens().unwrap(),
            vec!["inline".to_string(), "s3cret".into()]
        );
        assert!(matches!(
            Config::default().load_tokens(),
            Err(ConfigError::NoToken)
        ));
    }
}
