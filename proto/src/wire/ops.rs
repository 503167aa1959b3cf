//! Operations: the control section of request and reply frames.
//!
//! Every request names the CUDA driver API call it serves. Objects (contexts, modules,
//! functions, streams, events) are session-local [`Handle`]s; device memory is addressed by
//! device pointers (`u64`) that are only valid in the session that allocated them. Handle 0
//! is never a valid object; as a stream it means the context's null stream.
//!
//! The data section carries: the source bytes of `MemcpyHtoD` (and of a host-to-device
//! `Memcpy3D`), the module image(s) of `ModuleLoad`, the packed parameter buffer of
//! `LaunchKernel` (the layout of the driver API's `CU_LAUNCH_PARAM_BUFFER_POINTER`), and the
//! bytes of a `MemcpyDtoH`, device-to-host `Memcpy3D` or `ConsoleRead` reply. Every other
//! operation has an empty data section, and a frame that breaks this rule is refused.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A session-local object handle; 0 is "none" (or the null stream).
pub type Handle = u64;
/// A device pointer in the session's address space.
pub type DevPtr = u64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First request of every connection.
    Hello {
        version_min: u16,
        version_max: u16,
        token: String,
        /// Free text naming the client (e.g. "netgpu-vdev vm1"), for the backend's logs.
        client: String,
        /// Limits the client asks for this session; the backend applies the stricter of these
        /// and its own (or the tenant's) limits, never a looser one.
        limits: SessionLimits,
    },
    /// Does nothing; measures the round trip.
    Null,
    DeviceQuery,
    CtxCreate {
        flags: u32,
    },
    CtxDestroy {
        ctx: Handle,
    },
    CtxSynchronize {
        ctx: Handle,
    },
    MemAlloc {
        ctx: Handle,
        size: u64,
    },
    MemFree {
        ptr: DevPtr,
    },
    MemGetInfo,
    /// Data section: the bytes to copy to `dst`.
    MemcpyHtoD {
        ctx: Handle,
        dst: DevPtr,
        stream: Handle,
    },
    /// Reply data section: `len` bytes read from `src`.
    MemcpyDtoH {
        ctx: Handle,
        src: DevPtr,
        len: u64,
        stream: Handle,
    },
    MemcpyDtoD {
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    },
    /// Sets `count` elements of `elem_size` (1, 2 or 4) bytes at `dst` to the low bytes of `value`.
    Memset {
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
    },
    /// Data section: the module image, or several images to be linked into one module.
    /// `parts` lists the byte length of each image in order; empty means one image filling
    /// the whole data section. An image is PTX text (optionally NUL-terminated), a fatbin (the
    /// `0xBA55ED50` container, entries possibly compressed), a cubin (ELF) or a link container
    /// built by the guest library; the backend picks what its executor runs (see
    /// `docs/wire-protocol.md`). No image the executor can run: `NO_BINARY_FOR_GPU`.
    ModuleLoad {
        ctx: Handle,
        parts: Vec<u32>,
    },
    ModuleUnload {
        module: Handle,
    },
    ModuleGetFunction {
        module: Handle,
        name: String,
    },
    ModuleGetGlobal {
        module: Handle,
        name: String,
    },
    /// Data section: the packed kernel parameter buffer.
    LaunchKernel {
        func: Handle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
        stream: Handle,
        /// `LAUNCH_*` bits.
        flags: u32,
    },
    /// `cuFuncSetAttribute` (`attr` is a `CUfunction_attribute`, see [`crate::cuda::func_attr`]).
    FuncSetAttribute {
        func: Handle,
        attr: u32,
        value: i32,
    },
    /// `flags`: `CU_STREAM_*`; `priority`: as `cuStreamCreateWithPriority` (lower is higher
    /// priority; the backend clamps it to its range).
    StreamCreate {
        ctx: Handle,
        flags: u32,
        priority: i32,
    },
    /// Stream-ordered: later work on `stream` waits until `event`'s recorded work is done.
    StreamWaitEvent {
        stream: Handle,
        event: Handle,
    },
    /// A pitched 2D/3D copy (`cuMemcpy2D`, `cuMemcpy3D`). Host memory travels packed: a
    /// host-to-device copy carries `width * height * depth` bytes in the request's data
    /// section, a device-to-host copy returns as many in the reply's.
    Memcpy3D {
        ctx: Handle,
        copy: Copy3D,
        stream: Handle,
    },
    /// Stream-ordered free (`cuMemFreeAsync`): `ptr` is freed once earlier work on `stream` is
    /// done.
    MemFreeAsync {
        ptr: DevPtr,
        stream: Handle,
    },
    /// Takes up to `max` bytes of the session's pending kernel console output (device-side
    /// `printf`); the reply's data section holds them. A reply with
    /// [`crate::wire::frame::FLAG_CONSOLE_PENDING`] tells the client there is output to take.
    ConsoleRead {
        max: u32,
    },
    StreamDestroy {
        stream: Handle,
    },
    StreamSynchronize {
        stream: Handle,
    },
    /// Replies `SUCCESS` when all work on the stream is done, `NOT_READY` otherwise.
    StreamQuery {
        stream: Handle,
    },
    EventCreate {
        ctx: Handle,
        flags: u32,
    },
    EventRecord {
        event: Handle,
        stream: Handle,
    },
    EventSynchronize {
        event: Handle,
    },
    EventQuery {
        event: Handle,
    },
    EventElapsedTime {
        start: Handle,
        end: Handle,
    },
    EventDestroy {
        event: Handle,
    },
}

impl Request {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::Null => "Null",
            Request::DeviceQuery => "DeviceQuery",
            Request::CtxCreate { .. } => "CtxCreate",
            Request::CtxDestroy { .. } => "CtxDestroy",
            Request::CtxSynchronize { .. } => "CtxSynchronize",
            Request::MemAlloc { .. } => "MemAlloc",
            Request::MemFree { .. } => "MemFree",
            Request::MemGetInfo => "MemGetInfo",
            Request::MemcpyHtoD { .. } => "MemcpyHtoD",
            Request::MemcpyDtoH { .. } => "MemcpyDtoH",
            Request::MemcpyDtoD { .. } => "MemcpyDtoD",
            Request::Memset { .. } => "Memset",
            Request::ModuleLoad { .. } => "ModuleLoad",
            Request::ModuleUnload { .. } => "ModuleUnload",
            Request::ModuleGetFunction { .. } => "ModuleGetFunction",
            Request::ModuleGetGlobal { .. } => "ModuleGetGlobal",
            Request::LaunchKernel { .. } => "LaunchKernel",
            Request::FuncSetAttribute { .. } => "FuncSetAttribute",
            Request::StreamCreate { .. } => "StreamCreate",
            Request::StreamWaitEvent { .. } => "StreamWaitEvent",
            Request::Memcpy3D { .. } => "Memcpy3D",
            Request::MemFreeAsync { .. } => "MemFreeAsync",
            Request::ConsoleRead { .. } => "ConsoleRead",
            Request::StreamDestroy { .. } => "StreamDestroy",
            Request::StreamSynchronize { .. } => "StreamSynchronize",
            Request::StreamQuery { .. } => "StreamQuery",
            Request::EventCreate { .. } => "EventCreate",
            Request::EventRecord { .. } => "EventRecord",
            Request::EventSynchronize { .. } => "EventSynchronize",
            Request::EventQuery { .. } => "EventQuery",
            Request::EventElapsedTime { .. } => "EventElapsedTime",
            Request::EventDestroy { .. } => "EventDestroy",
        }
    }

    /// Whether the request may carry a data section (it may still be empty: a zero-byte
    /// copy, a kernel without parameters).
    pub fn accepts_data(&self) -> bool {
        match self {
            Request::MemcpyHtoD { .. }
            | Request::ModuleLoad { .. }
            | Request::LaunchKernel { .. } => true,
            Request::Memcpy3D { copy, .. } => copy.direction() == Copy3DKind::HostToDevice,
            _ => false,
        }
    }

    /// Whether the request may be sent with `FLAG_NO_REPLY` (stream-ordered work whose only
    /// result is success or failure).
    pub fn may_skip_reply(&self) -> bool {
        matches!(
            self,
            Request::MemcpyHtoD { .. }
                | Request::MemcpyDtoD { .. }
                | Request::Memset { .. }
                | Request::LaunchKernel { .. }
                | Request::EventRecord { .. }
                | Request::StreamDestroy { .. }
                | Request::EventDestroy { .. }
                | Request::MemFree { .. }
                | Request::MemFreeAsync { .. }
                | Request::StreamWaitEvent { .. }
        ) || matches!(self, Request::Memcpy3D { copy, .. } if copy.direction() != Copy3DKind::DeviceToHost)
    }

    /// Whether the request synchronises with earlier stream-ordered work: such a request
    /// reports a failure of earlier `NO_REPLY` work instead of its own result. Copies and
    /// memsets sent with a reply are the synchronous driver calls (`cuMemcpyHtoD`, ...), which
    /// synchronise too.
    pub fn is_synchronising(&self, no_reply: bool) -> bool {
        if !no_reply
            && matches!(
                self,
                Request::MemcpyHtoD { .. }
                    | Request::MemcpyDtoD { .. }
                    | Request::Memset { .. }
                    | Request::Memcpy3D { .. }
            )
        {
            return true;
        }
        matches!(
            self,
            Request::CtxSynchronize { .. }
                | Request::StreamSynchronize { .. }
                | Request::StreamQuery { .. }
                | Request::EventSynchronize { .. }
                | Request::EventQuery { .. }
                | Request::MemcpyDtoH { .. }
        )
    }
}

/// Everything a guest's `cuDeviceGet*` calls can ask about the remote GPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub total_mem: u64,
    pub cc_major: u32,
    pub cc_minor: u32,
    pub multiprocessors: u32,
    pub uuid: [u8; 16],
    /// CUDA driver version the backend runs (e.g. 12080), or 0 for the CPU executor.
    pub driver_version: u32,
    /// "cuda" or "cpu".
    pub executor: String,
    /// `(CUdevice_attribute, value)` pairs; see [`crate::cuda::attr`].
    pub attributes: Vec<(u32, i32)>,
}

impl DeviceInfo {
    pub fn attribute(&self, attr: u32) -> Option<i32> {
        self.attributes
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, v)| *v)
    }
}

/// Session limits a client asks for in `Hello` (`None`: no limit of its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Device memory the session may hold, in bytes.
    pub memory_quota: Option<u64>,
    /// Longest a kernel may run; a kernel past it fails with `LAUNCH_TIMEOUT`, which poisons
    /// the context as on a GPU with a watchdog.
    pub kernel_time_limit_ms: Option<u64>,
}

/// `LaunchKernel` flag: a cooperative launch (`cuLaunchCooperativeKernel`): every block is
/// resident at once, so grid-wide barriers work; refused with
/// `COOPERATIVE_LAUNCH_TOO_LARGE` when the grid cannot be.
pub const LAUNCH_COOPERATIVE: u32 = 1 << 0;

/// One side of a [`Request::Memcpy3D`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemLoc {
    /// Host memory, packed in the frame's data section (rows of `width` bytes, no padding).
    Host,
    /// Device memory at `ptr`: rows `pitch` bytes apart, slices `pitch * height` bytes apart.
    Device {
        ptr: DevPtr,
        pitch: u64,
        height: u64,
    },
}

/// A pitched copy of `depth` slices of `height` rows of `width` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy3D {
    pub src: MemLoc,
    pub dst: MemLoc,
    pub width: u64,
    pub height: u64,
    pub depth: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy3DKind {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
    /// Host to host: the client does it; the backend refuses it.
    HostToHost,
}

impl Copy3D {
    pub fn direction(&self) -> Copy3DKind {
        match (self.src, self.dst) {
            (MemLoc::Host, MemLoc::Device { .. }) => Copy3DKind::HostToDevice,
            (MemLoc::Device { .. }, MemLoc::Host) => Copy3DKind::DeviceToHost,
            (MemLoc::Device { .. }, MemLoc::Device { .. }) => Copy3DKind::DeviceToDevice,
            (MemLoc::Host, MemLoc::Host) => Copy3DKind::HostToHost,
        }
    }

    /// Bytes of host data the copy moves (`width * height * depth`), or `None` on overflow.
    pub fn packed_len(&self) -> Option<u64> {
        self.width.checked_mul(self.height)?.checked_mul(self.depth)
    }
}

/// One kernel parameter as the driver API lays it out in the parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub handle: Handle,
    pub params: Vec<ParamInfo>,
    /// Total size of the packed parameter buffer.
    pub param_buffer_size: u32,
    /// `(CUfunction_attribute, value)` pairs (`cuFuncGetAttribute`); see
    /// [`crate::cuda::func_attr`].
    pub attributes: Vec<(u32, i32)>,
}

impl FunctionInfo {
    pub fn attribute(&self, attr: u32) -> Option<i32> {
        self.attributes
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, v)| *v)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Welcome {
        version: u16,
        session_id: u64,
        /// Largest data section the backend accepts in one frame.
        max_data_len: u32,
        server: String,
    },
    /// Success with nothing to return (also the reply of a `MemcpyDtoH`, whose bytes are in
    /// the data section).
    Done,
    Handle(Handle),
    DevPtr(DevPtr),
    MemInfo {
        free: u64,
        total: u64,
    },
    Device(DeviceInfo),
    Function(FunctionInfo),
    Global {
        ptr: DevPtr,
        size: u64,
    },
    ElapsedMs(f32),
    /// The reason for an error reply or a goodbye, for logs.
    Error(String),
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("cannot encode control section")]
    Encode(#[source] postcard::Error),
    #[error("malformed control section")]
    Decode(#[source] postcard::Error),
    #[error("{0} trailing bytes after the control section")]
    Trailing(usize),
}

/// Encodes a control section.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(CodecError::Encode)
}

/// Appends an encoded control section to `out` (reusing its allocation).
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let v = postcard::to_extend(value, std::mem::take(out)).map_err(CodecError::Encode)?;
    *out = v;
    Ok(())
}

/// Decodes a control section; the whole section must be consumed.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(CodecError::Decode)?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(v)
}

/// Decodes a request's control section, as [`decode`] does (the same requests, the same
/// errors); a `LaunchKernel` without serde's machinery (see `launch.rs`).
pub fn decode_request(bytes: &[u8]) -> Result<Request, CodecError> {
    match super::launch::decode(bytes) {
        Some(r) => Ok(r),
        None => decode(bytes),
    }
}

/// Appends a request's control section to `out`, as [`encode_into`] does (the same bytes);
/// a `LaunchKernel` without serde's machinery (see `launch.rs`).
pub fn encode_request_into(req: &Request, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if super::launch::encode(req, out) {
        return Ok(());
    }
    encode_into(req, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Hello {
                version_min: 1,
                version_max: 1,
                token: "t".into(),
                client: "c".into(),
                limits: SessionLimits {
                    memory_quota: Some(1 << 30),
                    kernel_time_limit_ms: None,
                },
            },
            Request::LaunchKernel {
                func: 7,
                grid: [1, 2, 3],
                block: [32, 1, 1],
                shared_mem_bytes: 256,
                stream: 0,
                flags: LAUNCH_COOPERATIVE,
            },
            Request::ModuleLoad {
                ctx: 1,
                parts: vec![100, 2000],
            },
            Request::Memcpy3D {
                ctx: 1,
                copy: Copy3D {
                    src: MemLoc::Host,
                    dst: MemLoc::Device {
                        ptr: 0x1000,
                        pitch: 512,
                        height: 8,
                    },
                    width: 100,
                    height: 8,
                    depth: 2,
                },
                stream: 4,
            },
            Request::Memset {
                ctx: 1,
                dst: u64::MAX,
                value: 0xdead_beef,
                elem_size: 4,
                count: 12,
                stream: 3,
            },
        ];
        for r in reqs {
            let b = encode(&r).unwrap();
            assert_eq!(decode::<Request>(&b).unwrap(), r);
        }
    }

    #[test]
    fn unknown_opcode_truncation_and_trailing_bytes_are_errors() {
        assert!(matches!(
            decode::<Request>(&[200]),
            Err(CodecError::Decode(_))
        ));
        let b = encode(&Request::MemAlloc {
            ctx: 1,
            size: 1 << 40,
        })
        .unwrap();
        assert!(decode::<Request>(&b[..b.len() - 1]).is_err());
        let mut b = encode(&Request::Null).unwrap();
        b.push(0);
        assert!(matches!(
            decode::<Request>(&b),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn only_data_carrying_requests_accept_data() {
        assert!(Request::ModuleLoad {
            ctx: 1,
            parts: vec![]
        }
        .accepts_data());
        assert!(!Request::Null.accepts_data());
        assert!(!Request::MemcpyDtoH {
            ctx: 1,
            src: 0,
            len: 1,
            stream: 0
        }
        .may_skip_reply());
        assert!(Request::MemcpyDtoH {
            ctx: 1,
            src: 0,
            len: 1,
            stream: 0
        }
        .is_synchronising(false));
        let htod = Request::MemcpyHtoD {
            ctx: 1,
            dst: 0,
            stream: 0,
        };
        assert!(
            htod.is_synchronising(false),
            "a synchronous copy synchronises"
        );
        assert!(
            !htod.is_synchronising(true),
            "a stream-ordered copy does not"
        );
    }
}

#[cfg(test)]
mod copy3d {
    use super::*;

    fn copy(src: MemLoc, dst: MemLoc) -> Request {
        Request::Memcpy3D {
            ctx: 1,
            copy: Copy3D {
                src,
                dst,
                width: 16,
                height: 4,
                depth: 1,
            },
            stream: 0,
        }
    }

    const DEV: MemLoc = MemLoc::Device {
        ptr: 0x1000,
        pitch: 64,
        height: 4,
    };

    #[test]
    fn host_data_travels_only_with_the_host_side() {
        assert!(copy(MemLoc::Host, DEV).accepts_data());
        assert!(!copy(DEV, MemLoc::Host).accepts_data());
        assert!(!copy(DEV, DEV).accepts_data());
    }

    #[test]
    fn a_device_to_host_copy_always_has_a_reply() {
        assert!(!copy(DEV, MemLoc::Host).may_skip_reply());
        assert!(copy(MemLoc::Host, DEV).may_skip_reply());
        assert!(copy(DEV, DEV).may_skip_reply());
        assert!(copy(DEV, MemLoc::Host).is_synchronising(false));
        assert!(!copy(DEV, DEV).is_synchronising(true));
    }

    #[test]
    fn packed_length_overflow_is_none() {
        let c = Copy3D {
            src: MemLoc::Host,
            dst: DEV,
            width: u64::MAX,
            height: 2,
            depth: 1,
        };
        assert_eq!(c.packed_len(), None);
    }
}

#[cfg(test)]
mod hostile_input {
    use super::*;
    use crate::wire::frame::FrameHeader;

    /// xorshift: deterministic pseudo-random bytes without a dependency.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn random_control_sections_never_panic_the_decoders() {
        for seed in 0..20_000u64 {
            let b = bytes(seed, (seed % 97) as usize);
            let _ = decode::<Request>(&b);
            let _ = decode::<Reply>(&b);
            if b.len() >= 24 {
                let mut h = [0u8; 24];
                h.copy_from_slice(&b[..24]);
                let _ = FrameHeader::decode(&h, 1 << 16, 1 << 20);
            }
        }
    }

    #[test]
    fn mutated_valid_requests_decode_or_fail_but_never_panic() {
        let valid = encode(&Request::ModuleGetFunction {
            module: 0x1234_5678,
            name: "vector_add".into(),
        })
        .unwrap();
        for seed in 0..20_000u64 {
            let mut b = valid.clone();
            let r = bytes(seed, 4);
            let i = r[0] as usize % b.len();
            b[i] ^= r[1] | 1;
            if r[2] & 1 == 1 {
                b.truncate(r[3] as usize % b.len());
            }
            let _ = decode::<Request>(&b);
        }
    }

    #[test]
    fn huge_declared_string_lengths_are_refused_without_allocating() {
        // Variant ModuleGetFunction, module 1, then a string length varint of 2^62.
        let tag = encode(&Request::ModuleGetFunction {
            module: 1,
            name: String::new(),
        })
        .unwrap()[0];
        let b = [tag, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
        assert!(decode::<Request>(&b).is_err());
    }
}
