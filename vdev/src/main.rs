//! `netgpu-vdev` binary: parses the configuration, starts the device's runtime, drops
//! privileges (an unprivileged user, the seccomp filter) and runs the vfio-user message loop
//! until SIGTERM/SIGINT (or the VMM leaves, with `--on-disconnect exit`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use netgpu_vdev::{Args, Config, Device, Seccomp, SocketSpec, Source};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
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
    // Name lookups happen now: the filter leaves no room for them later.
    if cfg.pool.is_none() {
        cfg.device.backend = netgpu_vdev::resolve_backend(&cfg.device.backend)?;
        // Plain TCP only to loopback; everything else needs [tls].
        netgpu_vdev::check_transport(&cfg.device)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vdev-worker")
        .enable_all()
        .build()?;
    if let Some(p) = cfg.pool.clone() {
        let follow = rt.block_on(netgpu_vdev::Follow::start(&p.store, &p.vgpu))?;
        let t = follow.target();
        cfg.device.backend = t.address.clone();
        cfg.device.memory_quota = match cfg.device.memory_quota {
            0 => t.memory,
            m => m.min(t.memory),
        };
        cfg.device.pool = Some(follow);
    }
    if let Some(addr) = cfg.metrics_listen {
        rt.block_on(netgpu_vdev::serve_metrics(
            addr,
            &cfg.device.name,
            cfg.device.memory_quota,
        ))?;
    }
    let stop = Arc::new(EventFd::new(libc::EFD_CLOEXEC)?);
    {
        // Signal handlers are installed here, before the filter.
        let _rt = rt.enter();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = Arc::clone(&stop);
        rt.spawn(async move {
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
    if let Some(name) = &cfg.user {
        let user = netgpu_vdev::lookup_user(name)?;
        if let SocketSpec::Path(p) = &cfg.socket {
            netgpu_vdev::give(p, &user)?;
        }
        netgpu_vdev::drop_to_user(&user).context("--user")?;
        info!(device = %device.name(), user = %name, uid = user.uid, "running as an unprivileged user");
    }
    // A file:// pool store is files: the filter then admits what the store does to them.
    let store_files = cfg.pool.as_ref().is_some_and(|p| {
        matches!(
            netgpu_pool::store::parse_url(&p.store),
            Ok(netgpu_pool::store::StoreUrl::File(_))
        )
    });
    match cfg.seccomp {
        Seccomp::Enforce => netgpu_vdev::install_filter(false, store_files)?,
        Seccomp::Log => {
            netgpu_vdev::install_filter(true, store_files)?;
            warn!(device = %device.name(), "seccomp filter in log mode: refused calls are only logged");
        }
        Seccomp::Off => {
            warn!(device = %device.name(), "running without the seccomp filter (--no-seccomp)")
        }
    }
    info!(device = %device.name(), socket = ?cfg.socket, backend = %cfg.device.backend, tls = cfg.device.transport.tls.is_some(), seccomp = ?cfg.seccomp, "netgpu-vdev listening");
    netgpu_vdev::run(&mut device, source, &stop, cfg.on_disconnect)?;
    device.disconnect();
    info!(device = %device.name(), "netgpu-vdev stopped");
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
