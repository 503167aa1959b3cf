//! `netgpuctl cert`: the certificate authority for TLS between hypervisors and GPU hosts (a
//! CA, backend and hypervisor certificates, the config sections that use them). The commands
//! live in `netgpu_tls::cli`, shared with the standalone `netgpu-cert`; they need no store.

pub use netgpu_tls::cli::CertCmd;

pub fn run(cmd: &CertCmd, json: bool) -> anyhow::Result<()> {
    netgpu_tls::cli::run(cmd, json).map_err(anyhow::Error::msg)
}
