//! A CPU-executor netgpu backend for the fault tests, as its own process so a test can kill
//! it (`SIGKILL`: a backend crash) and start it again on the same address. Prints
//! `listening <addr>` once it accepts connections.
//!
//! `netfault-backend <listen-addr> <token>`

use std::sync::Arc;

use bytesize::ByteSize;
use netgpu_backend::config::{Config, ExecutorKind};
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::server::{Server, Shared};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(token)) = (args.next(), args.next()) else {
        return Err("usage: netfault-backend <listen-addr> <token>".into());
    };
    let mut config = Config {
        listen: listen.parse()?,
        executor: ExecutorKind::Cpu,
        session_memory_quota: ByteSize::mib(256),
        ..Config::default()
    };
    config.cpu.total_memory = ByteSize::mib(512);
    let executor = Arc::new(CpuExecutor::new(
        "fault cpu",
        config.cpu.total_memory.as_u64(),
        2,
    ));
    let shared = Shared::new(config, vec![token], executor);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = Server::bind(shared).await?;
        println!("listening {}", server.local_addr()?);
        server.run(std::future::pending()).await?;
        Ok(())
    })
}
