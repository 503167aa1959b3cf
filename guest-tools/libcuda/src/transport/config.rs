//! Where the TCP transport connects and how: a TOML file named by `NETGPU_CONFIG` and the
//! environment, which wins over the file.
//!
//! | variable | file key | meaning |
//! |---|---|---|
//! | `NETGPU_BACKEND` | `backend` | `host:port` of the backend; selects the TCP transport |
//! | `NETGPU_TOKEN`, `NETGPU_TOKEN_FILE` | `token_file` | the tenant's token (optional with a client certificate) |
//! | `NETGPU_TLS_CA` | `[tls] ca` | CA of the backend's certificate: TLS on |
//! | `NETGPU_TLS_CERT`, `NETGPU_TLS_KEY` | `[tls] cert`, `key` | this client's certificate and key |
//! | `NETGPU_TLS_SERVER_NAME` | `[tls] server_name` | name the backend's certificate must carry |
//! | | `[net]` | keepalive and user timeout (`docs/security.md`) |
//!
//! Without TLS the connection is plain TCP, which only a loopback backend gets.

use std::path::PathBuf;

use netgpu_tls::{ClientTls, ClientTlsConfig, NetTuning};
use serde::Deserialize;

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub backend: Option<String>,
    pub token_file: Option<PathBuf>,
    pub tls: Option<ClientTlsConfig>,
    #[serde(default)]
    pub net: NetTuning,
}

/// A resolved TCP transport configuration.
pub struct TcpConfig {
    pub addr: String,
    pub token: String,
    pub tls: Option<ClientTls>,
    pub net: NetTuning,
}

/// The TCP configuration from `NETGPU_CONFIG` and the environment; `Ok(None)` when no backend
/// is named (the device transport is used). Errors say what to fix.
pub fn tcp_from_env() -> Result<Option<TcpConfig>, String> {
    tcp_from(|k| std::env::var(k).ok())
}

fn tcp_from(env: impl Fn(&str) -> Option<String>) -> Result<Option<TcpConfig>, String> {
    let file = match env("NETGPU_CONFIG") {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read NETGPU_CONFIG {p}: {e}"))?;
            toml::from_str::<FileConfig>(&text)
                .map_err(|e| format!("invalid NETGPU_CONFIG {p}: {e}"))?
        }
        None => FileConfig::default(),
    };
    let Some(addr) = env("NETGPU_BACKEND").or(file.backend) else {
        return Ok(None);
    };
    let mut tls = file.tls;
    if let Some(ca) = env("NETGPU_TLS_CA") {
        tls = Some(ClientTlsConfig {
            ca: ca.into(),
            ..tls.unwrap_or_default()
        });
    }
    if let Some(t) = tls.as_mut() {
        if let Some(c) = env("NETGPU_TLS_CERT") {
            t.cert = Some(c.into());
        }
        if let Some(k) = env("NETGPU_TLS_KEY") {
            t.key = Some(k.into());
        }
        if let Some(n) = env("NETGPU_TLS_SERVER_NAME") {
            t.server_name = Some(n);
        }
    } else if env("NETGPU_TLS_CERT").is_some() {
        return Err("NETGPU_TLS_CERT is set but NETGPU_TLS_CA is not: TLS needs the CA of the backend's certificate".into());
    }
    let has_cert = tls.as_ref().is_some_and(|t| t.cert.is_some());
    let token_file = env("NETGPU_TOKEN_FILE")
        .map(PathBuf::from)
        .or(file.token_file);
    let token = match (env("NETGPU_TOKEN"), token_file) {
        (Some(t), _) => t,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read token file {}: {e}", f.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        (None, None) if has_cert => String::new(),
        (None, None) => {
            return Err(format!(
                "backend {addr} is set but no credentials: set NETGPU_TOKEN or NETGPU_TOKEN_FILE, or a client certificate (NETGPU_TLS_CA, NETGPU_TLS_CERT, NETGPU_TLS_KEY)"
            ))
        }
    };
    let tls = match tls {
        Some(cfg) => Some(ClientTls::load(cfg).map_err(|e| netgpu_tls::chain(&e))?),
        None => None,
    };
    Ok(Some(TcpConfig {
        addr,
        token,
        tls,
        net: file.net,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn no_backend_means_the_device_transport() {
        assert!(tcp_from(env(&[])).unwrap().is_none());
    }

    #[test]
    fn a_backend_needs_credentials() {
        let e = tcp_from(env(&[("NETGPU_BACKEND", "127.0.0.1:1")]))
            .err()
            .unwrap();
        assert!(
            e.contains("NETGPU_TOKEN") && e.contains("NETGPU_TLS_CERT"),
            "{e}"
        );
        let c = tcp_from(env(&[
            ("NETGPU_BACKEND", "127.0.0.1:1"),
            ("NETGPU_TOKEN", "t"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((c.addr.as_str(), c.token.as_str()), ("127.0.0.1:1", "t"));
        assert!(c.tls.is_none());
    }

    #[test]
    fn the_file_is_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("libcuda-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("client.toml");
        std::fs::write(
            &f,
            "backend = \"gpu1:7070\"\n[tls]\nca = \"/nonexistent/ca.crt\"\n[net]\nuser_timeout_ms = 9000\n",
        )
        .unwrap();
        let path = f.to_str().unwrap();
        // The file names a CA that does not exist: the error names it.
        let e = tcp_from(env(&[("NETGPU_CONFIG", path), ("NETGPU_TOKEN", "t")]))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/ca.crt"), "{e}");
        std::fs::write(
            &f,
            "backend = \"gpu1:7070\"\n[net]\nuser_timeout_ms = 9000\n",
        )
        .unwrap();
        let c = tcp_from(env(&[
            ("NETGPU_CONFIG", path),
            ("NETGPU_TOKEN", "t"),
            ("NETGPU_BACKEND", "127.0.0.1:2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:2");
        assert_eq!(c.net.user_timeout_ms, 9000);
        std::fs::write(&f, "backend = 1\n").unwrap();
        assert!(tcp_from(env(&[("NETGPU_CONFIG", path)]))
            .err()
            .unwrap()
            .contains("invalid NETGPU_CONFIG"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
