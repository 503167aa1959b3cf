//! The vfio-user message loop.
//!
//! Why our own loop instead of `vfio_user::Server::run` (0.1.7): that loop serves one
//! connection and then returns, cannot be interrupted (no SIGTERM, no way back to accept),
//! answers `GET_REGION_IO_FDS`/`DMA_READ`/`DMA_WRITE` with "unsupported", panics on a
//! `VERSION` message whose size is smaller than its struct or whose capabilities lack a NUL,
//! allocates whatever `count` a `REGION_READ` names, and on an error reply leaves the unread
//! rest of the message in the socket (the next read is garbage). Its message structs are
//! private, so the loop here parses messages with [`crate::protocol`]. It reads a whole
//! message before acting on it, bounds every size, answers errors with an errno reply, never
//! replies to `NO_REPLY` messages, and polls a shutdown eventfd next to the socket.
//!
//! Nothing in here waits on the network: region writes go to [`crate::device::Device`],
//! whose doorbells only wake queue workers.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libc::{c_void, iovec};
use netgpu_proto::abi;
use thiserror::Error;
use tracing::{debug, info, warn};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::config_space::CONFIG_SPACE_SIZE;
use crate::device::Device;
use crate::protocol::{self as p, cmd, Header, Out, HEADER_LEN};

#[derive(Debug, Error)]
pub enum Error {
    #[error("socket path {0} is in use by a live server")]
    InUse(PathBuf),
    #[error("cannot bind {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot accept a connection")]
    Accept(#[source] std::io::Error),
    #[error("poll failed")]
    Poll(#[source] std::io::Error),
    #[error("socket I/O failed")]
    Io(#[source] std::io::Error),
    #[error("cannot receive a message")]
    Recv(#[source] vmm_sys_util::errno::Error),
    #[error("cannot send a reply")]
    Send(#[source] vmm_sys_util::errno::Error),
    #[error("protocol violation")]
    Protocol(#[source] p::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What to do when the client disconnects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    /// Free everything and wait for the next connection.
    #[default]
    Wait,
    /// Free everything and exit.
    Exit,
}

/// Where connections come from.
pub enum Source {
    Listener(UnixListener, Option<PathBuf>),
    /// An already connected socket (e.g. passed with `--fd`); served once.
    Connected(Option<UnixStream>),
}

impl Source {
    /// Binds `path`. A stale socket file (nobody listening) is replaced.
    pub fn bind(path: &Path) -> Result<Self> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let l = UnixListener::bind(path).map_err(|source| Error::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Source::Listener(l, Some(path.to_path_buf())))
    }

    /// Uses an inherited socket: a listening socket is accepted on, a connected one served.
    pub fn from_fd(fd: OwnedFd) -> Self {
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: fd is a valid descriptor we own; the out pointers are valid and sized.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 && listening != 0 {
            Source::Listener(UnixListener::from(fd), None)
        } else {
            Source::Connected(Some(UnixStream::from(fd)))
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Listener(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Waits until `fd` is readable or `stop` is signalled; returns false on stop.
fn wait_readable(fd: RawFd, stop: &EventFd) -> Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a valid array of two initialised pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Poll(e));
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

/// Serves clients from `source` until `stop` is signalled (or, with
/// [`OnDisconnect::Exit`], until the first client leaves).
pub fn run(
    device: &mut Device,
    mut source: Source,
    stop: &EventFd,
    on_disconnect: OnDisconnect,
) -> Result<()> {
    loop {
        let stream = match &mut source {
            Source::Listener(l, _) => {
                if !wait_readable(l.as_raw_fd(), stop)? {
                    return Ok(());
                }
                l.accept().map_err(Error::Accept)?.0
            }
            Source::Connected(s) => match s.take() {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        info!(device = %device.name(), "client connected");
        device.start();
        let r = serve(device, stream, stop);
        device.disconnect();
        match r {
            Ok(true) => {
                info!(device = %device.name(), "client disconnected; device state freed");
            }
            Ok(false) => return Ok(()), // stop requested
            Err(e) => warn!(device = %device.name(), "dropped client: {e}"),
        }
        if on_disconnect == OnDisconnect::Exit {
            return Ok(());
        }
    }
}

/// Serves one connection. Returns `Ok(true)` when the client left, `Ok(false)` on stop.
pub fn serve(device: &mut Device, mut stream: UnixStream, stop: &EventFd) -> Result<bool> {
    // A client that stalls mid-message is dropped rather than hanging the loop.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        if !wait_readable(stream.as_raw_fd(), stop)? {
            return Ok(false);
        }
        let mut hdr = [0u8; HEADER_LEN];
        let mut raw_fds = [-1 as RawFd; p::MAX_MSG_FDS as usize];
        let mut iov = [iovec {
            iov_base: hdr.as_mut_ptr().cast::<c_void>(),
            iov_len: HEADER_LEN,
        }];
        // SAFETY: the iovec points at `hdr`, which outlives the call, and `raw_fds` has room
        // for the descriptors the call may store.
        let (n, nfds) =
            unsafe { stream.recv_with_fds(&mut iov, &mut raw_fds) }.map_err(Error::Recv)?;
        // SAFETY: recvmsg stored `nfds` new descriptors that nothing else owns.
        let fds: Vec<File> = raw_fds[..nfds]
            .iter()
            .map(|&fd| unsafe { File::from_raw_fd(fd) })
            .collect();
        if n == 0 {
            return Ok(true);
        }
        if n < HEADER_LEN {
            stream.read_exact(&mut hdr[n..]).map_err(Error::Io)?;
        }
        let header = Header::from_bytes(&hdr);
        let body_len = header.body_len().map_err(Error::Protocol)?;
        let mut body = vec![0u8; body_len];
        stream.read_exact(&mut body).map_err(Error::Io)?;
        handle(device, &mut stream, header, &body, fds)?;
    }
}

enum Reply {
    /// Header plus body.
    Body(Vec<u8>),
    /// Header plus body, with a descriptor.
    BodyFd(Vec<u8>, RawFd),
    Errno(i32),
}

fn send(stream: &mut UnixStream, header: &Header, reply: Reply) -> Result<()> {
    if header.no_reply() {
        if let Reply::Errno(e) = reply {
            warn!(
                command = header.command,
                errno = e,
                "no-reply message failed"
            );
        }
        return Ok(());
    }
    match reply {
        Reply::Body(body) => {
            let mut msg = header.reply(body.len()).to_bytes().to_vec();
            msg.extend_from_slice(&body);
            stream.write_all(&msg).map_err(Error::Io)
        }
        Reply::BodyFd(body, fd) => {
            let mut msg = header.reply(body.len()).to_bytes().to_vec();
            msg.extend_from_slice(&body);
            let sent = stream
                .send_with_fds(&[&msg[..]], &[fd])
                .map_err(Error::Send)?;
            if sent < msg.len() {
                stream.write_all(&msg[sent..]).map_err(Error::Io)?;
            }
            Ok(())
        }
        Reply::Errno(e) => stream
            .write_all(&header.error_reply(e).to_bytes())
            .map_err(Error::Io),
    }
}

fn region_size(region: u32) -> u64 {
    match region {
        abi::REGS_BAR => abi::REGS_BAR_SIZE,
        abi::DOORBELL_BAR => abi::DOORBELL_BAR_SIZE,
        abi::MSIX_BAR => abi::MSIX_BAR_SIZE,
        p::PCI_CONFIG_REGION => CONFIG_SPACE_SIZE as u64,
        _ => 0,
    }
}

fn capabilities_json() -> String {
    serde_json::json!({
        "capabilities": {
            "max_msg_fds": p::MAX_MSG_FDS,
            "max_data_xfer_size": p::MAX_DATA_XFER,
            "pgsizes": 4096,
            "max_dma_maps": crate::memory::MAX_MAPPINGS,
            "migration": { "pgsize": 4096 }
        }
    })
    .to_string()
}

fn handle(
    device: &mut Device,
    stream: &mut UnixStream,
    header: Header,
    body: &[u8],
    fds: Vec<File>,
) -> Result<()> {
    let name = device.name().to_string();
    let reply = match dispatch(device, &header, body, fds) {
        Ok(r) => r,
        Err(errno) => {
            warn!(device = %name, command = header.command, errno, "refused client request");
            Reply::Errno(errno)
        }
    };
    send(stream, &header, reply)
}

type HResult = std::result::Result<Reply, i32>;

fn dispatch(device: &mut Device, header: &Header, body: &[u8], mut fds: Vec<File>) -> HResult {
    let einval = |_| libc::EINVAL;
    match header.command {
        cmd::VERSION => {
            let v = p::Version::parse(body).map_err(einval)?;
            debug!(device = %device.name(), major = v.major, minor = v.minor, caps = %v.capabilities, "client version");
            if v.major != 0 {
                return Err(libc::ENOTSUP);
            }
            let mut out = Out::default();
            out.u16(0)
                .u16(0)
                .bytes(capabilities_json().as_bytes())
                .bytes(&[0]);
            Ok(Reply::Body(out.0))
        }
        cmd::DMA_MAP => {
            let m = p::DmaMap::parse(body).map_err(einval)?;
            if fds.len() > 1 {
                return Err(libc::EINVAL);
            }
            let writable = m.flags & p::DMA_MAP_WRITE != 0;
            device
                .shared()
                .memory()
                .map(m.address, m.size, m.offset, writable, fds.pop())
                .map_err(|e| {
                    warn!(device = %device.name(), "refused DMA map: {e}");
                    match e {
                        crate::memory::Error::Overlap { .. } => libc::EEXIST,
                        crate::memory::Error::TooMany => libc::ENOSPC,
                        _ => libc::EINVAL,
                    }
                })?;
            Ok(Reply::Body(Vec::new()))
        }
        cmd::DMA_UNMAP => {
            let u = p::DmaUnmap::parse(body).map_err(einval)?;
            if u.flags & p::DMA_UNMAP_GET_DIRTY_BITMAP != 0 {
                return Err(libc::ENOTSUP);
            }
            if u.flags & !p::DMA_UNMAP_ALL != 0 {
                return Err(libc::EINVAL);
            }
            if u.flags & p::DMA_UNMAP_ALL != 0 {
                device.shared().memory().unmap_all();
            } else {
                device
                    .shared()
                    .memory()
                    .unmap(u.address, u.size)
                    .map_err(|e| {
                        warn!(device = %device.name(), "refused DMA unmap: {e}");
                        libc::EINVAL
                    })?;
            }
            let mut out = Out::default();
            u.encode(&mut out);
            Ok(Reply::Body(out.0))
        }
        cmd::DEVICE_GET_INFO => {
            let mut out = Out::default();
            out.u32(16)
                .u32(p::DEVICE_FLAGS_PCI | p::DEVICE_FLAGS_RESET)
                .u32(p::PCI_NUM_REGIONS)
                .u32(p::PCI_NUM_IRQS);
            Ok(Reply::Body(out.0))
        }
        cmd::DEVICE_GET_REGION_INFO => {
            let req = p::RegionInfo::parse(body).map_err(einval)?;
            if req.index >= p::PCI_NUM_REGIONS {
                return Err(libc::EINVAL);
            }
            let size = region_size(req.index);
            let mut info = p::RegionInfo {
                argsz: p::RegionInfo::SIZE as u32,
                flags: if size > 0 {
                    p::REGION_FLAG_READ | p::REGION_FLAG_WRITE
                } else {
                    0
                },
                index: req.index,
                cap_offset: 0,
                size,
                offset: 0,
            };
            if req.index != abi::DOORBELL_BAR {
                let mut out = Out::default();
                info.encode(&mut out);
                return Ok(Reply::Body(out.0));
            }
            // The doorbell page: mmap-able through its memfd, offered as one sparse area.
            let mut cap = Out::default();
            cap.u16(p::REGION_INFO_CAP_SPARSE_MMAP)
                .u16(1)
                .u32(0)
                .u32(1)
                .u32(0)
                .u64(0)
                .u64(abi::DOORBELL_BAR_SIZE);
            let full = (p::RegionInfo::SIZE + cap.0.len()) as u32;
            info.flags |= p::REGION_FLAG_MMAP | p::REGION_FLAG_CAPS;
            info.argsz = full;
            info.cap_offset = p::RegionInfo::SIZE as u32;
            let mut out = Out::default();
            info.encode(&mut out);
            if req.argsz >= full {
                out.bytes(&cap.0);
            }
            Ok(Reply::BodyFd(out.0, device.doorbell_fd()))
        }
        cmd::DEVICE_GET_IRQ_INFO => {
            let req = p::IrqInfo::parse(body).map_err(einval)?;
            let (flags, count) = match req.index {
                p::PCI_INTX_IRQ => (
                    p::IRQ_INFO_EVENTFD | p::IRQ_INFO_MASKABLE | p::IRQ_INFO_AUTOMASKED,
                    1,
                ),
                p::PCI_MSI_IRQ => (p::IRQ_INFO_EVENTFD, 0),
                p::PCI_MSIX_IRQ => (
                    p::IRQ_INFO_EVENTFD | p::IRQ_INFO_NORESIZE,
                    abi::MSIX_VECTORS,
                ),
                p::PCI_ERR_IRQ | p::PCI_REQ_IRQ => (p::IRQ_INFO_EVENTFD, 1),
                _ => return Err(libc::EINVAL),
            };
            let mut out = Out::default();
            p::IrqInfo {
                argsz: 16,
                flags,
                index: req.index,
                count,
            }
            .encode(&mut out);
            Ok(Reply::Body(out.0))
        }
        cmd::DEVICE_SET_IRQS => {
            let s = p::IrqSet::parse(body).map_err(einval)?;
            set_irqs(device, &s, fds)?;
            Ok(Reply::Body(Vec::new()))
        }
        cmd::REGION_READ => {
            let (a, _) = p::RegionAccess::parse(body).map_err(einval)?;
            check_access(&a)?;
            let mut data = vec![0u8; a.count as usize];
            if !device.region_read(a.region, a.offset, &mut data) {
                return Err(libc::EINVAL);
            }
            let mut out = Out::default();
            a.encode(&mut out);
            out.bytes(&data);
            Ok(Reply::Body(out.0))
        }
        cmd::REGION_WRITE => {
            let (a, data) = p::RegionAccess::parse(body).map_err(einval)?;
            check_access(&a)?;
            if data.len() != a.count as usize {
                return Err(libc::EINVAL);
            }
            if !device.region_write(a.region, a.offset, data) {
                return Err(libc::EINVAL);
            }
            let mut out = Out::default();
            a.encode(&mut out);
            Ok(Reply::Body(out.0))
        }
        cmd::DEVICE_RESET => {
            debug!(device = %device.name(), "client reset");
            device.reset();
            Ok(Reply::Body(Vec::new()))
        }
        cmd::DIRTY_PAGES | cmd::DEVICE_GET_REGION_IO_FDS => Err(libc::ENOTSUP),
        _ => Err(libc::EINVAL),
    }
}

fn check_access(a: &p::RegionAccess) -> std::result::Result<(), i32> {
    let size = region_size(a.region);
    let end = a.offset.checked_add(u64::from(a.count));
    if a.count == 0 || a.count > p::MAX_DATA_XFER || end.is_none_or(|e| e > size) {
        return Err(libc::EINVAL);
    }
    Ok(())
}

fn set_irqs(device: &mut Device, s: &p::IrqSet, fds: Vec<File>) -> std::result::Result<(), i32> {
    let data = s.flags & (p::IRQ_SET_DATA_NONE | p::IRQ_SET_DATA_BOOL | p::IRQ_SET_DATA_EVENTFD);
    let action =
        s.flags & (p::IRQ_SET_ACTION_MASK | p::IRQ_SET_ACTION_UNMASK | p::IRQ_SET_ACTION_TRIGGER);
    if data.count_ones() != 1 || action.count_ones() != 1 {
        return Err(libc::EINVAL);
    }
    if data != p::IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
        return Err(libc::EINVAL);
    }
    let mut irqs = device.shared().irqs();
    match (s.index, action) {
        (p::PCI_MSIX_IRQ, p::IRQ_SET_ACTION_TRIGGER) => {
            if data == p::IRQ_SET_DATA_NONE && s.count == 0 {
                irqs.clear_msix();
                Ok(())
            } else if data == p::IRQ_SET_DATA_EVENTFD {
                if irqs.set_msix(s.start, s.count, fds) {
                    Ok(())
                } else {
                    Err(libc::EINVAL)
                }
            } else {
                Ok(()) // loopback trigger: nothing to do
            }
        }
        (p::PCI_INTX_IRQ, p::IRQ_SET_ACTION_TRIGGER) => {
            if s.start != 0 || s.count > 1 {
                return Err(libc::EINVAL);
            }
            if data == p::IRQ_SET_DATA_EVENTFD {
                irqs.set_intx(fds.into_iter().next());
            } else if s.count == 0 {
                irqs.set_intx(None);
            }
            Ok(())
        }
        (p::PCI_INTX_IRQ, p::IRQ_SET_ACTION_MASK) => {
            irqs.set_intx_masked(true);
            Ok(())
        }
        (p::PCI_INTX_IRQ, p::IRQ_SET_ACTION_UNMASK) => {
            // An unmask eventfd (resample) is accepted and not needed: INTx is re-signalled
            // per completion.
            irqs.set_intx_masked(false);
            Ok(())
        }
        (p::PCI_MSI_IRQ, _) => {
            if s.count == 0 {
                Ok(())
            } else {
                Err(libc::EINVAL) // the device has no MSI capability
            }
        }
        (p::PCI_ERR_IRQ | p::PCI_REQ_IRQ, _) => Ok(()),
        (p::PCI_MSIX_IRQ, _) => Ok(()), // per-vector masking is the client's (it owns the table)
        _ => Err(libc::EINVAL),
    }
}
