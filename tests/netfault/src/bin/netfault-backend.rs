//! A CPU-executor netgpu backend for the fault tests, as its own process so a test can kill
//! it (`SIGKILL`: a backend crash) and start it again on the same address. Prints
//! `listening <addr>` once it accepts connections.
//!
//! `netfault-backend <listen-addr> <token>`

use bytesize::ByteSize;
use netgpu_backend::testing::{cpu_config, InProcessBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(token)) = (args.next(), args.next()) else {
        return Err("usage: netfault-backend <listen-addr> <token>".into());
    };
    let config = cpu_config(listen.parse()?, ByteSize::mib(256), ByteSize::mib(512));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let backend = InProcessBackend::start("fault cpu", config, vec![token]).await?;
        println!("listening {}", backend.addr);
        std::future::pending::<()>().await;
        Ok(())
    })
}
