//! The one translation between the device's command descriptors and wire-protocol requests.
//!
//! Both ends of the device path use this module: the guest library turns a
//! [`Request`] into a command and its buffers ([`encode_request`]) and a completion back into
//! the [`Reply`] ([`decode_completion`]); `netgpu-vdev` turns a command into the request it
//! forwards ([`decode`]) and the backend's reply into a completion and the bytes it writes
//! into the command's output ([`encode_reply`]). Nothing else in the project knows how an
//! opcode's arguments map onto a request, so the two sides cannot drift apart; the
//! round-trip tests below run every request through both directions.
//!
//! Requests the fixed opcodes express exactly travel as those (one descriptor, no
//! serialisation); every other request travels as [`op::WIRE_REQUEST`], whose input is the
//! request's postcard control section followed by its data section and whose output is the
//! reply's control section followed by its data section. A new wire request therefore needs
//! nothing here unless its reply is larger than [`REPLY_CTRL_SMALL`] bytes or carries data
//! (one arm of [`reply_room`]), and nothing at all in vdev.
//!
//! Buffers: a command's scatter-gather entries are its input buffers' entries followed by its
//! output buffers' entries, which carry [`abi::SG_FLAG_DEVICE_WRITE`] ([`OpSpec`] says which
//! an opcode has). The device tells input from output by that flag, never by a length.

use thiserror::Error;

use crate::abi::{self, op, Command, Completion, DeviceInfoRecord, ParamRecord};
use crate::cuda::CuResult;
use crate::wire::ops::{self, DeviceInfo, FunctionInfo, Handle, ParamInfo, Reply, Request};
use crate::wire::MAX_CTRL_LEN;

/// What a command of one opcode carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpSpec {
    pub opcode: u16,
    /// The command reads input data (its first entries, without `SG_FLAG_DEVICE_WRITE`).
    pub input: bool,
    /// The command writes output (its last entries, each with `SG_FLAG_DEVICE_WRITE`).
    pub output: bool,
    /// The command may carry [`abi::CMD_FLAG_ASYNC`] (for `WIRE_REQUEST`: if the request may
    /// go without a reply, [`Request::may_skip_reply`]).
    pub may_async: bool,
}

/// The buffers and flags of `opcode`; `None` for an opcode this ABI does not define.
pub fn spec(opcode: u16) -> Option<OpSpec> {
    let (input, output, may_async) = match opcode {
        op::NOP
        | op::MEM_GET_INFO
        | op::CTX_CREATE
        | op::CTX_DESTROY
        | op::CTX_SYNCHRONIZE
        | op::MEM_ALLOC
        | op::MEM_FREE
        | op::MODULE_UNLOAD
        | op::STREAM_CREATE
        | op::STREAM_DESTROY
        | op::STREAM_SYNCHRONIZE
        | op::STREAM_QUERY
        | op::EVENT_CREATE
        | op::EVENT_SYNCHRONIZE
        | op::EVENT_QUERY
        | op::EVENT_ELAPSED_TIME
        | op::EVENT_DESTROY => (false, false, false),
        op::MEMCPY_DTOD | op::MEMSET | op::EVENT_RECORD => (false, false, true),
        op::MEMCPY_HTOD | op::LAUNCH_KERNEL => (true, false, true),
        op::MODULE_LOAD | op::MODULE_GET_GLOBAL => (true, false, false),
        op::DEVICE_QUERY | op::MEMCPY_DTOH => (false, true, false),
        op::MODULE_GET_FUNCTION => (true, true, false),
        op::WIRE_REQUEST => (true, true, true),
        _ => return None,
    };
    Some(OpSpec {
        opcode,
        input,
        output,
        may_async,
    })
}

/// Room for the control section of a reply without lists or strings (`Done`, `Handle`,
/// `DevPtr`, `MemInfo`, `Global`, `ElapsedMs`: at most 21 bytes encoded).
pub const REPLY_CTRL_SMALL: u64 = 64;

/// The output a `WIRE_REQUEST` carrying `req` must offer: the largest reply control section
/// plus the largest reply data section `req` can have.
pub fn reply_room(req: &Request) -> u64 {
    match req {
        Request::MemcpyDtoH { len, .. } => REPLY_CTRL_SMALL.saturating_add(*len),
        Request::Memcpy3D { copy, .. } if copy.direction() == ops::Copy3DKind::DeviceToHost => {
            REPLY_CTRL_SMALL.saturating_add(copy.packed_len().unwrap_or(u64::MAX))
        }
        Request::ConsoleRead { max } => REPLY_CTRL_SMALL + u64::from(*max),
        Request::DeviceQuery | Request::ModuleGetFunction { .. } => u64::from(MAX_CTRL_LEN),
        _ => REPLY_CTRL_SMALL,
    }
}

/// Why a command does not decode. Every variant completes the command with
/// [`DecodeError::cuda_result`] and stops nothing else.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u16),
    #[error("unknown command flags {0:#x}")]
    UnknownFlags(u16),
    #[error("reserved field is {0:#x}, not 0")]
    Reserved(u32),
    #[error("{0} may not be ASYNC")]
    NotAsync(&'static str),
    #[error("argument {index} = {value:#x} is out of range")]
    BadArg { index: usize, value: u64 },
    #[error("{opcode} takes {what}, the command has {have} bytes")]
    BadLength {
        opcode: &'static str,
        what: &'static str,
        have: u64,
    },
    #[error(
        "symbol name is empty, longer than {} bytes or not UTF-8",
        abi::MAX_NAME_LEN
    )]
    BadName,
    #[error("malformed control section")]
    Control(#[source] ops::CodecError),
    #[error("Hello is not a device request")]
    Hello,
    #[error("{0} takes no data section")]
    UnexpectedData(&'static str),
    #[error("output of {have} bytes cannot hold the reply of {request} ({need} bytes)")]
    OutputTooSmall {
        request: &'static str,
        have: u64,
        need: u64,
    },
}

impl DecodeError {
    /// The result the command completes with.
    pub fn cuda_result(&self) -> CuResult {
        match self {
            DecodeError::UnknownOpcode(_)
            | DecodeError::UnknownFlags(_)
            | DecodeError::Reserved(_) => CuResult::NOT_SUPPORTED,
            _ => CuResult::INVALID_VALUE,
        }
    }
}

/// How a reply becomes completion values and output bytes (chosen per command, the same on
/// both sides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyForm {
    /// `Done`: no values.
    Done,
    /// `Handle(h)`: v0 = h.
    Handle,
    /// `DevPtr(p)`: v0 = p.
    DevPtr,
    /// `MemInfo`: v0 = free, v1 = total.
    MemInfo,
    /// `Global`: v0 = pointer, v1 = size.
    Global,
    /// `ElapsedMs(ms)`: v0 = the f32 bits.
    ElapsedMs,
    /// `Device(info)`: a [`DeviceInfoRecord`] at the start of the output; v0 = its size.
    DeviceRecord,
    /// `Function(f)`: as many [`ParamRecord`]s as fit in the output; v0 = handle,
    /// v1 = `param_count << 32 | param_buffer_size`.
    ParamTable,
    /// `Done` with a data section that fills the output exactly; v0 = its length.
    Data,
    /// The reply's control section, then its data section, packed into the output;
    /// v0 = control length, v1 = data length.
    Wire,
}

/// A command decoded into what the device sends to the backend.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRequest {
    pub request: Request,
    /// Send it with `FLAG_NO_REPLY` and complete the command once it is queued.
    pub no_reply: bool,
    /// The request's data section: `data_len` bytes of the command's input, from byte
    /// `data_skip` on.
    pub data_skip: u64,
    pub data_len: u64,
    /// Send `request` without a reply, then `StreamSynchronize` of this stream, whose reply
    /// completes the command (`LAUNCH_KERNEL` without ASYNC waits for its kernel).
    pub then_sync: Option<Handle>,
    pub form: ReplyForm,
}

/// What a command asks of the device.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// `NOP`: the device completes it itself.
    Nop,
    Forward(DeviceRequest),
}

/// Checks a command's opcode, flags and reserved field; returns its [`OpSpec`]. The first
/// step of decoding: the device needs the spec to split the scatter list.
pub fn check(cmd: &Command) -> Result<OpSpec, DecodeError> {
    let spec = spec(cmd.opcode).ok_or(DecodeError::UnknownOpcode(cmd.opcode))?;
    if cmd.flags & !abi::CMD_FLAGS_ALL != 0 {
        return Err(DecodeError::UnknownFlags(cmd.flags));
    }
    if cmd.reserved != 0 {
        return Err(DecodeError::Reserved(cmd.reserved));
    }
    if cmd.flags & abi::CMD_FLAG_ASYNC != 0 && !spec.may_async {
        return Err(DecodeError::NotAsync(op::name(cmd.opcode)));
    }
    Ok(spec)
}

/// How many leading bytes of the command's input (`input_len` bytes in all) [`decode`]
/// needs to see: a symbol name or a control section. At most
/// `max(MAX_NAME_LEN, MAX_CTRL_LEN)`, so the caller may read them into a buffer.
pub fn prefix_len(cmd: &Command, input_len: u64) -> Result<usize, DecodeError> {
    check(cmd)?;
    match cmd.opcode {
        op::MODULE_GET_FUNCTION | op::MODULE_GET_GLOBAL => {
            if input_len == 0 || input_len > u64::from(abi::MAX_NAME_LEN) {
                return Err(DecodeError::BadName);
            }
            Ok(input_len as usize)
        }
        op::WIRE_REQUEST => {
            let c = cmd.args[0];
            if c == 0 || c > u64::from(MAX_CTRL_LEN) || c > input_len {
                return Err(DecodeError::BadArg { index: 0, value: c });
            }
            Ok(c as usize)
        }
        _ => Ok(0),
    }
}

fn u32_arg(a: &[u64; 8], index: usize) -> Result<u32, DecodeError> {
    u32::try_from(a[index]).map_err(|_| DecodeError::BadArg {
        index,
        value: a[index],
    })
}

/// Decodes `cmd`, whose input holds `input_len` bytes and output `output_len` bytes;
/// `prefix` is the first [`prefix_len`] bytes of the input.
pub fn decode(
    cmd: &Command,
    input_len: u64,
    output_len: u64,
    prefix: &[u8],
) -> Result<Decoded, DecodeError> {
    let spec = check(cmd)?;
    let name = op::name(cmd.opcode);
    let is_async = cmd.flags & abi::CMD_FLAG_ASYNC != 0;
    if !spec.input && input_len != 0 {
        return Err(DecodeError::BadLength {
            opcode: name,
            what: "no input",
            have: input_len,
        });
    }
    if !spec.output && output_len != 0 {
        return Err(DecodeError::BadLength {
            opcode: name,
            what: "no output",
            have: output_len,
        });
    }
    let a = &cmd.args;
    let simple = |request: Request, form: ReplyForm| DeviceRequest {
        request,
        no_reply: false,
        data_skip: 0,
        data_len: 0,
        then_sync: None,
        form,
    };
    let with_input = |request: Request, form: ReplyForm| DeviceRequest {
        request,
        no_reply: is_async,
        data_skip: 0,
        data_len: input_len,
        then_sync: None,
        form,
    };
    let symbol = || -> Result<String, DecodeError> {
        if a[1] != input_len || prefix.len() as u64 != input_len {
            return Err(DecodeError::BadName);
        }
        String::from_utf8(prefix.to_vec()).map_err(|_| DecodeError::BadName)
    };
    let r = match cmd.opcode {
        op::NOP => return Ok(Decoded::Nop),
        op::DEVICE_QUERY => {
            if output_len < DeviceInfoRecord::SIZE as u64 {
                return Err(DecodeError::BadLength {
                    opcode: name,
                    what: "an output of at least 1024 bytes",
                    have: output_len,
                });
            }
            simple(Request::DeviceQuery, ReplyForm::DeviceRecord)
        }
        op::MEM_GET_INFO => simple(Request::MemGetInfo, ReplyForm::MemInfo),
        op::CTX_CREATE => simple(
            Request::CtxCreate {
                flags: u32_arg(a, 0)?,
            },
            ReplyForm::Handle,
        ),
        op::CTX_DESTROY => simple(Request::CtxDestroy { ctx: a[0] }, ReplyForm::Done),
        op::CTX_SYNCHRONIZE => simple(Request::CtxSynchronize { ctx: a[0] }, ReplyForm::Done),
        op::MEM_ALLOC => simple(
            Request::MemAlloc {
                ctx: a[0],
                size: a[1],
            },
            ReplyForm::DevPtr,
        ),
        op::MEM_FREE => simple(Request::MemFree { ptr: a[0] }, ReplyForm::Done),
        op::MEMCPY_HTOD => with_input(
            Request::MemcpyHtoD {
                ctx: a[0],
                dst: a[1],
                stream: a[2],
            },
            ReplyForm::Done,
        ),
        op::MEMCPY_DTOH => simple(
            Request::MemcpyDtoH {
                ctx: a[0],
                src: a[1],
                len: output_len,
                stream: a[2],
            },
            ReplyForm::Data,
        ),
        op::MEMCPY_DTOD => DeviceRequest {
            no_reply: is_async,
            ..simple(
                Request::MemcpyDtoD {
                    ctx: a[0],
                    dst: a[1],
                    src: a[2],
                    len: a[3],
                    stream: a[4],
                },
                ReplyForm::Done,
            )
        },
        op::MEMSET => {
            let elem_size = match a[3] {
                1 | 2 | 4 => a[3] as u8,
                v => return Err(DecodeError::BadArg { index: 3, value: v }),
            };
            DeviceRequest {
                no_reply: is_async,
                ..simple(
                    Request::Memset {
                        ctx: a[0],
                        dst: a[1],
                        value: u32_arg(a, 2)?,
                        elem_size,
                        count: a[4],
                        stream: a[5],
                    },
                    ReplyForm::Done,
                )
            }
        }
        op::MODULE_LOAD => with_input(
            Request::ModuleLoad {
                ctx: a[0],
                parts: Vec::new(),
            },
            ReplyForm::Handle,
        ),
        op::MODULE_UNLOAD => simple(Request::ModuleUnload { module: a[0] }, ReplyForm::Done),
        op::MODULE_GET_FUNCTION => simple(
            Request::ModuleGetFunction {
                module: a[0],
                name: symbol()?,
            },
            ReplyForm::ParamTable,
        ),
        op::MODULE_GET_GLOBAL => simple(
            Request::ModuleGetGlobal {
                module: a[0],
                name: symbol()?,
            },
            ReplyForm::Global,
        ),
        op::LAUNCH_KERNEL => {
            if input_len > u64::from(abi::MAX_PARAM_BUFFER) {
                return Err(DecodeError::BadLength {
                    opcode: name,
                    what: "a parameter buffer of at most 32 KiB",
                    have: input_len,
                });
            }
            let (grid, block) = abi::unpack_launch_dims([a[1], a[2], a[3]]);
            let stream = a[5];
            DeviceRequest {
                no_reply: true,
                then_sync: (!is_async).then_some(stream),
                ..with_input(
                    Request::LaunchKernel {
                        func: a[0],
                        grid,
                        block,
                        shared_mem_bytes: u32_arg(a, 4)?,
                        stream,
                        flags: 0,
                    },
                    ReplyForm::Done,
                )
            }
        }
        op::STREAM_CREATE => simple(
            Request::StreamCreate {
                ctx: a[0],
                flags: u32_arg(a, 1)?,
                priority: 0,
            },
            ReplyForm::Handle,
        ),
        op::STREAM_DESTROY => simple(Request::StreamDestroy { stream: a[0] }, ReplyForm::Done),
        op::STREAM_SYNCHRONIZE => {
            simple(Request::StreamSynchronize { stream: a[0] }, ReplyForm::Done)
        }
        op::STREAM_QUERY => simple(Request::StreamQuery { stream: a[0] }, ReplyForm::Done),
        op::EVENT_CREATE => simple(
            Request::EventCreate {
                ctx: a[0],
                flags: u32_arg(a, 1)?,
            },
            ReplyForm::Handle,
        ),
        op::EVENT_RECORD => DeviceRequest {
            no_reply: is_async,
            ..simple(
                Request::EventRecord {
                    event: a[0],
                    stream: a[1],
                },
                ReplyForm::Done,
            )
        },
        op::EVENT_SYNCHRONIZE => simple(Request::EventSynchronize { event: a[0] }, ReplyForm::Done),
        op::EVENT_QUERY => simple(Request::EventQuery { event: a[0] }, ReplyForm::Done),
        op::EVENT_ELAPSED_TIME => simple(
            Request::EventElapsedTime {
                start: a[0],
                end: a[1],
            },
            ReplyForm::ElapsedMs,
        ),
        op::EVENT_DESTROY => simple(Request::EventDestroy { event: a[0] }, ReplyForm::Done),
        op::WIRE_REQUEST => return decode_wire(cmd, input_len, output_len, prefix),
        other => return Err(DecodeError::UnknownOpcode(other)),
    };
    Ok(Decoded::Forward(r))
}

fn decode_wire(
    cmd: &Command,
    input_len: u64,
    output_len: u64,
    prefix: &[u8],
) -> Result<Decoded, DecodeError> {
    if let Some(i) = cmd.args[1..].iter().position(|&v| v != 0) {
        return Err(DecodeError::BadArg {
            index: i + 1,
            value: cmd.args[i + 1],
        });
    }
    if prefix.len() as u64 != cmd.args[0] {
        return Err(DecodeError::BadArg {
            index: 0,
            value: cmd.args[0],
        });
    }
    let request: Request = ops::decode(prefix).map_err(DecodeError::Control)?;
    if matches!(request, Request::Hello { .. }) {
        return Err(DecodeError::Hello);
    }
    let data_len = input_len - prefix.len() as u64;
    if data_len != 0 && !request.accepts_data() {
        return Err(DecodeError::UnexpectedData(request.name()));
    }
    let is_async = cmd.flags & abi::CMD_FLAG_ASYNC != 0;
    if is_async && !request.may_skip_reply() {
        return Err(DecodeError::NotAsync(request.name()));
    }
    let need = reply_room(&request);
    if !is_async && output_len < need {
        return Err(DecodeError::OutputTooSmall {
            request: request.name(),
            have: output_len,
            need,
        });
    }
    Ok(Decoded::Forward(DeviceRequest {
        request,
        no_reply: is_async,
        data_skip: prefix.len() as u64,
        data_len,
        then_sync: None,
        form: ReplyForm::Wire,
    }))
}

/// What the device writes for a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReply {
    pub result: CuResult,
    pub value0: u64,
    pub value1: u64,
    /// Bytes to write at the start of the output (a record, a table, a control section).
    pub output: Vec<u8>,
    /// Where the reply's data section goes in the output (right after `output`).
    pub data_at: u64,
}

impl DeviceReply {
    /// A reply with `result` and nothing else.
    pub fn status(result: CuResult) -> Self {
        DeviceReply {
            result,
            value0: 0,
            value1: 0,
            output: Vec::new(),
            data_at: 0,
        }
    }
}

/// Why a backend reply cannot become a completion (the backend broke the protocol); the
/// command completes with [`CuResult::UNKNOWN`].
#[derive(Debug, Error)]
pub enum ReplyError {
    #[error("malformed reply control section")]
    Control(#[source] ops::CodecError),
    #[error("reply {got} where the request expects {expected:?}")]
    Unexpected {
        got: &'static str,
        expected: ReplyForm,
    },
    #[error("reply data of {data} bytes does not fit the output of {room} bytes")]
    DataTooLarge { data: u64, room: u64 },
    #[error("reply data of {got} bytes where {want} were asked for")]
    DataLength { got: u64, want: u64 },
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Welcome { .. } => "Welcome",
        Reply::Done => "Done",
        Reply::Handle(_) => "Handle",
        Reply::DevPtr(_) => "DevPtr",
        Reply::MemInfo { .. } => "MemInfo",
        Reply::Device(_) => "Device",
        Reply::Function(_) => "Function",
        Reply::Global { .. } => "Global",
        Reply::ElapsedMs(_) => "ElapsedMs",
        Reply::Error(_) => "Error",
    }
}

/// Turns the backend's reply (status, raw control section, data section length) to a
/// request of reply form `form` (its [`DeviceRequest::form`]) into what the device writes;
/// `output_len` is the command's output size. A failed request completes with its status
/// and writes nothing.
pub fn encode_reply(
    form: ReplyForm,
    status: CuResult,
    ctrl: &[u8],
    data_len: u64,
    output_len: u64,
) -> Result<DeviceReply, ReplyError> {
    if !status.is_success() {
        return Ok(DeviceReply::status(status));
    }
    if form == ReplyForm::Wire {
        let need = (ctrl.len() as u64).saturating_add(data_len);
        if need > output_len {
            return Err(ReplyError::DataTooLarge {
                data: need,
                room: output_len,
            });
        }
        return Ok(DeviceReply {
            result: status,
            value0: ctrl.len() as u64,
            value1: data_len,
            output: ctrl.to_vec(),
            data_at: ctrl.len() as u64,
        });
    }
    let reply = if ctrl.is_empty() {
        Reply::Done
    } else {
        ops::decode::<Reply>(ctrl).map_err(ReplyError::Control)?
    };
    if form == ReplyForm::Data {
        if data_len != output_len {
            return Err(ReplyError::DataLength {
                got: data_len,
                want: output_len,
            });
        }
    } else if data_len != 0 {
        return Err(ReplyError::DataTooLarge {
            data: data_len,
            room: 0,
        });
    }
    let unexpected = |r: &Reply| ReplyError::Unexpected {
        got: reply_name(r),
        expected: form,
    };
    let values = |v0: u64, v1: u64| DeviceReply {
        result: status,
        value0: v0,
        value1: v1,
        output: Vec::new(),
        data_at: 0,
    };
    Ok(match (form, &reply) {
        (ReplyForm::Done, Reply::Done) => values(0, 0),
        (ReplyForm::Data, Reply::Done) => values(data_len, 0),
        (ReplyForm::Handle, Reply::Handle(h)) => values(*h, 0),
        (ReplyForm::DevPtr, Reply::DevPtr(p)) => values(*p, 0),
        (ReplyForm::MemInfo, Reply::MemInfo { free, total }) => values(*free, *total),
        (ReplyForm::Global, Reply::Global { ptr, size }) => values(*ptr, *size),
        (ReplyForm::ElapsedMs, Reply::ElapsedMs(ms)) => values(u64::from(ms.to_bits()), 0),
        (ReplyForm::DeviceRecord, Reply::Device(d)) => DeviceReply {
            output: device_record(d).to_bytes().to_vec(),
            ..values(DeviceInfoRecord::SIZE as u64, 0)
        },
        (ReplyForm::ParamTable, Reply::Function(f)) => {
            let room = (output_len / ParamRecord::SIZE as u64) as usize;
            let mut out = Vec::with_capacity(f.params.len().min(room) * ParamRecord::SIZE);
            for p in f.params.iter().take(room) {
                let rec = ParamRecord {
                    offset: p.offset,
                    size: p.size,
                };
                out.extend_from_slice(&rec.to_bytes());
            }
            let v1 = ((f.params.len() as u64) << 32) | u64::from(f.param_buffer_size);
            DeviceReply {
                output: out,
                ..values(f.handle, v1)
            }
        }
        (_, r) => return Err(unexpected(r)),
    })
}

/// `DEVICE_QUERY`'s record of `d` (the name and attributes cut to what the record holds).
pub fn device_record(d: &DeviceInfo) -> DeviceInfoRecord {
    let mut r = DeviceInfoRecord::default();
    let n = d.name.len().min(r.name.len() - 1);
    r.name[..n].copy_from_slice(&d.name.as_bytes()[..n]);
    r.total_mem = d.total_mem;
    r.cc_major = d.cc_major;
    r.cc_minor = d.cc_minor;
    r.multiprocessors = d.multiprocessors;
    r.driver_version = d.driver_version;
    r.uuid = d.uuid;
    r.executor = executor_code(&d.executor);
    let count = d.attributes.len().min(abi::DEVICE_INFO_MAX_ATTRS);
    r.attr_count = count as u32;
    for (slot, (attr, val)) in r.attrs.iter_mut().zip(&d.attributes) {
        *slot = [*attr, *val as u32];
    }
    r
}

/// The `EXECUTOR_*` code of a backend's executor name.
pub fn executor_code(name: &str) -> u32 {
    match name {
        "cuda" => abi::EXECUTOR_CUDA,
        "cpu" => abi::EXECUTOR_CPU,
        _ => abi::EXECUTOR_NONE,
    }
}

/// The [`DeviceInfo`] a `DEVICE_QUERY` record stands for.
pub fn device_info(r: &DeviceInfoRecord) -> DeviceInfo {
    let n = (r.attr_count as usize).min(r.attrs.len());
    DeviceInfo {
        name: r.name_str().to_string(),
        total_mem: r.total_mem,
        cc_major: r.cc_major,
        cc_minor: r.cc_minor,
        multiprocessors: r.multiprocessors,
        uuid: r.uuid,
        driver_version: r.driver_version,
        executor: match r.executor {
            abi::EXECUTOR_CUDA => "cuda",
            abi::EXECUTOR_CPU => "cpu",
            _ => "none",
        }
        .to_string(),
        attributes: r.attrs[..n].iter().map(|[a, v]| (*a, *v as i32)).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Guest side
// ---------------------------------------------------------------------------------------------

/// One buffer of a command, in the order the driver passes them (inputs, then outputs; the
/// kernel module pins each and builds the scatter list in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestBuffer {
    /// Input: [`GuestCommand::prefix`] (a control section or a symbol name), made here.
    Prefix,
    /// Input: the caller's data (`data_len` bytes; may be empty).
    Data,
    /// Output: the caller's output buffer (`output_len` bytes).
    Output,
    /// Output: scratch space of this many bytes the caller provides; the reply lands in it
    /// ([`decode_completion`] reads it).
    Scratch(u64),
}

impl GuestBuffer {
    /// Whether the device writes this buffer (the module pins it writable).
    pub fn is_output(self) -> bool {
        matches!(self, GuestBuffer::Output | GuestBuffer::Scratch(_))
    }
}

/// A request encoded for the device.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestCommand {
    /// Opcode, flags and arguments; the scatter list is the caller's to fill from `buffers`.
    pub command: Command,
    pub prefix: Vec<u8>,
    pub buffers: Vec<GuestBuffer>,
    pub form: ReplyForm,
}

/// Options of [`encode_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The device offers [`abi::FEATURE_WIRE_REQUEST`]: requests no fixed opcode expresses
    /// exactly go as `WIRE_REQUEST` (without it they are `NOT_SUPPORTED`), and so do
    /// `DeviceQuery` and `ModuleGetFunction`, whose fixed forms drop attributes.
    pub wire: bool,
    /// Send stream-ordered work with `CMD_FLAG_ASYNC` (complete once queued).
    pub post: bool,
}

/// Encodes `req`, whose data section is `data_len` bytes and whose caller-provided output
/// (the destination of a device-to-host copy) is `output_len` bytes.
/// Whether a symbol name fits the fixed `MODULE_GET_*` opcodes (1 to `MAX_NAME_LEN` bytes).
fn symbol_fits(name: &str) -> bool {
    !name.is_empty() && name.len() <= abi::MAX_NAME_LEN as usize
}

pub fn encode_request(
    req: &Request,
    data_len: u64,
    output_len: u64,
    opts: EncodeOptions,
) -> Result<GuestCommand, CuResult> {
    if matches!(req, Request::Hello { .. }) {
        return Err(CuResult::INVALID_VALUE);
    }
    if data_len != 0 && !req.accepts_data() {
        return Err(CuResult::INVALID_VALUE);
    }
    // A symbol name the fixed opcodes cannot carry (empty, or longer than the device takes)
    // goes as a wire request when it can (the backend answers it), else it is refused here.
    if let Request::ModuleGetFunction { name, .. } | Request::ModuleGetGlobal { name, .. } = req {
        if !symbol_fits(name) && !opts.wire {
            return Err(CuResult::INVALID_VALUE);
        }
    }
    // cuMemsetD8/16/32 only: the device refuses other element sizes, so never encode one.
    if let Request::Memset { elem_size, .. } = req {
        if !matches!(elem_size, 1 | 2 | 4) {
            return Err(CuResult::INVALID_VALUE);
        }
    }
    let fixed = match fixed_form(req, output_len, opts.wire) {
        Some(f) => f,
        None if opts.wire => return encode_wire(req, opts.post),
        None => return Err(CuResult::NOT_SUPPORTED),
    };
    let (opcode, args, form, prefix) = fixed;
    let spec = spec(opcode).ok_or(CuResult::UNKNOWN)?;
    let mut command = Command::new(opcode, 0, &args);
    if opts.post {
        if !spec.may_async {
            return Err(CuResult::INVALID_VALUE);
        }
        command.flags |= abi::CMD_FLAG_ASYNC;
    }
    let mut buffers = Vec::new();
    if !prefix.is_empty() {
        buffers.push(GuestBuffer::Prefix);
    } else if spec.input {
        buffers.push(GuestBuffer::Data);
    }
    match form {
        ReplyForm::DeviceRecord => {
            buffers.push(GuestBuffer::Scratch(DeviceInfoRecord::SIZE as u64))
        }
        ReplyForm::ParamTable => buffers.push(GuestBuffer::Scratch(
            MAX_FIXED_PARAMS * ParamRecord::SIZE as u64,
        )),
        ReplyForm::Data => buffers.push(GuestBuffer::Output),
        _ => {}
    }
    Ok(GuestCommand {
        command,
        prefix,
        buffers,
        form,
    })
}

/// Parameters a fixed `MODULE_GET_FUNCTION` has room for (the scratch table it asks for).
pub const MAX_FIXED_PARAMS: u64 = 1024;

type Fixed = (u16, Vec<u64>, ReplyForm, Vec<u8>);

/// The fixed opcode that expresses `req` exactly, if any.
fn fixed_form(req: &Request, output_len: u64, wire: bool) -> Option<Fixed> {
    let f = |opcode: u16, args: Vec<u64>, form: ReplyForm| Some((opcode, args, form, Vec::new()));
    match req {
        Request::Null => f(op::NOP, vec![], ReplyForm::Done),
        Request::DeviceQuery if !wire => f(op::DEVICE_QUERY, vec![], ReplyForm::DeviceRecord),
        Request::MemGetInfo => f(op::MEM_GET_INFO, vec![], ReplyForm::MemInfo),
        Request::CtxCreate { flags } => f(op::CTX_CREATE, vec![(*flags).into()], ReplyForm::Handle),
        Request::CtxDestroy { ctx } => f(op::CTX_DESTROY, vec![*ctx], ReplyForm::Done),
        Request::CtxSynchronize { ctx } => f(op::CTX_SYNCHRONIZE, vec![*ctx], ReplyForm::Done),
        Request::MemAlloc { ctx, size } => f(op::MEM_ALLOC, vec![*ctx, *size], ReplyForm::DevPtr),
        Request::MemFree { ptr } => f(op::MEM_FREE, vec![*ptr], ReplyForm::Done),
        Request::MemcpyHtoD { ctx, dst, stream } => {
            f(op::MEMCPY_HTOD, vec![*ctx, *dst, *stream], ReplyForm::Done)
        }
        Request::MemcpyDtoH {
            ctx,
            src,
            len,
            stream,
        } if *len == output_len => f(op::MEMCPY_DTOH, vec![*ctx, *src, *stream], ReplyForm::Data),
        Request::MemcpyDtoD {
            ctx,
            dst,
            src,
            len,
            stream,
        } => f(
            op::MEMCPY_DTOD,
            vec![*ctx, *dst, *src, *len, *stream],
            ReplyForm::Done,
        ),
        Request::Memset {
            ctx,
            dst,
            value,
            elem_size,
            count,
            stream,
        } => f(
            op::MEMSET,
            vec![
                *ctx,
                *dst,
                (*value).into(),
                (*elem_size).into(),
                *count,
                *stream,
            ],
            ReplyForm::Done,
        ),
        Request::ModuleLoad { ctx, parts }
            // Only the empty list: one part spanning the data is the same module but a
            // different request, and decode must give back what was encoded.
            if parts.is_empty() =>
        {
            f(op::MODULE_LOAD, vec![*ctx], ReplyForm::Handle)
        }
        Request::ModuleUnload { module } => f(op::MODULE_UNLOAD, vec![*module], ReplyForm::Done),
        Request::ModuleGetFunction { module, name } if !wire && symbol_fits(name) => Some((
            op::MODULE_GET_FUNCTION,
            vec![*module, name.len() as u64],
            ReplyForm::ParamTable,
            name.as_bytes().to_vec(),
        )),
        Request::ModuleGetGlobal { module, name } if symbol_fits(name) => Some((
            op::MODULE_GET_GLOBAL,
            vec![*module, name.len() as u64],
            ReplyForm::Global,
            name.as_bytes().to_vec(),
        )),
        Request::LaunchKernel {
            func,
            grid,
            block,
            shared_mem_bytes,
            stream,
            flags: 0,
        } => {
            let d = abi::pack_launch_dims(*grid, *block);
            f(
                op::LAUNCH_KERNEL,
                vec![*func, d[0], d[1], d[2], (*shared_mem_bytes).into(), *stream],
                ReplyForm::Done,
            )
        }
        Request::StreamCreate {
            ctx,
            flags,
            priority: 0,
        } => f(
            op::STREAM_CREATE,
            vec![*ctx, (*flags).into()],
            ReplyForm::Handle,
        ),
        Request::StreamDestroy { stream } => f(op::STREAM_DESTROY, vec![*stream], ReplyForm::Done),
        Request::StreamSynchronize { stream } => {
            f(op::STREAM_SYNCHRONIZE, vec![*stream], ReplyForm::Done)
        }
        Request::StreamQuery { stream } => f(op::STREAM_QUERY, vec![*stream], ReplyForm::Done),
        Request::EventCreate { ctx, flags } => f(
            op::EVENT_CREATE,
            vec![*ctx, (*flags).into()],
            ReplyForm::Handle,
        ),
        Request::EventRecord { event, stream } => {
            f(op::EVENT_RECORD, vec![*event, *stream], ReplyForm::Done)
        }
        Request::EventSynchronize { event } => {
            f(op::EVENT_SYNCHRONIZE, vec![*event], ReplyForm::Done)
        }
        Request::EventQuery { event } => f(op::EVENT_QUERY, vec![*event], ReplyForm::Done),
        Request::EventElapsedTime { start, end } => f(
            op::EVENT_ELAPSED_TIME,
            vec![*start, *end],
            ReplyForm::ElapsedMs,
        ),
        Request::EventDestroy { event } => f(op::EVENT_DESTROY, vec![*event], ReplyForm::Done),
        _ => None,
    }
}

fn encode_wire(req: &Request, post: bool) -> Result<GuestCommand, CuResult> {
    if post && !req.may_skip_reply() {
        return Err(CuResult::INVALID_VALUE);
    }
    let prefix = ops::encode(req).map_err(|_| CuResult::INVALID_VALUE)?;
    if prefix.len() > MAX_CTRL_LEN as usize {
        return Err(CuResult::INVALID_VALUE);
    }
    let mut command = Command::new(op::WIRE_REQUEST, 0, &[prefix.len() as u64]);
    if post {
        command.flags |= abi::CMD_FLAG_ASYNC;
    }
    let room = if post { 0 } else { reply_room(req) };
    Ok(GuestCommand {
        command,
        prefix,
        buffers: vec![
            GuestBuffer::Prefix,
            GuestBuffer::Data,
            GuestBuffer::Scratch(room),
        ],
        form: ReplyForm::Wire,
    })
}

/// A reply the device delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestReply {
    pub reply: Reply,
    /// Where the reply's data section lies in the scratch buffer (`WIRE_REQUEST` replies with
    /// data: a device-to-host `Memcpy3D`, `ConsoleRead`); the data of a fixed `MEMCPY_DTOH`
    /// is already in the caller's output.
    pub data: core::ops::Range<usize>,
    /// The backend holds console output nobody read ([`abi::CQE_FLAG_CONSOLE_PENDING`]).
    pub console_pending: bool,
}

/// Decodes the completion `c` of `gc`; `scratch` is the command's scratch buffer (empty if
/// it has none). A failed command returns its result.
pub fn decode_completion(
    gc: &GuestCommand,
    c: &Completion,
    scratch: &[u8],
) -> Result<GuestReply, CuResult> {
    if c.result != 0 {
        return Err(CuResult(c.result));
    }
    let console_pending = c.flags & abi::CQE_FLAG_CONSOLE_PENDING != 0;
    let done = |reply: Reply| GuestReply {
        reply,
        data: 0..0,
        console_pending,
    };
    let bad = CuResult::UNKNOWN;
    Ok(match gc.form {
        ReplyForm::Done | ReplyForm::Data => done(Reply::Done),
        ReplyForm::Handle => done(Reply::Handle(c.value0)),
        ReplyForm::DevPtr => done(Reply::DevPtr(c.value0)),
        ReplyForm::MemInfo => done(Reply::MemInfo {
            free: c.value0,
            total: c.value1,
        }),
        ReplyForm::Global => done(Reply::Global {
            ptr: c.value0,
            size: c.value1,
        }),
        ReplyForm::ElapsedMs => done(Reply::ElapsedMs(f32::from_bits(c.value0 as u32))),
        ReplyForm::DeviceRecord => {
            let b: &[u8; DeviceInfoRecord::SIZE] = scratch
                .get(..DeviceInfoRecord::SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad)?;
            done(Reply::Device(device_info(&DeviceInfoRecord::from_bytes(b))))
        }
        ReplyForm::ParamTable => {
            let count = (c.value1 >> 32) as usize;
            let params: Vec<ParamInfo> = scratch
                .chunks_exact(ParamRecord::SIZE)
                .take(count)
                .map(|r| {
                    let mut b = [0u8; ParamRecord::SIZE];
                    b.copy_from_slice(r);
                    let p = ParamRecord::from_bytes(&b);
                    ParamInfo {
                        offset: p.offset,
                        size: p.size,
                    }
                })
                .collect();
            if params.len() != count {
                // More parameters than the fixed table holds: only WIRE_REQUEST can say.
                return Err(CuResult::NOT_SUPPORTED);
            }
            done(Reply::Function(FunctionInfo {
                handle: c.value0,
                params,
                param_buffer_size: c.value1 as u32,
                attributes: Vec::new(),
            }))
        }
        ReplyForm::Wire => {
            if gc.command.flags & abi::CMD_FLAG_ASYNC != 0 {
                return Ok(done(Reply::Done));
            }
            let ctrl = usize::try_from(c.value0).map_err(|_| bad)?;
            let data = usize::try_from(c.value1).map_err(|_| bad)?;
            let end = ctrl.checked_add(data).ok_or(bad)?;
            if end > scratch.len() {
                return Err(bad);
            }
            let reply = ops::decode::<Reply>(&scratch[..ctrl]).map_err(|_| bad)?;
            GuestReply {
                reply,
                data: ctrl..end,
                console_pending,
            }
        }
    })
}

#[cfg(test)]
mod tests;
