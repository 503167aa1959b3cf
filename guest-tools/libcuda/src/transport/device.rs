//! `/dev/netgpuN`: requests become the device's 128-byte command descriptors, submitted in
//! batches through the kernel module's `NETGPU_IOC_SUBMIT` ioctl. Data buffers are named by
//! their user virtual address; the module pins them and builds the guest-physical scatter
//! lists, so nothing here ever sees a physical address.
//!
//! Posted (stream-ordered) commands wait in a batch until the next call, a flush, or a full
//! batch. Their input is copied into the batch (as CUDA stages pageable memory), so the
//! caller may reuse its buffer at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

use netgpu_proto::abi::{
    self, op, uapi, Command, Completion, DeviceInfoRecord, ParamRecord, SgEntry,
};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DeviceInfo, FunctionInfo, ParamInfo, Reply, Request};

use super::Transport;

/// Most kernel parameters a function may report.
const MAX_PARAMS: usize = 1024;

#[repr(C)]
struct IocSubmit {
    cmds: u64,
    count: u32,
    flags: u32,
}

#[derive(Default)]
struct Batch {
    cmds: Vec<[u8; uapi::CMD_SIZE]>,
    /// Copies of posted inputs; their heap buffers stay put until the batch is submitted.
    owned: Vec<Vec<u8>>,
    /// First failure of posted work submitted without a call.
    deferred: Option<CuResult>,
}

pub struct DeviceTransport {
    file: File,
    path: String,
    batch: Mutex<Batch>,
}

impl DeviceTransport {
    pub fn open(path: &str) -> Result<DeviceTransport, CuResult> {
        let file = File::options().read(true).write(true).open(path).map_err(|e| {
            crate::log(&format!("cannot open {path}: {e} (is the netgpu module loaded, and are you in its group?)"));
            CuResult::NO_DEVICE
        })?;
        Ok(DeviceTransport {
            file,
            path: path.to_string(),
            batch: Mutex::new(Batch::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits `cmds`; returns their completions.
    fn submit(&self, cmds: &mut [[u8; uapi::CMD_SIZE]]) -> Result<Vec<Completion>, CuResult> {
        let mut done = Vec::with_capacity(cmds.len());
        for chunk in cmds.chunks_mut(uapi::MAX_BATCH as usize) {
            crate::stats::round_trip();
            let mut s = IocSubmit {
                cmds: chunk.as_mut_ptr() as u64,
                count: chunk.len() as u32,
                flags: 0,
            };
            // SAFETY: `s` points to `chunk`, `count` initialised command slots of the layout
            // the module expects (struct netgpu_ioc_cmd, checked by the ABI test); every
            // buffer they name outlives this call.
            let r = unsafe {
                libc::ioctl(
                    self.file.as_raw_fd(),
                    uapi::IOC_SUBMIT as _,
                    &mut s as *mut IocSubmit,
                )
            };
            if r != 0 {
                let err = std::io::Error::last_os_error();
                return Err(match err.raw_os_error() {
                    Some(libc::EINVAL) | Some(libc::EFAULT) | Some(libc::E2BIG) => {
                        CuResult::INVALID_VALUE
                    }
                    Some(libc::ENOMEM) => CuResult::OUT_OF_MEMORY,
                    _ => {
                        crate::log(&format!("{}: {err}", self.path));
                        CuResult::DEVICE_UNAVAILABLE
                    }
                });
            }
            for c in chunk.iter() {
                let mut b = [0u8; Completion::SIZE];
                b.copy_from_slice(&c[Command::SIZE..]);
                done.push(Completion::from_bytes(&b));
            }
        }
        Ok(done)
    }
}

fn slot(cmd: &Command) -> [u8; uapi::CMD_SIZE] {
    let mut s = [0u8; uapi::CMD_SIZE];
    s[..Command::SIZE].copy_from_slice(&cmd.to_bytes());
    s
}

fn buf(cmd: &mut Command, ptr: *const u8, len: usize) -> Result<(), CuResult> {
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

/// The descriptor for `req`, with `input`/`output` named by user address.
fn encode(req: &Request, input: &[u8], output: &mut [u8]) -> Result<Command, CuResult> {
    let (opcode, args, has_in, has_out): (u16, Vec<u64>, bool, bool) = match *req {
        Request::Hello { .. } => return Err(CuResult::INVALID_VALUE),
        // Protocol 2 operations the device ABI does not carry yet.
        Request::LaunchKernel { flags, .. } if flags != 0 => return Err(CuResult::NOT_SUPPORTED),
        Request::ModuleLoad { ref parts, .. } if parts.len() > 1 => {
            return Err(CuResult::NOT_SUPPORTED)
        }
        Request::FuncSetAttribute { .. }
        | Request::StreamWaitEvent { .. }
        | Request::Memcpy3D { .. }
        | Request::MemFreeAsync { .. }
        | Request::ConsoleRead { .. } => return Err(CuResult::NOT_SUPPORTED),
        Request::Null => (op::NOP, vec![], false, false),
        Request::DeviceQuery => (op::DEVICE_QUERY, vec![], false, true),
        Request::CtxCreate { flags } => (op::CTX_CREATE, vec![flags.into()], false, false),
        Request::CtxDestroy { ctx } => (op::CTX_DESTROY, vec![ctx], false, false),
        Request::CtxSynchronize { ctx } => (op::CTX_SYNCHRONIZE, vec![ctx], false, false),
        Request::MemAlloc { ctx, size } => (op::MEM_ALLOC, vec![ctx, size], false, false),
        Request::MemFree { ptr } => (op::MEM_FREE, vec![ptr], false, false),
        Request::MemGetInfo => (op::MEM_GET_INFO, vec![], false, false),
        Request::MemcpyHtoD { ctx, dst, stream } => {
            (op::MEMCPY_HTOD, vec![ctx, dst, stream], true, false)
        }
        Request::MemcpyDtoH {
            ctx, src, stream, ..
        } => (op::MEMCPY_DTOH, vec![ctx, src, stream], false, true),
        Request::MemcpyDtoD {
            ctx,
            dst,
            src,
            len,
            stream,
        } => (
            op::MEMCPY_DTOD,
            vec![ctx, dst, src, len, stream],
            false,
            false,
        ),
        Request::Memset {
            ctx,
            dst,
            value,
            elem_size,
            count,
            stream,
        } => (
            op::MEMSET,
            vec![ctx, dst, value.into(), elem_size.into(), count, stream],
            false,
            false,
        ),
        Request::ModuleLoad { ctx, .. } => (op::MODULE_LOAD, vec![ctx], true, false),
        Request::ModuleUnload { module } => (op::MODULE_UNLOAD, vec![module], false, false),
        Request::ModuleGetFunction { module, ref name } => (
            op::MODULE_GET_FUNCTION,
            vec![module, name.len() as u64],
            true,
            true,
        ),
        Request::ModuleGetGlobal { module, ref name } => (
            op::MODULE_GET_GLOBAL,
            vec![module, name.len() as u64],
            true,
            false,
        ),
        Request::LaunchKernel {
            func,
            grid,
            block,
            shared_mem_bytes,
            stream,
            ..
        } => {
            let pair = |a: u32, b: u32| u64::from(a) | (u64::from(b) << 32);
            let geometry = [
                pair(grid[0], grid[1]),
                pair(grid[2], block[0]),
                pair(block[1], block[2]),
            ];
            (
                op::LAUNCH_KERNEL,
                vec![
                    func,
                    geometry[0],
                    geometry[1],
                    geometry[2],
                    shared_mem_bytes.into(),
                    stream,
                ],
                true,
                false,
            )
        }
        Request::StreamCreate { ctx, flags, .. } => {
            (op::STREAM_CREATE, vec![ctx, flags.into()], false, false)
        }
        Request::StreamDestroy { stream } => (op::STREAM_DESTROY, vec![stream], false, false),
        Request::StreamSynchronize { stream } => {
            (op::STREAM_SYNCHRONIZE, vec![stream], false, false)
        }
        Request::StreamQuery { stream } => (op::STREAM_QUERY, vec![stream], false, false),
        Request::EventCreate { ctx, flags } => {
            (op::EVENT_CREATE, vec![ctx, flags.into()], false, false)
        }
        Request::EventRecord { event, stream } => {
            (op::EVENT_RECORD, vec![event, stream], false, false)
        }
        Request::EventSynchronize { event } => (op::EVENT_SYNCHRONIZE, vec![event], false, false),
        Request::EventQuery { event } => (op::EVENT_QUERY, vec![event], false, false),
        Request::EventElapsedTime { start, end } => {
            (op::EVENT_ELAPSED_TIME, vec![start, end], false, false)
        }
        Request::EventDestroy { event } => (op::EVENT_DESTROY, vec![event], false, false),
    };
    let mut c = Command {
        opcode,
        ..Command::default()
    };
    c.args[..args.len()].copy_from_slice(&args);
    if has_in {
        buf(&mut c, input.as_ptr(), input.len())?;
    }
    if has_out {
        buf(&mut c, output.as_mut_ptr(), output.len())?;
    }
    Ok(c)
}

/// The reply a completion stands for.
fn decode(req: &Request, c: &Completion, output: &[u8]) -> Result<Reply, CuResult> {
    if c.result != 0 {
        return Err(CuResult(c.result));
    }
    Ok(match req {
        Request::CtxCreate { .. }
        | Request::ModuleLoad { .. }
        | Request::StreamCreate { .. }
        | Request::EventCreate { .. } => Reply::Handle(c.value0),
        Request::MemAlloc { .. } => Reply::DevPtr(c.value0),
        Request::MemGetInfo => Reply::MemInfo {
            free: c.value0,
            total: c.value1,
        },
        Request::ModuleGetGlobal { .. } => Reply::Global {
            ptr: c.value0,
            size: c.value1,
        },
        Request::EventElapsedTime { .. } => Reply::ElapsedMs(f32::from_bits(c.value0 as u32)),
        Request::ModuleGetFunction { .. } => {
            let count = (c.value1 >> 32) as usize;
            let params = output
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
                .collect::<Vec<_>>();
            if params.len() != count {
                return Err(CuResult::UNKNOWN);
            }
            Reply::Function(FunctionInfo {
                handle: c.value0,
                params,
                param_buffer_size: c.value1 as u32,
                attributes: Vec::new(),
            })
        }
        Request::DeviceQuery => {
            let b: &[u8; DeviceInfoRecord::SIZE] =
                output.try_into().map_err(|_| CuResult::UNKNOWN)?;
            let r = DeviceInfoRecord::from_bytes(b);
            let n = (r.attr_count as usize).min(r.attrs.len());
            Reply::Device(DeviceInfo {
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
            })
        }
        _ => Reply::Done,
    })
}

impl Transport for DeviceTransport {
    fn call(&self, req: &Request, input: &[u8], output: &mut [u8]) -> Result<Reply, CuResult> {
        // The device needs room for the reply of variable-size outputs.
        let mut table;
        let out: &mut [u8] = if matches!(req, Request::ModuleGetFunction { .. }) {
            table = vec![0u8; MAX_PARAMS * ParamRecord::SIZE];
            &mut table
        } else {
            output
        };
        let mut name_in;
        let input: &[u8] = match req {
            Request::ModuleGetFunction { name, .. } | Request::ModuleGetGlobal { name, .. } => {
                name_in = name.as_bytes().to_vec();
                &mut name_in
            }
            _ => input,
        };
        let cmd = encode(req, input, out)?;
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
        if let Some(e) = posted_err {
            if req.is_synchronising(false) {
                return Err(e);
            }
            self.lock().deferred.get_or_insert(e);
        }
        decode(req, own, out)
    }

    fn post(&self, req: &Request, input: &[u8]) -> Result<(), CuResult> {
        let owned = input.to_vec();
        let mut cmd = encode(req, &owned, &mut [])?;
        cmd.flags |= abi::CMD_FLAG_ASYNC;
        let mut b = self.lock();
        crate::stats::posted();
        b.cmds.push(slot(&cmd));
        b.owned.push(owned);
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
        let mut rec = vec![0u8; DeviceInfoRecord::SIZE];
        match self.call(&Request::DeviceQuery, &[], &mut rec)? {
            Reply::Device(d) => Ok(d),
            _ => Err(CuResult::UNKNOWN),
        }
    }

    fn max_transfer(&self) -> usize {
        abi::MAX_TRANSFER as usize
    }

    fn describe(&self) -> String {
        format!("{} (netgpu kernel module)", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_packs_geometry_into_pairs_and_names_the_parameter_buffer() {
        let params = [7u8; 12];
        let req = Request::LaunchKernel {
            func: 9,
            grid: [1, 2, 3],
            block: [32, 4, 1],
            shared_mem_bytes: 64,
            stream: 5,
            flags: 0,
        };
        let c = encode(&req, &params, &mut []).unwrap();
        assert_eq!(c.opcode, op::LAUNCH_KERNEL);
        assert_eq!(
            c.args[..6],
            [9, 1 | 2 << 32, 3 | 32 << 32, 4 | 1 << 32, 64, 5]
        );
        assert_eq!(c.sg_count, 1);
        assert_eq!(c.sg[0].addr, params.as_ptr() as u64);
        assert_eq!(c.sg[0].len, 12);
    }

    #[test]
    fn get_function_takes_the_name_then_the_output_table() {
        let name = b"vector_add";
        let mut out = [0u8; 64];
        let req = Request::ModuleGetFunction {
            module: 3,
            name: "vector_add".into(),
        };
        let c = encode(&req, name, &mut out).unwrap();
        assert_eq!((c.args[0], c.args[1], c.sg_count), (3, 10, 2));
        assert_eq!(c.sg[1].addr, out.as_ptr() as u64);
        let cpl = Completion {
            value0: 77,
            value1: 2 << 32 | 12,
            ..Default::default()
        };
        let mut table = [0u8; 16];
        table[..8].copy_from_slice(&ParamRecord { offset: 0, size: 8 }.to_bytes());
        table[8..].copy_from_slice(&ParamRecord { offset: 8, size: 4 }.to_bytes());
        match decode(&req, &cpl, &table).unwrap() {
            Reply::Function(f) => {
                assert_eq!(f.handle, 77);
                assert_eq!(f.param_buffer_size, 12);
                assert_eq!(
                    f.params,
                    vec![
                        ParamInfo { offset: 0, size: 8 },
                        ParamInfo { offset: 8, size: 4 }
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_completions_become_cuda_errors_and_elapsed_time_is_f32_bits() {
        let req = Request::MemAlloc { ctx: 1, size: 1 };
        let c = Completion {
            result: 2,
            ..Default::default()
        };
        assert_eq!(decode(&req, &c, &[]), Err(CuResult::OUT_OF_MEMORY));
        let req = Request::EventElapsedTime { start: 1, end: 2 };
        let c = Completion {
            value0: u64::from(1.5f32.to_bits()),
            ..Default::default()
        };
        assert_eq!(decode(&req, &c, &[]), Ok(Reply::ElapsedMs(1.5)));
    }

    #[test]
    fn a_missing_device_node_is_no_device() {
        assert_eq!(
            DeviceTransport::open("/nonexistent/netgpu0").err(),
            Some(CuResult::NO_DEVICE)
        );
    }
}
