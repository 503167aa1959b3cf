//! A backend with the CPU executor on 127.0.0.1, started in-process for tests.
#![allow(dead_code)]

pub mod kernels;

use std::time::Duration;

use bytesize::ByteSize;
use netgpu_backend::config::Config;
use netgpu_backend::testing::{cpu_config, InProcessBackend};

pub const TOKEN: &str = "test-token-0123456789";

/// [`InProcessBackend`] with this suite's defaults (64 MiB per session, 256 MiB in all) and
/// its token.
pub struct TestBackend(InProcessBackend);

impl std::ops::Deref for TestBackend {
    type Target = InProcessBackend;
    fn deref(&self) -> &InProcessBackend {
        &self.0
    }
}

impl TestBackend {
    pub async fn start() -> TestBackend {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBackend {
        let mut config = cpu_config(
            "127.0.0.1:0".parse().unwrap(),
            ByteSize::mib(64),
            ByteSize::mib(256),
        );
        tweak(&mut config);
        TestBackend(
            InProcessBackend::start("test cpu", config, vec![TOKEN.to_string()])
                .await
                .unwrap(),
        )
    }

    pub fn addr(&self) -> String {
        self.0.addr.to_string()
    }

    pub async fn client(&self) -> netgpu_client::Client {
        netgpu_client::Client::connect(&self.addr(), TOKEN)
            .await
            .unwrap()
    }

    /// Stops the backend as SIGTERM would, waiting for it to finish.
    pub async fn shutdown(&mut self) {
        self.0.stop().await;
    }

    /// Waits until no pool thread of the executor runs work; returns how many still do.
    pub async fn wait_idle(&self, within: Duration) -> usize {
        self.0.wait_threads_idle(within).await
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
