//! Test harness: a CPU backend on loopback, a vdev serving a socket in a thread, and a
//! `vfio_user::Client` driving it the way QEMU does; guest memory is a memfd passed with
//! `DMA_MAP`, which the test writes rings and commands into directly.
#![allow(dead_code, clippy::unwrap_used)]

pub mod fake;
pub mod tls;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use netgpu_backend::config::Config;
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::server::Shared;
use netgpu_backend::testing::{cpu_config, InProcessBackend};
use netgpu_proto::abi::{self, queue as qreg, reg, Command, Completion};
use netgpu_proto::cuda::CuResult;
use netgpu_vdev::{Device, DeviceConfig, OnDisconnect, Source};
use vfio_user::Client;
use vmm_sys_util::eventfd::EventFd;

pub const TOKEN: &str = "vdev-test-token";
pub const MEM_SIZE: u64 = 8 << 20;

pub struct Backend {
    pub addr: String,
    pub executor: Arc<CpuExecutor>,
    pub shared: Arc<Shared>,
    /// Serves until the harness drops it.
    _served: InProcessBackend,
}

pub fn start_backend(rt: &tokio::runtime::Runtime) -> Backend {
    start_backend_with(rt, |_| {})
}

pub fn start_backend_with(
    rt: &tokio::runtime::Runtime,
    tweak: impl FnOnce(&mut Config),
) -> Backend {
    rt.block_on(async {
        let mut config = cpu_config(
            "127.0.0.1:0".parse().unwrap(),
            ByteSize::mib(64),
            ByteSize::mib(256),
        );
        tweak(&mut config);
        let served = InProcessBackend::start("test cpu", config, vec![TOKEN.to_string()])
            .await
            .unwrap();
        Backend::from(served)
    })
}

impl From<InProcessBackend> for Backend {
    fn from(served: InProcessBackend) -> Backend {
        Backend {
            addr: served.addr.to_string(),
            executor: served.executor.clone(),
            shared: served.shared.clone(),
            _served: served,
        }
    }
}

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub backend: Backend,
    pub socket: PathBuf,
    pub stop: Arc<EventFd>,
    pub server: Option<JoinHandle<()>>,
    pub client: Client,
    pub mem: File,
}

pub fn memfd(size: u64) -> File {
    // SAFETY: valid NUL-terminated name; result checked.
    let fd = unsafe { libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor owned by nobody else.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

pub fn eventfd() -> File {
    // SAFETY: eventfd returns a new descriptor or -1, checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

/// Waits up to `timeout` for the eventfd to fire; returns its count.
pub fn wait_eventfd(f: &File, timeout: Duration) -> u64 {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    if rc <= 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    let mut f = f;
    match std::io::Read::read(&mut f, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

pub fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "vdev-{tag}-{}-{:?}.sock",
        std::process::id(),
        std::thread::current().id()
    ))
}

impl Harness {
    pub fn start(tag: &str) -> Harness {
        Self::start_with(tag, |_| {})
    }

    pub fn start_with(tag: &str, tweak: impl FnOnce(&mut DeviceConfig)) -> Harness {
        Self::start_full(tag, |_| {}, tweak)
    }

    /// A device whose backend is a [`fake::FakeBackend`] announcing `max_data`.
    pub fn start_fake(
        tag: &str,
        max_data: u32,
        tweak: impl FnOnce(&mut DeviceConfig),
    ) -> (Harness, fake::FakeBackend) {
        let mut fake = None;
        let h = Self::start_rt(
            tag,
            |_| {},
            |rt, cfg| {
                let f = fake::FakeBackend::start(rt, max_data);
                cfg.backend = f.addr.clone();
                fake = Some(f);
                tweak(cfg);
            },
        );
        (h, fake.unwrap())
    }

    /// With a tweak of the CPU backend's configuration too.
    pub fn start_full(
        tag: &str,
        backend: impl FnOnce(&mut Config),
        tweak: impl FnOnce(&mut DeviceConfig),
    ) -> Harness {
        Self::start_rt(tag, backend, |_, cfg| tweak(cfg))
    }

    pub fn start_rt(
        tag: &str,
        backend_tweak: impl FnOnce(&mut Config),
        tweak: impl FnOnce(&tokio::runtime::Runtime, &mut DeviceConfig),
    ) -> Harness {
        Self::start_on(tag, |rt| start_backend_with(rt, backend_tweak), tweak)
    }

    /// A device whose backend is a CPU backend behind its own mutual-TLS listener serving
    /// `tenant` (configured by `backend_tweak`), and vdev's `[tls]` a hypervisor of that
    /// tenant; the PKI's files stay while it lives.
    pub fn start_tls(
        tag: &str,
        tenant: &str,
        backend_tweak: impl FnOnce(&mut Config),
        tweak: impl FnOnce(&mut DeviceConfig),
    ) -> (Harness, tls::Pki) {
        let pki = tls::Pki::new(tag);
        let client = pki.client(tenant);
        let h = Self::start_on(
            tag,
            |rt| tls::start_backend(rt, &pki, tenant, backend_tweak),
            |_, cfg| {
                cfg.transport.tls = Some(client);
                tweak(cfg);
            },
        );
        (h, pki)
    }

    /// A device whose backend `backend` starts on the harness's runtime.
    pub fn start_on(
        tag: &str,
        backend: impl FnOnce(&tokio::runtime::Runtime) -> Backend,
        tweak: impl FnOnce(&tokio::runtime::Runtime, &mut DeviceConfig),
    ) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = backend(&rt);
        let mut cfg = DeviceConfig {
            name: format!("test-{tag}"),
            backend: backend.addr.clone(),
            token: TOKEN.into(),
            ..DeviceConfig::default()
        };
        tweak(&rt, &mut cfg);
        let socket = socket_path(tag);
        let source = Source::bind(&socket).unwrap();
        let stop = Arc::new(EventFd::new(libc::EFD_CLOEXEC).unwrap());
        let mut device = Device::new(cfg, rt.handle().clone()).unwrap();
        let stop2 = Arc::clone(&stop);
        let server = std::thread::spawn(move || {
            netgpu_vdev::run(&mut device, source, &stop2, OnDisconnect::Wait).unwrap();
        });
        let client = Client::new(&socket).unwrap();
        let mem = memfd(MEM_SIZE);
        Harness {
            rt,
            backend,
            socket,
            stop,
            server: Some(server),
            client,
            mem,
        }
    }

    /// Drives a vdev that runs elsewhere (the `netgpu-vdev` binary) at `socket`.
    pub fn attach(socket: PathBuf, rt: tokio::runtime::Runtime, backend: Backend) -> Harness {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match Client::new(&socket) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot connect to {socket:?}: {e:?}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        Harness {
            rt,
            backend,
            socket,
            stop: Arc::new(EventFd::new(libc::EFD_CLOEXEC).unwrap()),
            server: None,
            client,
            mem: memfd(MEM_SIZE),
        }
    }

    pub fn read32(&mut self, region: u32, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.client.region_read(region, off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    pub fn write32(&mut self, region: u32, off: u64, v: u32) {
        self.client
            .region_write(region, off, &v.to_le_bytes())
            .unwrap();
    }

    pub fn write64(&mut self, region: u32, off: u64, v: u64) {
        self.client
            .region_write(region, off, &v.to_le_bytes())
            .unwrap();
    }

    /// Waits for `STATUS` to have `bit`.
    pub fn wait_status(&mut self, bit: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.read32(abi::REGS_BAR, reg::STATUS);
            if s & bit != 0 || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Maps the whole memfd at guest-physical 0.
    pub fn map_memory(&mut self) {
        self.client
            .dma_map(0, 0, MEM_SIZE, self.mem.as_raw_fd())
            .unwrap();
    }

    pub fn qreg(q: u32, field: u64) -> u64 {
        reg::QUEUE_REGS_BASE + u64::from(q) * reg::QUEUE_REGS_STRIDE + field
    }

    /// Programs and enables queue `q`; returns its STATUS.
    pub fn setup_queue(&mut self, q: u32, sq: u64, cq: u64, size: u32, vector: u32) -> u32 {
        self.write64(abi::REGS_BAR, Self::qreg(q, qreg::SQ_BASE), sq);
        self.write64(abi::REGS_BAR, Self::qreg(q, qreg::CQ_BASE), cq);
        self.write32(abi::REGS_BAR, Self::qreg(q, qreg::SIZE), size);
        self.write32(abi::REGS_BAR, Self::qreg(q, qreg::MSIX_VECTOR), vector);
        self.write32(abi::REGS_BAR, Self::qreg(q, qreg::ENABLE), 1);
        self.read32(abi::REGS_BAR, Self::qreg(q, qreg::STATUS))
    }

    pub fn put_command(&self, sq: u64, slot: u32, cmd: &Command) {
        self.mem
            .write_all_at(&cmd.to_bytes(), sq + u64::from(slot) * Command::SIZE as u64)
            .unwrap();
    }

    pub fn ring(&mut self, q: u32, tail: u32) {
        self.write32(
            abi::REGS_BAR,
            reg::DOORBELL_BASE + u64::from(q) * reg::DOORBELL_STRIDE,
            tail,
        );
    }

    pub fn completion(&self, cq: u64, slot: u32) -> Completion {
        let mut b = [0u8; Completion::SIZE];
        self.mem
            .read_exact_at(&mut b, cq + u64::from(slot) * Completion::SIZE as u64)
            .unwrap();
        Completion::from_bytes(&b)
    }

    /// Waits for the completion in `slot` to carry `phase`.
    pub fn wait_completion(&self, cq: u64, slot: u32, phase: bool) -> Completion {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.completion(cq, slot);
            if c.phase() == phase {
                return c;
            }
            assert!(Instant::now() < deadline, "no completion in slot {slot}");
            std::thread::yield_now();
        }
    }

    /// Runs `cmd` in `slot` of queue 0 (rings at `sq`/`cq`, first lap) and waits for it.
    pub fn run_first_lap(&mut self, sq: u64, cq: u64, slot: u32, cmd: &Command) -> Completion {
        self.put_command(sq, slot, cmd);
        self.ring(0, slot + 1);
        self.wait_completion(cq, slot, true)
    }

    /// Copies `src` to device memory `ptr` of `ctx` from one scatter-gather entry (slot 2),
    /// then back (slot 3) into 4 KiB guest pages named by an indirect table, as the module
    /// pins user memory; both must succeed. Returns what came back.
    pub fn copy_there_and_back_in_pages(
        &mut self,
        sq: u64,
        cq: u64,
        ctx: u64,
        ptr: u64,
        src: &[u8],
    ) -> Vec<u8> {
        const SRC: u64 = 0x10_0000;
        const TABLE: u64 = 0x40_000;
        const DST: u64 = 0x48_0000;
        let len = u32::try_from(src.len()).expect("a copy of less than 4 GiB");
        self.mem.write_all_at(src, SRC).unwrap();
        let c = self.run_first_lap(
            sq,
            cq,
            2,
            &Command::new(abi::op::MEMCPY_HTOD, 3, &[ctx, ptr, 0])
                .with_sg(&[abi::SgEntry::new(SRC, len)]),
        );
        assert_eq!(CuResult(c.result), CuResult::SUCCESS);
        let pages = len / 4096;
        let mut table = Vec::new();
        for i in 0..pages {
            table.extend_from_slice(
                &abi::SgEntry::device_write(DST + u64::from(i) * 4096, 4096).to_bytes(),
            );
        }
        self.mem.write_all_at(&table, TABLE).unwrap();
        let c = self.run_first_lap(
            sq,
            cq,
            3,
            &Command::new(abi::op::MEMCPY_DTOH, 4, &[ctx, ptr, 0]).with_indirect_sg(TABLE, pages),
        );
        assert_eq!(CuResult(c.result), CuResult::SUCCESS);
        assert_eq!(c.value0, u64::from(len));
        let mut back = vec![0u8; src.len()];
        self.mem.read_exact_at(&mut back, DST).unwrap();
        back
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.client.shutdown();
        let _ = self.stop.write(1);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Where call `slot`'s buffers lie in guest memory (each slot its own, so calls can be in
/// flight together): prefix, data (28 KiB), output (96 KiB).
fn call_area(slot: u32) -> (u64, u64, u64) {
    let base = 0x100_000 + u64::from(slot) * 0x20_000;
    (base, base + 0x1000, base + 0x8000)
}

/// Encodes `req` as the guest library would (`abi::codec`, wire requests allowed), lays its
/// buffers out as the kernel module would (outputs with DEVICE_WRITE) and submits it in
/// `slot` of the queue `q` whose ring is at `sq` (size 8); returns the command to decode the
/// completion with ([`Harness::finish_call`]).
pub fn submit_call(
    h: &mut Harness,
    q: u32,
    sq: u64,
    slot: u32,
    req: &netgpu_proto::wire::ops::Request,
    data: &[u8],
    out_len: u64,
) -> netgpu_proto::abi::codec::GuestCommand {
    use netgpu_proto::abi::codec::{self, EncodeOptions, GuestBuffer};
    use netgpu_proto::abi::SgEntry;
    let opts = EncodeOptions {
        wire: true,
        post: false,
    };
    let gc = codec::encode_request(req, data.len() as u64, out_len, opts).unwrap();
    let (prefix_at, data_at, out_at) = call_area(slot);
    let mut sg = Vec::new();
    for b in &gc.buffers {
        match *b {
            GuestBuffer::Prefix => {
                h.mem.write_all_at(&gc.prefix, prefix_at).unwrap();
                sg.push(SgEntry::new(prefix_at, gc.prefix.len() as u32));
            }
            GuestBuffer::Data => {
                h.mem.write_all_at(data, data_at).unwrap();
                sg.push(SgEntry::new(data_at, data.len() as u32));
            }
            GuestBuffer::Output => sg.push(SgEntry::device_write(out_at, out_len as u32)),
            GuestBuffer::Scratch(n) => sg.push(SgEntry::device_write(out_at, n as u32)),
        }
    }
    let mut cmd = gc.command.with_sg(&sg);
    cmd.cid = 100 + slot;
    h.put_command(sq, slot, &cmd);
    h.ring(q, (slot + 1) % 8);
    gc
}

impl Harness {
    /// Waits for the completion of the call in `slot` (ring at `cq`) and decodes it.
    pub fn finish_call(
        &self,
        cq: u64,
        slot: u32,
        gc: &netgpu_proto::abi::codec::GuestCommand,
    ) -> Result<netgpu_proto::abi::codec::GuestReply, netgpu_proto::cuda::CuResult> {
        use netgpu_proto::abi::codec::{self, GuestBuffer};
        let c = self.wait_completion(cq, slot, true);
        let room = gc
            .buffers
            .iter()
            .find_map(|b| match *b {
                GuestBuffer::Scratch(n) => Some(n as usize),
                _ => None,
            })
            .unwrap_or(0);
        let mut scratch = vec![0u8; room];
        self.mem
            .read_exact_at(&mut scratch, call_area(slot).2)
            .unwrap();
        codec::decode_completion(gc, &c, &scratch)
    }
}
