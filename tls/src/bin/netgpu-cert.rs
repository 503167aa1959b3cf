//! `netgpu-cert`: the operator's certificate authority for netgpu (the same commands as
//! `netgpuctl cert`). See docs/security.md.

use std::process::ExitCode;

use clap::Parser;
use netgpu_tls::cli::{run, CertCmd};

/// Certificates for netgpu: a CA, backend (GPU host) and hypervisor (tenant) certificates.
#[derive(Parser, Debug)]
#[command(name = "netgpu-cert", version, about)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CertCmd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.cmd, cli.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netgpu-cert: {e}");
            ExitCode::FAILURE
        }
    }
}
