//! The operator's certificate commands, shared by `netgpu-cert` and `netgpuctl cert`: make a
//! CA, issue backend (GPU host) and hypervisor (tenant) certificates with the config sections
//! that use them, and show what a certificate says. See docs/security.md.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::identity::{format_time, CertInfo};
use crate::issue::{new_ca, Ca, Issued, Revoked, Role};
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
    /// Revoke certificates: add them to the CA's revocation list (DIR/revoked.txt) and write
    /// a new CRL (DIR/ca.crl) for the backends' `[tls] crls`.
    Revoke {
        /// Directory holding the CA's ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The certificates (PEM files) to revoke; each must be issued by this CA.
        #[arg(required = true)]
        certs: Vec<PathBuf>,
        /// Validity of the new CRL in days (issue a fresh one before, with `crl`).
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Write a fresh CRL (DIR/ca.crl) listing what was revoked so far (none yet: an empty
    /// list, which backends with `[tls] crls` need for every CA in their client_ca).
    Crl {
        /// Directory holding the CA's ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Validity of the CRL in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
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
        CertCmd::Revoke { ca, certs, days } => {
            let mut list = read_revoked(ca)?;
            let ca_info = ca_info(ca)?;
            let ca_der =
                pem::load_certs("CA certificate", &ca.join("ca.crt")).map_err(|e| chain(&e))?;
            let ca_ski = x509_parser::parse_x509_certificate(&ca_der[0])
                .map(|(_, c)| key_ids(&c).0)
                .map_err(|e| format!("{}: {e}", ca.join("ca.crt").display()))?;
            let mut added = Vec::new();
            for file in certs {
                let der = pem::load_certs("certificate", file).map_err(|e| chain(&e))?;
                let leaf = &der[0];
                let (_, c) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
                    format!("{}: not a valid X.509 certificate: {e}", file.display())
                })?;
                let issuer = c.issuer().to_string();
                let aki = key_ids(&c).1;
                if issuer != ca_info.subject || (aki.is_some() && aki != ca_ski) {
                    return Err(format!(
                        "{} was issued by {issuer}, not by this CA ({}): revoke it with its own CA",
                        file.display(),
                        ca_info.subject
                    ));
                }
                let serial = c.raw_serial().to_vec();
                if !list.iter().any(|r| r.serial == serial) {
                    list.push(Revoked {
                        serial,
                        time: pem::now(),
                    });
                    added.push((file.clone(), c.subject().to_string()));
                }
            }
            write_revoked(ca, &list)?;
            let crl = write_crl(ca, &list, *days)?;
            if json {
                let v = serde_json::json!({
                    "crl": crl,
                    "revoked": list.len(),
                    "added": added.iter().map(|(f, s)| serde_json::json!({"file": f, "subject": s})).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for (f, subject) in &added {
                    println!("revoked {} ({subject})", f.display());
                }
                print_crl_next(&crl, list.len(), *days);
            }
            Ok(())
        }
        CertCmd::Crl { ca, days } => {
            let list = read_revoked(ca)?;
            let crl = write_crl(ca, &list, *days)?;
            if json {
                let v = serde_json::json!({"crl": crl, "revoked": list.len()});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_crl_next(&crl, list.len(), *days);
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

/// The CA's revocation list: DIR/revoked.txt, one `SERIAL-HEX UNIX-TIME` line per
/// certificate (missing: none revoked yet).
fn read_revoked(ca: &Path) -> Result<Vec<Revoked>, String> {
    let path = ca.join("revoked.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let bad = |n: usize| {
        format!(
            "{} line {n}: expected `SERIAL-HEX UNIX-TIME`",
            path.display()
        )
    };
    let mut list = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(hex), Some(time)) = (f.next(), f.next()) else {
            return Err(bad(i + 1));
        };
        if hex.len() % 2 != 0 || hex.is_empty() {
            return Err(bad(i + 1));
        }
        let serial = (0..hex.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(hex.get(j..j + 2).unwrap_or("?"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad(i + 1))?;
        let time = time.parse::<i64>().map_err(|_| bad(i + 1))?;
        list.push(Revoked { serial, time });
    }
    Ok(list)
}

fn write_revoked(ca: &Path, list: &[Revoked]) -> Result<(), String> {
    let mut text = String::from(
        "# certificates revoked by this CA: serial (hex), UNIX time; netgpu-cert revoke\n",
    );
    for r in list {
        let hex: String = r.serial.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!("{hex} {}\n", r.time));
    }
    write_file(&ca.join("revoked.txt"), text.as_bytes(), 0o644)
}

/// A certificate's subject key identifier and authority key identifier: two CAs of the same
/// name are told apart by these.
fn key_ids(
    c: &x509_parser::certificate::X509Certificate<'_>,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    use x509_parser::extensions::ParsedExtension;
    let (mut ski, mut aki) = (None, None);
    for e in c.extensions() {
        match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    (ski, aki)
}

fn ca_info(dir: &Path) -> Result<CertInfo, String> {
    let path = dir.join("ca.crt");
    let certs = pem::load_certs("CA certificate", &path).map_err(|e| chain(&e))?;
    CertInfo::parse(&certs[0]).map_err(|e| format!("{}: {e}", path.display()))
}

/// Signs the list as DIR/ca.crl; the CRL number is the time in seconds, which grows with
/// every list (two lists in one second: the later one a second on).
fn write_crl(dir: &Path, list: &[Revoked], days: u32) -> Result<PathBuf, String> {
    let ca = Ca::load(&dir.join("ca.crt"), &dir.join("ca.key")).map_err(|e| chain(&e))?;
    let path = abs(&dir.join("ca.crl"));
    let previous: u64 = pem::load_crls(&path)
        .ok()
        .and_then(|crls| {
            let (_, crl) = x509_parser::parse_x509_crl(crls.first()?).ok()?;
            let digits = crl.crl_number()?.to_u64_digits();
            (digits.len() <= 1).then(|| digits.first().copied().unwrap_or(0))
        })
        .unwrap_or(0);
    let number = u64::try_from(pem::now())
        .unwrap_or(0)
        .max(previous.saturating_add(1));
    let pem = ca.crl(list, number, days).map_err(|e| chain(&e))?;
    write_file(&path, pem.as_bytes(), 0o644)?;
    Ok(path)
}

fn print_crl_next(crl: &Path, n: usize, days: u32) {
    println!(
        "CRL written: {} ({n} revoked, valid {days} days: run `netgpu-cert crl` before then)",
        crl.display()
    );
    println!("# install it on every GPU host (rename into place; picked up by new connections):\n[tls]\ncrls = [\"{}\"]", crl.display());
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
