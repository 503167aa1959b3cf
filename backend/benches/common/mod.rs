//! What the backend's benches share: an in-process CPU-executor backend on loopback.

use bytesize::ByteSize;
use netgpu_backend::testing::{cpu_config, InProcessBackend};

pub const TOKEN: &str = "bench";

/// A CPU-executor backend (1 GiB per session, 2 GiB in all, a worker per core) on loopback.
pub async fn start_backend() -> InProcessBackend {
    let mut config = cpu_config(
        "127.0.0.1:0".parse().unwrap(),
        ByteSize::gib(1),
        ByteSize::gib(2),
    );
    config.cpu.threads = 0;
    InProcessBackend::start("bench", config, vec![TOKEN.into()])
        .await
        .unwrap()
}
