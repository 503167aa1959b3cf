//! How the library reaches the GPU.
//!
//! Every driver call becomes a [`Request`] of the netgpu wire protocol, whatever carries it:
//! - [`device`]: `/dev/netgpuN`, the guest kernel module (the default in a VM). Requests are
//!   turned into the device's command descriptors; the module pins the buffers.
//! - [`tcp`]: the wire protocol straight to a backend (`NETGPU_BACKEND=host:port`), for hosts
//!   and containers, and for testing the library without a VM.
//!
//! Stream-ordered work is `post`ed: buffered and sent with the next `call` (or `flush`), so
//! a burst of launches and async copies costs one ioctl or one socket write.

pub mod config;
pub mod device;
pub mod tcp;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DeviceInfo, Reply, Request};

pub trait Transport: Send + Sync {
    /// Executes `req` and waits for its reply. `input` is its data (copy source, PTX image,
    /// parameters); reply data (a device-to-host copy, the device record) lands in `output`,
    /// which must have exactly the expected length.
    fn call(&self, req: &Request, input: &[u8], output: &mut [u8]) -> Result<Reply, CuResult>;
    /// Queues stream-ordered work; its failure is reported by a later synchronising call.
    fn post(&self, req: &Request, input: &[u8]) -> Result<(), CuResult>;
    /// A device-to-host read whose bytes land in `dst` when its reply arrives; the call
    /// returns at once. Every later synchronising call waits for it (and reports its
    /// failure). A transport that cannot do this waits here.
    ///
    /// # Safety
    /// `dst` must stay valid for `len` bytes, untouched by the program, until a later
    /// synchronising call returns.
    unsafe fn post_read(&self, req: &Request, dst: *mut u8, len: usize) -> Result<(), CuResult> {
        // SAFETY: the caller's buffer, valid for `len` bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        self.call(req, &[], out).map(|_| ())
    }
    /// Sends queued work now.
    fn flush(&self) -> Result<(), CuResult>;
    /// The remote GPU's description (`DeviceQuery`; each transport knows where its reply lands).
    fn device_query(&self) -> Result<DeviceInfo, CuResult>;
    /// Largest data one request may carry; the caller splits larger copies.
    fn max_transfer(&self) -> usize;
    /// For diagnostics: where this transport leads.
    fn describe(&self) -> String;
}

/// Picks the transport from the environment: a backend address (`NETGPU_BACKEND`, or
/// `backend` in the `NETGPU_CONFIG` file, see [`config`]) selects TCP, with TLS when a CA is
/// configured; otherwise `NETGPU_DEVICE` or `/dev/netgpu0`.
pub fn from_env() -> Result<Box<dyn Transport>, CuResult> {
    match config::tcp_from_env() {
        Err(why) => {
            crate::log(&why);
            return Err(CuResult::NO_DEVICE);
        }
        Ok(Some(c)) => {
            return Ok(Box::new(tcp::TcpTransport::connect(
                &c.addr,
                &c.token,
                c.tls.as_ref(),
                &c.net,
            )?))
        }
        Ok(None) => {}
    }
    let path = std::env::var("NETGPU_DEVICE").unwrap_or_else(|_| "/dev/netgpu0".into());
    Ok(Box::new(device::DeviceTransport::open(&path)?))
}
