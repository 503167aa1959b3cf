//! `/dev/netgpuN`: requests become the device's 128-byte command descriptors, submitted in
//! batches through the kernel module's `NETGPU_IOC_SUBMIT` ioctl. Data buffers are named by
//! their user virtual address; the module pins them and builds the guest-physical scatter
//! lists, so nothing here ever sees a physical address.
//!
//! What a request's descriptor holds is `netgpu_proto::abi::codec`'s to say (the one
//! translation, shared with vdev): [`codec::encode_request`] picks the fixed opcode or, on a
//! device that offers `FEATURE_WIRE_REQUEST` (ABI 1.1), `WIRE_REQUEST` for everything a fixed
//! opcode cannot express exactly (function attributes, several module parts, console reads,
//! the protocol-2 operations); this file only names the buffers and submits.
//!
//! Posted (stream-ordered) commands wait in a batch until the next call, a flush, or a full
//! batch. Their input is copied into the batch (as CUDA stages pageable memory), so the
//! caller may reuse its buffer at once. A completion flagged `CQE_FLAG_CONSOLE_PENDING`
//! makes the call read the kernels' console output (`ConsoleRead`) and write it to stdout.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use netgpu_proto::abi::codec::{self, EncodeOptions, GuestBuffer, GuestCommand};
use netgpu_proto::abi::{self, uapi, Command, Completion, SgEntry};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DeviceInfo, Reply, Request};

use super::ioctl::{self, Reaped, Slot};
use super::Transport;

/// Largest console chunk read at once.
const CONSOLE_CHUNK: u32 = 64 * 1024;
/// Byte offset of `features` in `struct netgpu_ioc_info`.
const INFO_FEATURES: usize = 52;

/// The buffers a command names, kept alive (and in place) until it completed.
#[derive(Default)]
struct Buffers {
    prefix: Vec<u8>,
    /// A posted command's copy of its input.
    data: Vec<u8>,
    scratch: Vec<u8>,
}

#[derive(Default)]
struct Batch {
    cmds: Vec<Slot>,
    /// The buffers of the posted commands; their heap storage stays put until the batch is
    /// submitted.
    owned: Vec<Buffers>,
    /// Posted commands queued on the device (non-blocking mode) and not reaped yet, by
    /// sequence number, with their buffers.
    inflight: Vec<(u64, Buffers)>,
    /// First failure of posted work submitted without a call.
    deferred: Option<CuResult>,
}

pub struct DeviceTransport {
    file: File,
    path: String,
    /// The device takes `WIRE_REQUEST` (negotiated by the module).
    wire: bool,
    batch: Mutex<Batch>,
    /// A completion said the backend holds console output nobody read.
    console: AtomicBool,
    /// The module takes `NETGPU_IOC_QUEUE`/`WAIT`: a call queues under the batch lock (so
    /// posted work keeps its order) and waits for its own command without it, so one
    /// thread's long synchronisation does not hold up another thread's calls.
    nonblocking: bool,
}

impl DeviceTransport {
    pub fn open(path: &str) -> Result<DeviceTransport, CuResult> {
        let file = File::options().read(true).write(true).open(path).map_err(|e| {
            crate::log(&format!("cannot open {path}: {e} (is the netgpu module loaded, and are you in its group?)"));
            CuResult::NO_DEVICE
        })?;
        let mut info = [0u8; uapi::INFO_SIZE];
        // SAFETY: `info` is a writable struct netgpu_ioc_info (INFO_SIZE bytes, checked by the
        // ABI test against the C header).
        let r = unsafe { libc::ioctl(file.as_raw_fd(), uapi::IOC_INFO as _, info.as_mut_ptr()) };
        let features = if r == 0 {
            let b: [u8; 4] = info[INFO_FEATURES..INFO_FEATURES + 4]
                .try_into()
                .map_err(|_| CuResult::UNKNOWN)?;
            u64::from(u32::from_le_bytes(b))
        } else {
            crate::log(&format!(
                "{path}: NETGPU_IOC_INFO failed: {}",
                std::io::Error::last_os_error()
            ));
            0
        };
        let mut t = DeviceTransport {
            file,
            path: path.to_string(),
            wire: features & abi::FEATURE_WIRE_REQUEST != 0,
            batch: Mutex::new(Batch::default()),
            console: AtomicBool::new(false),
            nonblocking: false,
        };
        t.nonblocking = t.probe_queue();
        Ok(t)
    }

    /// Whether `QUEUE` and `WAIT` work: one `NOP` through them.
    fn probe_queue(&self) -> bool {
        let nop = Command::new(abi::op::NOP, 0, &[]);
        let mut cmds = [slot(&nop)];
        let fd = self.file.as_raw_fd();
        match ioctl::queue(fd, &mut cmds) {
            Ok(seq) => matches!(
                ioctl::wait(fd, &[seq], true).as_deref(),
                Ok([Reaped::Done(_)])
            ),
            Err(_) => false,
        }
    }

    fn errno_result(&self, errno: i32) -> CuResult {
        match errno {
            libc::EINVAL | libc::EFAULT | libc::E2BIG => CuResult::INVALID_VALUE,
            libc::ENOMEM => CuResult::OUT_OF_MEMORY,
            _ => {
                crate::log(&format!(
                    "{}: {}",
                    self.path,
                    std::io::Error::from_raw_os_error(errno)
                ));
                CuResult::DEVICE_UNAVAILABLE
            }
        }
    }

    fn note(&self, c: &Completion) {
        if c.flags & abi::CQE_FLAG_CONSOLE_PENDING != 0 {
            self.console.store(true, Ordering::Release);
        }
    }

    /// Queues `cmds` (at most `MAX_BATCH`) with the batch lock held; the sequence number of
    /// the first. A full queue is drained of posted commands first.
    fn queue(&self, b: &mut Batch, cmds: &mut [Slot]) -> Result<u64, CuResult> {
        let fd = self.file.as_raw_fd();
        loop {
            match ioctl::queue(fd, cmds) {
                Ok(seq) => return Ok(seq),
                Err(libc::EAGAIN) if !b.inflight.is_empty() => {
                    let all = std::mem::take(&mut b.inflight);
                    let (left, err) = self.reap(all, true)?;
                    b.inflight = left;
                    if let Some(e) = err {
                        b.deferred.get_or_insert(e);
                    }
                }
                Err(e) => return Err(self.errno_result(e)),
            }
        }
    }

    /// Reaps posted commands (blocking or not); returns those still pending and the first
    /// failure among the others.
    #[allow(clippy::type_complexity)]
    fn reap(
        &self,
        cmds: Vec<(u64, Buffers)>,
        block: bool,
    ) -> Result<(Vec<(u64, Buffers)>, Option<CuResult>), CuResult> {
        if cmds.is_empty() {
            return Ok((cmds, None));
        }
        let seqs: Vec<u64> = cmds.iter().map(|(s, _)| *s).collect();
        let states =
            ioctl::wait(self.file.as_raw_fd(), &seqs, block).map_err(|e| self.errno_result(e))?;
        let mut left = Vec::new();
        let mut err = None;
        for (c, st) in cmds.into_iter().zip(states) {
            match st {
                Reaped::Done(cpl) => {
                    self.note(&cpl);
                    if cpl.result != 0 {
                        err.get_or_insert(CuResult(cpl.result));
                    }
                }
                Reaped::Pending => left.push(c),
                Reaped::Lost => {
                    err.get_or_insert(CuResult::DEVICE_UNAVAILABLE);
                }
            }
        }
        Ok((left, err))
    }

    /// Queues the posted batch (non-blocking mode) and reaps what already completed.
    fn send_batch(&self, b: &mut Batch) -> Result<(), CuResult> {
        if b.cmds.is_empty() {
            return Ok(());
        }
        let mut cmds = std::mem::take(&mut b.cmds);
        let owned = std::mem::take(&mut b.owned);
        let seq = self.queue(b, &mut cmds)?;
        b.inflight.extend(
            owned
                .into_iter()
                .enumerate()
                .map(|(i, o)| (seq + i as u64, o)),
        );
        let all = std::mem::take(&mut b.inflight);
        let (left, err) = self.reap(all, false)?;
        b.inflight = left;
        if let Some(e) = err {
            b.deferred.get_or_insert(e);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits `cmds` and waits for them; returns their completions.
    fn submit(&self, cmds: &mut [Slot]) -> Result<Vec<Completion>, CuResult> {
        let mut done = Vec::with_capacity(cmds.len());
        for chunk in cmds.chunks_mut(uapi::MAX_BATCH as usize) {
            crate::stats::round_trip();
            let got =
                ioctl::submit(self.file.as_raw_fd(), chunk).map_err(|e| self.errno_result(e))?;
            for c in &got {
                self.note(c);
            }
            done.extend(got);
        }
        Ok(done)
    }

    fn encode(
        &self,
        req: &Request,
        data_len: usize,
        out_len: usize,
        post: bool,
    ) -> Result<GuestCommand, CuResult> {
        let opts = EncodeOptions {
            wire: self.wire,
            post,
        };
        codec::encode_request(req, data_len as u64, out_len as u64, opts)
    }

    /// Writes pending kernel console output to stdout.
    fn drain_console(&self) {
        while self.console.swap(false, Ordering::AcqRel) {
            let mut buf = vec![0u8; CONSOLE_CHUNK as usize];
            let req = Request::ConsoleRead { max: CONSOLE_CHUNK };
            let Ok(n) = self.exchange(&req, &[], Out::Upto(&mut buf)) else {
                return;
            };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf[..n.min(buf.len())]);
            let _ = out.flush();
        }
    }

    /// Submits the queued posted commands and `req`; returns `req`'s reply and how many
    /// bytes of reply data landed in `out`.
    fn exchange(&self, req: &Request, input: &[u8], out: Out<'_>) -> Result<usize, CuResult> {
        self.exchange_reply(req, input, out).map(|(_, n)| n)
    }

    /// Non-blocking mode: queues the posted batch and `cmd` under the lock, waits for `cmd`
    /// without it, then reaps the posted commands queued before it (waiting for them when
    /// `sync`: a synchronising call reports their failures). `cmd`'s completion and the first
    /// failure of posted work.
    fn queue_and_wait(
        &self,
        cmd: &Command,
        sync: bool,
    ) -> Result<(Completion, Option<CuResult>), CuResult> {
        let fd = self.file.as_raw_fd();
        let mut b = self.lock();
        let mut cmds = std::mem::take(&mut b.cmds);
        let owned = std::mem::take(&mut b.owned);
        cmds.push(slot(cmd));
        crate::stats::round_trip();
        let seq = self.queue(&mut b, &mut cmds)?;
        b.inflight.extend(
            owned
                .into_iter()
                .enumerate()
                .map(|(i, o)| (seq + i as u64, o)),
        );
        let own = seq + (cmds.len() as u64 - 1);
        drop(b);
        let cpl = match ioctl::wait(fd, &[own], true)
            .map_err(|e| self.errno_result(e))?
            .pop()
        {
            Some(Reaped::Done(c)) => c,
            _ => return Err(CuResult::DEVICE_UNAVAILABLE),
        };
        self.note(&cpl);
        let mut b = self.lock();
        let all = std::mem::take(&mut b.inflight);
        let (mine, later): (Vec<_>, Vec<_>) = all.into_iter().partition(|(s, _)| *s < own);
        b.inflight = later;
        drop(b);
        let (left, err) = self.reap(mine, sync)?;
        let mut b = self.lock();
        b.inflight.extend(left);
        let err = b.deferred.take().or(err);
        Ok((cpl, err))
    }

    fn exchange_reply(
        &self,
        req: &Request,
        input: &[u8],
        out: Out<'_>,
    ) -> Result<(Reply, usize), CuResult> {
        let (output, exact) = match out {
            Out::Exact(o) => (o, true),
            Out::Upto(o) => (o, false),
        };
        // A fixed device-to-host copy lands in the caller's buffer; a reply with data (a
        // console read, a packed 3D copy) lands in scratch space and is copied out.
        let out_len = if exact { output.len() } else { 0 };
        let gc = self.encode(req, input.len(), out_len, false)?;
        let mut bufs = Buffers {
            prefix: gc.prefix.clone(),
            ..Buffers::default()
        };
        let cmd = command(&gc, &mut bufs, input, output)?;
        let (own, posted_err) = if self.nonblocking {
            self.queue_and_wait(&cmd, req.is_synchronising(false))?
        } else {
            let mut b = self.lock();
            let mut cmds = std::mem::take(&mut b.cmds);
            cmds.push(slot(&cmd));
            let result = self.submit(&mut cmds);
            let deferred = b.deferred.take();
            b.owned.clear();
            drop(b);
            let done = result?;
            let (own, posted) = done.split_last().ok_or(CuResult::UNKNOWN)?;
            let posted_err = deferred.or_else(|| {
                posted
                    .iter()
                    .find(|c| c.result != 0)
                    .map(|c| CuResult(c.result))
            });
            (*own, posted_err)
        };
        let own = &own;
        if let Some(e) = posted_err {
            if req.is_synchronising(false) {
                return Err(e);
            }
            self.lock().deferred.get_or_insert(e);
        }
        let reply = codec::decode_completion(&gc, own, &bufs.scratch)?;
        let data = bufs.scratch.get(reply.data.clone()).unwrap_or(&[]);
        if reply.console_pending {
            self.console.store(true, Ordering::Release);
        }
        let n = if data.is_empty() {
            if exact {
                output.len()
            } else {
                0
            }
        } else {
            if data.len() > output.len() || (exact && data.len() != output.len()) {
                return Err(CuResult::UNKNOWN);
            }
            output[..data.len()].copy_from_slice(data);
            data.len()
        };
        Ok((reply.reply, n))
    }
}

/// Where a call's reply data goes: it must fill the buffer (a copy), or may be shorter (a
/// console read).
enum Out<'a> {
    Exact(&'a mut [u8]),
    Upto(&'a mut [u8]),
}

/// The smallest page size Linux uses. The module pins a buffer page by page and may need one
/// scatter entry per page (pages the program never wrote, or memory fragmented over time, are
/// physically scattered); larger pages only mean fewer entries.
const MIN_PAGE_SIZE: usize = 4096;

/// Scatter entries a buffer of `len` bytes may need at worst: one per page it touches.
const fn worst_case_entries(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.div_ceil(MIN_PAGE_SIZE) + 1
    }
}

/// The largest data section one command carries whatever the memory behind it: the device's
/// byte limit and its scatter-entry limit, both less room for a `WIRE_REQUEST`'s control
/// sections (a request's and its reply's) and for the data buffers' unaligned ends (an input
/// and an output split anywhere touch at most three pages more than their bytes fill). Larger
/// copies are split by the callers into sections this large.
const fn max_data_section() -> usize {
    let bytes = abi::MAX_TRANSFER as usize
        - netgpu_proto::wire::MAX_CTRL_LEN as usize
        - codec::REPLY_CTRL_SMALL as usize;
    let entries = abi::MAX_SG_ENTRIES as usize
        - worst_case_entries(netgpu_proto::wire::MAX_CTRL_LEN as usize)
        - worst_case_entries(codec::REPLY_CTRL_SMALL as usize)
        - 3;
    let by_entries = entries * MIN_PAGE_SIZE;
    if by_entries < bytes {
        by_entries
    } else {
        bytes
    }
}

fn slot(cmd: &Command) -> Slot {
    let mut s = [0u8; uapi::CMD_SIZE];
    s[..Command::SIZE].copy_from_slice(&cmd.to_bytes());
    s
}

fn entry(cmd: &mut Command, ptr: *const u8, len: usize) -> Result<(), CuResult> {
    let i = cmd.sg_count as usize;
    let e = cmd.sg.get_mut(i).ok_or(CuResult::INVALID_VALUE)?;
    *e = SgEntry {
        addr: ptr as u64,
        len: u32::try_from(len).map_err(|_| CuResult::INVALID_VALUE)?,
        flags: 0,
    };
    cmd.sg_count += 1;
    Ok(())
}

/// `gc`'s descriptor with its buffers named by user address, in the order the codec lists
/// them: the prefix (kept in `bufs`), `input`, `output`, scratch space (made in `bufs`).
fn command(
    gc: &GuestCommand,
    bufs: &mut Buffers,
    input: &[u8],
    output: &mut [u8],
) -> Result<Command, CuResult> {
    let mut c = gc.command;
    c.sg_count = 0;
    c.sg = Default::default();
    if let Some(GuestBuffer::Scratch(n)) = gc.buffers.iter().find(|b| b.is_output()) {
        let n = usize::try_from(*n).map_err(|_| CuResult::INVALID_VALUE)?;
        if n > abi::MAX_TRANSFER as usize + codec::REPLY_CTRL_SMALL as usize {
            return Err(CuResult::INVALID_VALUE);
        }
        bufs.scratch = vec![0u8; n];
    }
    for b in &gc.buffers {
        match b {
            GuestBuffer::Prefix => entry(&mut c, bufs.prefix.as_ptr(), bufs.prefix.len())?,
            GuestBuffer::Data => entry(&mut c, input.as_ptr(), input.len())?,
            GuestBuffer::Output => entry(&mut c, output.as_mut_ptr(), output.len())?,
            GuestBuffer::Scratch(_) => {
                entry(&mut c, bufs.scratch.as_mut_ptr(), bufs.scratch.len())?
            }
        }
    }
    Ok(c)
}

impl Transport for DeviceTransport {
    fn call(&self, req: &Request, input: &[u8], output: &mut [u8]) -> Result<Reply, CuResult> {
        let r = self.exchange_reply(req, input, Out::Exact(output));
        if self.console.load(Ordering::Acquire) && !matches!(req, Request::ConsoleRead { .. }) {
            self.drain_console();
        }
        r.map(|(reply, _)| reply)
    }

    fn post(&self, req: &Request, input: &[u8]) -> Result<(), CuResult> {
        let gc = self.encode(req, input.len(), 0, true)?;
        let mut bufs = Buffers {
            prefix: gc.prefix.clone(),
            data: input.to_vec(),
            scratch: Vec::new(),
        };
        let data = std::mem::take(&mut bufs.data);
        let cmd = command(&gc, &mut bufs, &data, &mut [])?;
        bufs.data = data;
        let mut b = self.lock();
        crate::stats::posted();
        b.cmds.push(slot(&cmd));
        b.owned.push(bufs);
        if b.cmds.len() >= uapi::MAX_BATCH as usize - 1 && self.nonblocking {
            return self.send_batch(&mut b);
        }
        if b.cmds.len() >= uapi::MAX_BATCH as usize - 1 {
            let mut cmds = std::mem::take(&mut b.cmds);
            let r = self.submit(&mut cmds);
            b.owned.clear();
            match r {
                Ok(done) => {
                    if let Some(c) = done.iter().find(|c| c.result != 0) {
                        b.deferred.get_or_insert(CuResult(c.result));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), CuResult> {
        let mut b = self.lock();
        if b.cmds.is_empty() {
            return Ok(());
        }
        if self.nonblocking {
            return self.send_batch(&mut b);
        }
        let mut cmds = std::mem::take(&mut b.cmds);
        let r = self.submit(&mut cmds);
        b.owned.clear();
        let done = r?;
        if let Some(c) = done.iter().find(|c| c.result != 0) {
            b.deferred.get_or_insert(CuResult(c.result));
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
        max_data_section()
    }

    fn describe(&self) -> String {
        format!("{} (netgpu kernel module)", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netgpu_proto::abi::codec::Decoded;
    use netgpu_proto::abi::op;
    use netgpu_proto::wire::ops::{self, FunctionInfo, ParamInfo};

    /// What vdev does with a descriptor this file built (the codec's device side), answered
    /// with `reply` (+ `data`) by a backend; returns the request vdev forwarded and what the
    /// library makes of the completion.
    fn through_device(
        req: &Request,
        input: &[u8],
        output: &mut [u8],
        wire: bool,
        reply: &Reply,
        data: &[u8],
    ) -> (Request, Result<(Reply, Vec<u8>), CuResult>) {
        let out_len = output.len();
        let gc = codec::encode_request(
            req,
            input.len() as u64,
            out_len as u64,
            EncodeOptions { wire, post: false },
        )
        .unwrap();
        let mut bufs = Buffers {
            prefix: gc.prefix.clone(),
            ..Buffers::default()
        };
        let c = command(&gc, &mut bufs, input, output).unwrap();
        // The module hands vdev the buffers in descriptor order; inputs first.
        let spans: Vec<(u64, u32)> = c.sg[..c.sg_count as usize]
            .iter()
            .map(|e| (e.addr, e.len))
            .collect();
        let n_in = gc.buffers.iter().filter(|b| !b.is_output()).count();
        let read = |(a, n): (u64, u32)| -> Vec<u8> {
            // SAFETY: the entries name live buffers of this test.
            unsafe { std::slice::from_raw_parts(a as *const u8, n as usize) }.to_vec()
        };
        let inputs: Vec<u8> = spans[..n_in].iter().flat_map(|s| read(*s)).collect();
        let out_room: u64 = spans[n_in..].iter().map(|s| u64::from(s.1)).sum();
        let prefix_len = codec::prefix_len(&c, inputs.len() as u64).unwrap();
        let Decoded::Forward(d) =
            codec::decode(&c, inputs.len() as u64, out_room, &inputs[..prefix_len]).unwrap()
        else {
            panic!("not forwarded")
        };
        let ctrl = ops::encode(reply).unwrap();
        let r = codec::encode_reply(
            d.form,
            CuResult::SUCCESS,
            &ctrl,
            data.len() as u64,
            out_room,
        )
        .unwrap();
        if let Some(&(addr, len)) = spans.get(n_in) {
            let mut bytes = r.output.clone();
            if !data.is_empty() {
                bytes.resize(r.data_at as usize, 0);
                bytes.extend_from_slice(data);
            }
            assert!(bytes.len() <= len as usize);
            // SAFETY: the output entry names a live writable buffer of `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
        }
        let cpl = Completion {
            result: r.result.0,
            value0: r.value0,
            value1: r.value1,
            ..Default::default()
        };
        let got = codec::decode_completion(&gc, &cpl, &bufs.scratch).map(|g| {
            let data = bufs.scratch[g.data.clone()].to_vec();
            (g.reply, data)
        });
        (d.request, got)
    }

    fn function(attributes: Vec<(u32, i32)>) -> FunctionInfo {
        FunctionInfo {
            handle: 77,
            params: vec![
                ParamInfo { offset: 0, size: 8 },
                ParamInfo { offset: 8, size: 4 },
            ],
            param_buffer_size: 12,
            attributes,
        }
    }

    #[test]
    fn a_launch_is_the_fixed_opcode_with_its_parameters_as_the_one_input() {
        let params = [7u8; 12];
        let req = Request::LaunchKernel {
            func: 9,
            grid: [1, 2, 3],
            block: [32, 4, 1],
            shared_mem_bytes: 64,
            stream: 5,
            flags: 0,
        };
        for wire in [false, true] {
            let gc =
                codec::encode_request(&req, 12, 0, EncodeOptions { wire, post: true }).unwrap();
            let mut bufs = Buffers::default();
            let c = command(&gc, &mut bufs, &params, &mut []).unwrap();
            assert_eq!(c.opcode, op::LAUNCH_KERNEL);
            assert_ne!(c.flags & abi::CMD_FLAG_ASYNC, 0);
            assert_eq!(c.sg_count, 1);
            assert_eq!((c.sg[0].addr, c.sg[0].len), (params.as_ptr() as u64, 12));
        }
    }

    #[test]
    fn function_attributes_come_through_the_wire_request_and_not_the_fixed_table() {
        let req = Request::ModuleGetFunction {
            module: 3,
            name: "vector_add".into(),
        };
        let attrs = vec![(0, 128), (9, 90)];
        let reply = Reply::Function(function(attrs.clone()));
        let (fwd, got) = through_device(&req, &[], &mut [], true, &reply, &[]);
        assert_eq!(fwd, req);
        assert_eq!(got.unwrap().0, Reply::Function(function(attrs)));
        // Without the feature: the fixed opcode, whose table has no attributes.
        let (fwd, got) = through_device(&req, &[], &mut [], false, &reply, &[]);
        assert_eq!(fwd, req);
        assert_eq!(got.unwrap().0, Reply::Function(function(vec![])));
    }

    #[test]
    fn module_parts_console_reads_and_protocol_2_requests_travel_whole() {
        let image = vec![1u8; 300];
        let req = Request::ModuleLoad {
            ctx: 1,
            parts: vec![100, 200],
        };
        let (fwd, got) = through_device(&req, &image, &mut [], true, &Reply::Handle(5), &[]);
        assert_eq!(fwd, req);
        assert_eq!(got.unwrap().0, Reply::Handle(5));
        let req = Request::ConsoleRead { max: 4096 };
        let (fwd, got) = through_device(&req, &[], &mut [], true, &Reply::Done, b"hello\n");
        assert_eq!(fwd, req);
        assert_eq!(got.unwrap(), (Reply::Done, b"hello\n".to_vec()));
        let req = Request::StreamWaitEvent {
            stream: 2,
            event: 3,
        };
        let (fwd, _) = through_device(&req, &[], &mut [], true, &Reply::Done, &[]);
        assert_eq!(fwd, req);
        // A device without WIRE_REQUEST: a clear NOT_SUPPORTED (optional.rs falls back).
        assert_eq!(
            codec::encode_request(
                &req,
                0,
                0,
                EncodeOptions {
                    wire: false,
                    post: false
                }
            )
            .err(),
            Some(CuResult::NOT_SUPPORTED)
        );
    }

    #[test]
    fn a_device_to_host_copy_lands_in_the_callers_buffer() {
        let mut out = [0u8; 16];
        let req = Request::MemcpyDtoH {
            ctx: 1,
            src: 0x1000,
            len: 16,
            stream: 0,
        };
        let gc = codec::encode_request(
            &req,
            0,
            16,
            EncodeOptions {
                wire: true,
                post: false,
            },
        )
        .unwrap();
        let mut bufs = Buffers::default();
        let c = command(&gc, &mut bufs, &[], &mut out).unwrap();
        assert_eq!(c.opcode, op::MEMCPY_DTOH);
        assert_eq!((c.sg[0].addr, c.sg[0].len), (out.as_ptr() as u64, 16));
    }

    #[test]
    fn error_completions_become_cuda_errors() {
        let req = Request::MemAlloc { ctx: 1, size: 1 };
        let gc = codec::encode_request(
            &req,
            0,
            0,
            EncodeOptions {
                wire: true,
                post: false,
            },
        )
        .unwrap();
        let c = Completion {
            result: 2,
            ..Default::default()
        };
        assert_eq!(
            codec::decode_completion(&gc, &c, &[]).err(),
            Some(CuResult::OUT_OF_MEMORY)
        );
    }

    /// CI found a 32 MiB copy from never-written (calloc) memory refused with E2BIG: its 8192
    /// pinned pages were 8192 scatter entries, over the device's 4096.
    #[test]
    fn a_full_data_section_fits_the_scatter_limit_in_single_pages() {
        let max = max_data_section();
        let worst = worst_case_entries(netgpu_proto::wire::MAX_CTRL_LEN as usize)
            + worst_case_entries(max + codec::REPLY_CTRL_SMALL as usize)
            + 1;
        assert!(worst <= abi::MAX_SG_ENTRIES as usize, "{worst} entries");
        let both = worst_case_entries(netgpu_proto::wire::MAX_CTRL_LEN as usize)
            + worst_case_entries(max / 2)
            + worst_case_entries(max - max / 2)
            + worst_case_entries(codec::REPLY_CTRL_SMALL as usize);
        assert!(both <= abi::MAX_SG_ENTRIES as usize, "{both} entries");
        assert!(max >= 15 << 20, "sections stay large: {max}");
        assert!(max + 64 * 1024 + 64 <= abi::MAX_TRANSFER as usize);
    }

    #[test]
    fn a_missing_device_node_is_no_device() {
        assert_eq!(
            DeviceTransport::open("/nonexistent/netgpu0").err(),
            Some(CuResult::NO_DEVICE)
        );
    }
}
