//! The wire protocol over a blocking TCP socket (no async runtime inside a user process).
//!
//! Replies come back in request order, so a call writes its frame (after any posted ones),
//! flushes, and reads frames until its own reply. A lost connection makes every later call
//! fail with `CUDA_ERROR_DEVICE_UNAVAILABLE`; nothing ever waits on a dead peer.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::frame::{FrameHeader, FrameKind, FLAG_NO_REPLY};
use netgpu_proto::wire::ops::{self, DeviceInfo, Reply, Request};
use netgpu_proto::wire::{HEADER_LEN, MAX_CTRL_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

use super::Transport;

struct Conn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    next_id: u64,
    ctrl: Vec<u8>,
    dead: bool,
}

pub struct TcpTransport {
    conn: Mutex<Conn>,
    max_data: u32,
    addr: String,
}

const LOST: CuResult = CuResult::DEVICE_UNAVAILABLE;

impl TcpTransport {
    pub fn connect(addr: &str, token: &str) -> Result<TcpTransport, CuResult> {
        let s = TcpStream::connect(addr).map_err(|e| {
            crate::log(&format!("cannot connect to backend {addr}: {e}"));
            CuResult::NO_DEVICE
        })?;
        let _ = s.set_nodelay(true);
        let w = s.try_clone().map_err(|_| CuResult::NO_DEVICE)?;
        let mut conn = Conn {
            r: BufReader::with_capacity(256 << 10, s),
            w: BufWriter::with_capacity(256 << 10, w),
            next_id: 1,
            ctrl: Vec::new(),
            dead: false,
        };
        let hello = Request::Hello {
            version_min: MIN_PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            token: token.to_string(),
            client: format!(
                "libcuda (netgpu {}) pid {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ),
            limits: Default::default(),
        };
        let _ = conn
            .r
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)));
        let reply = conn.call(&hello, &[], &mut []).map_err(|e| {
            crate::log(&format!("backend {addr} refused the session ({e})"));
            CuResult::NO_DEVICE
        })?;
        let _ = conn.r.get_ref().set_read_timeout(None);
        let Reply::Welcome { max_data_len, .. } = reply else {
            return Err(CuResult::NO_DEVICE);
        };
        Ok(TcpTransport {
            conn: Mutex::new(conn),
            max_data: max_data_len.max(4096),
            addr: addr.to_string(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Conn {
    fn write(&mut self, req: &Request, data: &[u8], flags: u8) -> Result<u64, CuResult> {
        if self.dead {
            return Err(LOST);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ctrl.clear();
        ops::encode_into(req, &mut self.ctrl).map_err(|_| CuResult::INVALID_VALUE)?;
        let len = u32::try_from(data.len()).map_err(|_| CuResult::INVALID_VALUE)?;
        let h = FrameHeader::request(id, flags, self.ctrl.len() as u32, len);
        let ok = self
            .w
            .write_all(&h.encode())
            .and_then(|_| self.w.write_all(&self.ctrl))
            .and_then(|_| self.w.write_all(data));
        if ok.is_err() {
            self.dead = true;
            return Err(LOST);
        }
        Ok(id)
    }

    fn call(&mut self, req: &Request, input: &[u8], output: &mut [u8]) -> Result<Reply, CuResult> {
        let id = self.write(req, input, 0)?;
        if self.w.flush().is_err() {
            self.dead = true;
            return Err(LOST);
        }
        match self.read_reply(id, output) {
            Ok(r) => r,
            Err(e) => {
                self.dead = true;
                Err(e)
            }
        }
    }

    /// Reads the reply to `id`. The outer error is a broken connection; the inner one the
    /// request's own CUDA result.
    fn read_reply(
        &mut self,
        id: u64,
        output: &mut [u8],
    ) -> Result<Result<Reply, CuResult>, CuResult> {
        let mut hdr = [0u8; HEADER_LEN];
        self.r.read_exact(&mut hdr).map_err(|_| LOST)?;
        let h = FrameHeader::decode(&hdr, MAX_CTRL_LEN, u32::MAX).map_err(|_| LOST)?;
        let mut ctrl = vec![0u8; h.ctrl_len as usize];
        self.r.read_exact(&mut ctrl).map_err(|_| LOST)?;
        if h.kind == FrameKind::Goodbye {
            if let Ok(Reply::Error(why)) = ops::decode::<Reply>(&ctrl) {
                crate::log(&format!("backend closed the session: {why}"));
            }
            return Err(LOST);
        }
        if h.kind != FrameKind::Reply || h.request_id != id {
            return Err(LOST);
        }
        if h.data_len != 0 {
            if h.data_len as usize != output.len() {
                return Err(LOST);
            }
            self.r.read_exact(output).map_err(|_| LOST)?;
        }
        if !h.status.is_success() {
            return Ok(Err(h.status));
        }
        let reply = if ctrl.is_empty() {
            Reply::Done
        } else {
            ops::decode(&ctrl).map_err(|_| LOST)?
        };
        Ok(Ok(reply))
    }
}

impl Transport for TcpTransport {
    fn call(&self, req: &Request, input: &[u8], output: &mut [u8]) -> Result<Reply, CuResult> {
        self.lock().call(req, input, output)
    }

    fn post(&self, req: &Request, input: &[u8]) -> Result<(), CuResult> {
        self.lock().write(req, input, FLAG_NO_REPLY).map(|_| ())
    }

    fn flush(&self) -> Result<(), CuResult> {
        let mut c = self.lock();
        if c.dead || c.w.flush().is_err() {
            c.dead = true;
            return Err(LOST);
        }
        Ok(())
    }

    fn device_query(&self) -> Result<DeviceInfo, CuResult> {
        match self.call(&Request::DeviceQuery, &[], &mut [])? {
            Reply::Device(d) => Ok(d),
            _ => Err(CuResult::UNKNOWN),
        }
    }

    fn max_transfer(&self) -> usize {
        self.max_data as usize
    }

    fn describe(&self) -> String {
        format!("backend {} (tcp)", self.addr)
    }
}
