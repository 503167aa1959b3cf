//! The whole stack for fault tests: an in-process backend (CPU executor), the fault proxy in
//! front of it, and netgpu-client sessions through the proxy; plus a kernel that runs for a
//! chosen time and checksummed data.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use netgpu_backend::testing::{cpu_config, InProcessBackend};
use netgpu_client::{Client, ClientError, CuResult, Handle};
use netgpu_netfault::FaultProxy;

pub const TOKEN: &str = "fault-test-token-0123456789";

/// The in-process backend these tests run against (256 MiB per session, 512 MiB in all, a
/// 2 s shutdown grace).
pub struct Backend(InProcessBackend);

impl std::ops::Deref for Backend {
    type Target = InProcessBackend;
    fn deref(&self) -> &InProcessBackend {
        &self.0
    }
}

impl Backend {
    /// A CPU-executor backend on `listen` (port 0: any).
    pub async fn start(listen: SocketAddr) -> Backend {
        let mut config = cpu_config(listen, ByteSize::mib(256), ByteSize::mib(512));
        config.shutdown_grace_ms = 2_000;
        Backend(
            InProcessBackend::start("fault cpu", config, vec![TOKEN.to_string()])
                .await
                .unwrap(),
        )
    }

    /// Stops it as SIGTERM would.
    pub async fn stop(&mut self) {
        self.0.stop().await;
    }
}

/// A backend in its own process (`netfault-backend`), to be killed like a crashing daemon.
pub struct BackendProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl BackendProcess {
    pub fn start(listen: SocketAddr) -> BackendProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_netfault-backend"))
            .args([listen.to_string(), TOKEN.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap()
            .parse()
            .unwrap();
        BackendProcess { addr, child }
    }

    /// SIGKILL: the process dies with everything open, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A backend with the fault proxy in front.
pub struct Stack {
    pub backend: Backend,
    pub proxy: FaultProxy,
}

impl Stack {
    pub async fn start() -> Stack {
        let backend = Backend::start("127.0.0.1:0".parse().unwrap()).await;
        let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), backend.addr).unwrap();
        Stack { backend, proxy }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.proxy.addr().to_string(), TOKEN)
            .await
            .unwrap()
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

pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// A one-thread kernel that counts to `n` and stores the count: runs as long as `n` says.
pub const SPIN_PTX: &str = r#"
.version 7.0
.target sm_50
.address_size 64
.visible .entry spin(.param .u64 out, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, 0;
LOOP:
    add.u32 %r2, %r2, 1;
    setp.lt.u32 %p1, %r2, %r1;
    @%p1 bra LOOP;
    st.global.u32 [%rd1], %r2;
    ret;
}
"#;

/// A context with the spin kernel loaded and a 4-byte output buffer.
pub struct Spin {
    pub ctx: Handle,
    pub func: Handle,
    pub out: u64,
}

impl Spin {
    pub async fn load(c: &Client) -> Spin {
        let ctx = c.ctx_create(0).await.unwrap();
        let m = c.module_load(ctx, SPIN_PTX.as_bytes()).await.unwrap();
        let func = c.module_get_function(m, "spin").await.unwrap().handle;
        let out = c.mem_alloc(ctx, 4).await.unwrap();
        Spin { ctx, func, out }
    }

    pub async fn launch(&self, c: &Client, n: u32) {
        let mut params = Vec::new();
        params.extend_from_slice(&self.out.to_le_bytes());
        params.extend_from_slice(&n.to_le_bytes());
        params.extend_from_slice(&[0u8; 4]);
        c.launch_kernel(self.func, [1, 1, 1], [1, 1, 1], 0, 0, &params)
            .await
            .unwrap();
    }

    /// The iteration count that runs about `target` on this machine.
    pub async fn calibrate(&self, c: &Client, target: Duration) -> u32 {
        let n = 200_000u32;
        let t = Instant::now();
        self.launch(c, n).await;
        c.ctx_synchronize(self.ctx).await.unwrap();
        let per = t.elapsed().as_secs_f64() / f64::from(n);
        ((target.as_secs_f64() / per) as u64).clamp(1, u64::from(u32::MAX)) as u32
    }
}

/// The CUDA result a driver-API caller would see for this failure.
pub fn cuda(e: &ClientError) -> CuResult {
    e.cuda_result()
}
