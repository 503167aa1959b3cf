//! The operator's certificate commands, shared by `netgpu-cert` and `netgpuctl cert`: make a
//! CA, issue backend (GPU host) and hypervisor (tenant) certificates with the config sections
//! that use them, and show what a certificate says. See docs/security.md.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::identity::{format_time, CertInfo};
use crate::issue::{new_ca, Ca, Issued, Role};
use crate::{chain, pem, TenantName};

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Create a new CA (ca.crt, ca.key) in DIR.
    Ca {
        /// Directory for ca.crt and ca.key (created; ca.key is mode 0600).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "netgpu CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a backend (GPU host) certificate: serverAuth, the names clients connect to.
    Backend {
        #[command(flatten)]
        common: IssueArgs,
        /// DNS name clients use to reach this backend (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// IP address clients use to reach this backend (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
    },
    /// Issue a hypervisor (client) certificate naming its tenant: clientAuth, SAN URI
    /// netgpu://tenant/<TENANT>.
    Hypervisor {
        #[command(flatten)]
        common: IssueArgs,
        /// The tenant this hypervisor's virtual GPUs belong to.
        #[arg(long)]
        tenant: TenantName,
        /// DNS name of the hypervisor, for logs (repeatable, optional).
        #[arg(long)]
        dns: Vec<String>,
    },
    /// Show the certificates in a PEM file: subject, names, tenant, usages, validity.
    Show {
        /// A PEM file with one or more certificates.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Directory holding the CA's ca.crt and ca.key.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// Common name; also the file stem of NAME.crt and NAME.key.
    #[arg(long)]
    name: String,
    /// Directory for the new files (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// Runs one certificate command; `json` prints machine-readable output.
pub fn run(cmd: &CertCmd, json: bool) -> Result<(), String> {
    match cmd {
        CertCmd::Ca {
            out,
            name,
            days,
            force,
        } => {
            let ca = new_ca(name, *days).map_err(|e| chain(&e))?;
            let (c, k) = write_pair(out, "ca", &ca, *force)?;
            let info = info_of(&ca)?;
            if json {
                print_json(&c, &k, &info);
            } else {
                println!("CA \"{name}\" written: {} (distribute) and {} (keep secret, offline if you can)", c.display(), k.display());
                println!("valid until {}", format_time(info.not_after));
                println!(
                    "next: netgpu-cert backend --ca {} --name HOST --dns HOST.example",
                    out.display()
                );
            }
            Ok(())
        }
        CertCmd::Backend { common, dns, ip } => {
            let role = Role::Backend {
                dns: dns.clone(),
                ips: ip.clone(),
            };
            let (c, k, info) = issue(common, &role)?;
            if json {
                print_json(&c, &k, &info);
            } else {
                let ca = abs(&common.ca.join("ca.crt"));
                println!(
                    "backend certificate for {} written: {}, {}",
                    info.sans.join(", "),
                    c.display(),
                    k.display()
                );
                println!("valid until {}\n", format_time(info.not_after));
                println!("# backend.toml on the GPU host (install the files there; the key stays on that host):");
                println!(
                    "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
                    c.display(),
                    k.display(),
                    ca.display()
                );
                println!("# clients (vdev.toml, libcuda's client.toml) trust it with:\n[tls]\nca = \"{}\"", ca.display());
                if let Some(first) = dns.first() {
                    println!("# and connect to {first}:7070 (or set server_name = \"{first}\")");
                }
            }
            Ok(())
        }
        CertCmd::Hypervisor {
            common,
            tenant,
            dns,
        } => {
            let role = Role::Hypervisor {
                tenant: tenant.clone(),
                dns: dns.clone(),
            };
            let (c, k, info) = issue(common, &role)?;
            if json {
                print_json(&c, &k, &info);
            } else {
                let ca = abs(&common.ca.join("ca.crt"));
                println!(
                    "hypervisor certificate for tenant {tenant} written: {}, {}",
                    c.display(),
                    k.display()
                );
                println!("valid until {}\n", format_time(info.not_after));
                println!("# vdev.toml on the hypervisor:\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n", ca.display(), c.display(), k.display());
                println!("# backend.toml on each GPU host this tenant may use:\n[[tenants]]\nname = \"{tenant}\"\nmemory_quota = \"16GiB\"\nmax_sessions = 16");
            }
            Ok(())
        }
        CertCmd::Show { file } => {
            let certs = pem::load_certs("certificate", file).map_err(|e| chain(&e))?;
            let infos = certs
                .iter()
                .map(|c| CertInfo::parse(c).map_err(|e| format!("{}: {e}", file.display())))
                .collect::<Result<Vec<_>, _>>()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&infos).unwrap_or_default()
                );
            } else {
                for (i, info) in infos.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    println!("subject:   {}", info.subject);
                    println!("issuer:    {}", info.issuer);
                    println!("serial:    {}", info.serial);
                    println!("names:     {}", info.sans.join(", "));
                    println!("tenant:    {}", info.tenant.as_deref().unwrap_or("-"));
                    println!(
                        "usage:     {}{}",
                        info.key_purposes.join(", "),
                        if info.is_ca { " (CA)" } else { "" }
                    );
                    println!(
                        "valid:     {} .. {}",
                        format_time(info.not_before),
                        format_time(info.not_after)
                    );
                }
            }
            Ok(())
        }
    }
}

fn issue(a: &IssueArgs, role: &Role) -> Result<(PathBuf, PathBuf, CertInfo), String> {
    let ca = Ca::load(&a.ca.join("ca.crt"), &a.ca.join("ca.key")).map_err(|e| {
        format!(
            "{}; make a CA first with `netgpu-cert ca --out {}`",
            chain(&e),
            a.ca.display()
        )
    })?;
    let issued = ca.issue(&a.name, role, a.days).map_err(|e| chain(&e))?;
    let stem = a.name.replace('/', "_");
    let (c, k) = write_pair(&a.out, &stem, &issued, a.force)?;
    Ok((c, k, info_of(&issued)?))
}

fn info_of(i: &Issued) -> Result<CertInfo, String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(i.cert_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    CertInfo::parse(&der).map_err(|e| e.to_string())
}

/// Writes `<stem>.crt` (0644) and `<stem>.key` (0600) into `dir`, refusing to overwrite
/// without `force`.
fn write_pair(
    dir: &Path,
    stem: &str,
    i: &Issued,
    force: bool,
) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let c = abs(&dir.join(format!("{stem}.crt")));
    let k = abs(&dir.join(format!("{stem}.key")));
    for p in [&c, &k] {
        if p.exists() && !force {
            return Err(format!(
                "{} exists; pass --force to overwrite it",
                p.display()
            ));
        }
    }
    write_file(&k, i.key_pem.as_bytes(), 0o600)?;
    write_file(&c, i.cert_pem.as_bytes(), 0o644)?;
    Ok((c, k))
}

/// Writes via a temporary file and a rename, so a running backend never reads half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn print_json(cert: &Path, key: &Path, info: &CertInfo) {
    let v = serde_json::json!({
        "cert": cert,
        "key": key,
        "certificate": info,
    });
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}
