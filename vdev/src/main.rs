//! `netgpu-vdev` binary: parses the configuration, starts the device's runtime and runs the
//! vfio-user message loop until SIGTERM/SIGINT (or the VMM leaves, with
//! `--on-disconnect exit`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use netgpu_vdev::config::{Args, Config, SocketSpec};
use netgpu_vdev::device::Device;
use netgpu_vdev::server::{self, Source};
use tracing::{error, info};
use vmm_sys_util::eventfd::EventFd;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = Config::resolve(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vdev-worker")
        .enable_all()
        .build()?;
    if let Some(p) = cfg.pool.clone() {
        let follow = rt.block_on(netgpu_vdev::pool::Follow::start(&p.store, &p.vgpu))?;
        let t = follow.target();
        cfg.device.backend = t.address.clone();
        cfg.device.memory_quota = match cfg.device.memory_quota {
            0 => t.memory,
            m => m.min(t.memory),
        };
        cfg.device.pool = Some(follow);
    }
    if let Some(addr) = cfg.metrics_listen {
        rt.block_on(netgpu_vdev::pool::serve_metrics(
            addr,
            &cfg.device.name,
            cfg.device.memory_quota,
        ))?;
    }
    let stop = Arc::new(EventFd::new(libc::EFD_CLOEXEC)?);
    {
        let stop = Arc::clone(&stop);
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop.write(1);
        });
    }
    let source = match &cfg.socket {
        SocketSpec::Path(p) => Source::bind(p)?,
        SocketSpec::Fd(fd) => {
            anyhow::ensure!(*fd > 2, "--fd must name an inherited descriptor above 2");
            // SAFETY: the caller passed us this descriptor to own (backend program
            // convention); nothing else in this process uses it.
            Source::from_fd(unsafe { OwnedFd::from_raw_fd(*fd) })
        }
    };
    let mut device = Device::new(cfg.device.clone(), rt.handle().clone())?;
    info!(device = %device.name(), socket = ?cfg.socket, backend = %cfg.device.backend, "netgpu-vdev listening");
    server::run(&mut device, source, &stop, cfg.on_disconnect)?;
    device.disconnect();
    info!(device = %device.name(), "netgpu-vdev stopped");
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
