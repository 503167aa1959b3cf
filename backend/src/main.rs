//! `netgpu-backend`: the GPU host daemon.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use netgpu_backend::config::{read_token_file, Config, ExecutorKind};
use netgpu_backend::executor::{cpu::CpuExecutor, cuda, Executor};
use netgpu_backend::server::{Server, Shared};
use netgpu_tls::{Security, ServerTls};
use tracing::{error, info, warn};

/// Serves netgpu virtual GPUs: runs the CUDA work that netgpu-vdev forwards, on a GPU or on
/// the PTX CPU executor.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to listen on (overrides `listen` in the config).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// TOML config file (see docs/backend.md); defaults apply without one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where work runs (overrides `executor` in the config).
    #[arg(long, value_enum)]
    executor: Option<ExecutorKind>,
    /// A file holding an accepted client token (may be given several times).
    #[arg(long = "token-file")]
    token_files: Vec<PathBuf>,
    /// Development only: plain TCP on a loopback address, as `insecure_plain_loopback = true`
    /// in the config (without it, the config's [tls] section is required).
    #[arg(long)]
    insecure_plain_loopback: bool,
    /// Log filter, e.g. `info` or `netgpu_backend=debug` (RUST_LOG also works).
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("{e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            error!("{msg}");
            eprintln!("netgpu-backend: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(e) = args.executor {
        config.executor = e;
    }
    let mut tokens = Vec::new();
    for f in &args.token_files {
        tokens.push(read_token_file(f)?);
    }
    if let Ok(mut t) = config.load_tokens() {
        tokens.append(&mut t);
    }
    if tokens.is_empty() && config.tenants.is_empty() {
        return Err("no tenant and no token configured: add [[tenants]] (clients then authenticate by certificate) or pass --token-file FILE / set `tokens` in the config".into());
    }
    config.insecure_plain_loopback |= args.insecure_plain_loopback;
    let config_name = args
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the backend's config (none given: --config FILE)".into());
    let security = match Security::choose(
        config.tls.clone(),
        config.insecure_plain_loopback,
        &config_name,
    )? {
        Security::Tls(cfg) => {
            let tls = ServerTls::load((*cfg).clone()).map_err(|e| netgpu_tls::chain(&e))?;
            info!(cert = %tls.config().cert.display(), client_ca = %tls.config().client_ca.display(), "TLS 1.3, client certificates {:?}", tls.config().client_auth);
            Security::Tls(Arc::new(tls))
        }
        Security::PlainLoopback => {
            netgpu_tls::policy::check_plain_listen(config.listen)?;
            warn!("plain TCP on loopback (insecure_plain_loopback): for development only");
            Security::PlainLoopback
        }
    };
    let executor = select_executor(&config)?;
    let info = executor.device_info();
    info!(executor = %info.executor, device = %info.name, memory = info.total_mem, "executor ready");
    let shared = Shared::build(config, tokens, executor, security)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = Server::bind(shared).await?;
        info!(addr = %server.local_addr()?, "listening");
        server.run(shutdown_signal()).await?;
        info!("stopped");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn select_executor(config: &Config) -> Result<Arc<dyn Executor>, Box<dyn std::error::Error>> {
    let cpu = || -> Arc<dyn Executor> {
        Arc::new(CpuExecutor::new(
            &config.cpu.device_name,
            config.cpu.total_memory.as_u64(),
            config.cpu.threads as usize,
        ))
    };
    match config.executor {
        ExecutorKind::Cpu => Ok(cpu()),
        ExecutorKind::Cuda => Ok(Arc::new(cuda::CudaExecutor::open(config.cuda.device)?)),
        ExecutorKind::Auto => match cuda::CudaExecutor::open(config.cuda.device) {
            Ok(e) => Ok(Arc::new(e)),
            Err(e) => {
                warn!(reason = %e, "no usable GPU, using the CPU executor");
                Ok(cpu())
            }
        },
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}
