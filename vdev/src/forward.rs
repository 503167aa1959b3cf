//! Command forwarding: one command descriptor becomes one backend call (`netgpu-client`),
//! its data gathered from or scattered to guest memory through the command's validated
//! scatter-gather list, its result turned into a completion.
//!
//! Every check a guest can fail completes the command with a CUDA error code; nothing here
//! panics or touches memory outside what the client mapped.

use netgpu_client::{Client, ClientError, CuResult, Handle};
use netgpu_proto::abi::{self, op, Command, DeviceInfoRecord, ParamRecord};
use tracing::debug;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::memory::Snapshot;
use crate::sg::SgList;

/// One queue's share of the device's memory limit (`netgpu-vdev --memory`). Every queue has a
/// backend session of its own, so the device-wide limit is kept here: all queues draw on one
/// counter, each remembers what it allocated, and a closed queue gives its share back.
pub struct Quota<'a> {
    used: &'a AtomicU64,
    /// 0: no device-wide limit.
    limit: u64,
    /// Device pointer -> (bytes, context) of this queue's live allocations.
    allocs: HashMap<u64, (u64, Handle)>,
}

impl<'a> Quota<'a> {
    pub fn new(used: &'a AtomicU64, limit: u64) -> Self {
        Quota {
            used,
            limit,
            allocs: HashMap::new(),
        }
    }

    fn reserve(&self, bytes: u64) -> bool {
        self.limit == 0
            || self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    u.checked_add(bytes).filter(|&n| n <= self.limit)
                })
                .is_ok()
    }

    fn release(&self, bytes: u64) {
        if self.limit != 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    fn forget_ctx(&mut self, ctx: Handle) {
        let mut freed = 0;
        self.allocs.retain(|_, (b, c)| {
            if *c == ctx {
                freed += *b;
                false
            } else {
                true
            }
        });
        self.release(freed);
    }

    /// `(free, total)` as the device-wide limit sees it, if there is one.
    fn info(&self) -> Option<(u64, u64)> {
        (self.limit != 0).then(|| {
            (
                self.limit.saturating_sub(self.used.load(Ordering::Acquire)),
                self.limit,
            )
        })
    }
}

impl Drop for Quota<'_> {
    fn drop(&mut self) {
        let total = self.allocs.values().map(|(b, _)| *b).sum();
        self.release(total);
    }
}

/// The result of one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result: CuResult,
    pub v0: u64,
    pub v1: u64,
    /// The backend connection is gone.
    pub lost: bool,
}

impl Outcome {
    fn ok(v0: u64, v1: u64) -> Self {
        Outcome {
            result: CuResult::SUCCESS,
            v0,
            v1,
            lost: false,
        }
    }

    fn err(result: CuResult) -> Self {
        Outcome {
            result,
            v0: 0,
            v1: 0,
            lost: false,
        }
    }
}

impl From<ClientError> for Outcome {
    fn from(e: ClientError) -> Self {
        Outcome {
            result: e.cuda_result(),
            v0: 0,
            v1: 0,
            lost: matches!(e, ClientError::Disconnected(_)),
        }
    }
}

fn done<T>(r: Result<T, ClientError>, f: impl FnOnce(T) -> (u64, u64)) -> Outcome {
    match r {
        Ok(v) => {
            let (a, b) = f(v);
            Outcome::ok(a, b)
        }
        Err(e) => e.into(),
    }
}

fn may_be_async(opcode: u16) -> bool {
    matches!(
        opcode,
        op::MEMCPY_HTOD | op::MEMCPY_DTOD | op::MEMSET | op::LAUNCH_KERNEL | op::EVENT_RECORD
    )
}

fn uses_data(opcode: u16) -> bool {
    matches!(
        opcode,
        op::DEVICE_QUERY
            | op::MEMCPY_HTOD
            | op::MEMCPY_DTOH
            | op::MODULE_LOAD
            | op::MODULE_GET_FUNCTION
            | op::MODULE_GET_GLOBAL
            | op::LAUNCH_KERNEL
    )
}

/// Executes `cmd`. `ctxs` tracks the contexts created through this queue, which the queue
/// destroys when it is disabled.
pub async fn execute(
    name: &str,
    client: &Client,
    mem: &Snapshot,
    cmd: &Command,
    ctxs: &mut Vec<Handle>,
    quota: &mut Quota<'_>,
) -> Outcome {
    if !op::ALL.contains(&cmd.opcode) || cmd.flags & !abi::CMD_FLAGS_ALL != 0 || cmd.reserved != 0 {
        debug!(
            device = name,
            opcode = cmd.opcode,
            flags = cmd.flags,
            "unsupported command"
        );
        return Outcome::err(CuResult::NOT_SUPPORTED);
    }
    let is_async = cmd.flags & abi::CMD_FLAG_ASYNC != 0;
    if is_async && !may_be_async(cmd.opcode) {
        return Outcome::err(CuResult::INVALID_VALUE);
    }
    let sg = if uses_data(cmd.opcode) {
        match SgList::resolve(cmd, mem) {
            Ok(sg) => sg,
            Err(e) => {
                debug!(device = name, cid = cmd.cid, "bad scatter-gather list: {e}");
                return Outcome::err(CuResult::INVALID_VALUE);
            }
        }
    } else {
        SgList::default()
    };
    let a = cmd.args;
    match cmd.opcode {
        op::NOP => Outcome::ok(0, 0),
        op::DEVICE_QUERY => match client.device_query().await {
            Ok(d) => {
                let mut r = DeviceInfoRecord::default();
                let n = d.name.len().min(r.name.len() - 1);
                r.name[..n].copy_from_slice(&d.name.as_bytes()[..n]);
                r.total_mem = d.total_mem;
                r.cc_major = d.cc_major;
                r.cc_minor = d.cc_minor;
                r.multiprocessors = d.multiprocessors;
                r.driver_version = d.driver_version;
                r.uuid = d.uuid;
                r.executor = match d.executor.as_str() {
                    "cuda" => abi::EXECUTOR_CUDA,
                    "cpu" => abi::EXECUTOR_CPU,
                    _ => abi::EXECUTOR_NONE,
                };
                let count = d.attributes.len().min(abi::DEVICE_INFO_MAX_ATTRS);
                r.attr_count = count as u32;
                for (slot, (attr, val)) in r.attrs.iter_mut().zip(&d.attributes) {
                    *slot = [*attr, *val as u32];
                }
                if sg.total < DeviceInfoRecord::SIZE as u64 {
                    return Outcome::err(CuResult::INVALID_VALUE);
                }
                match sg.scatter(mem, 0, &r.to_bytes()) {
                    Ok(()) => Outcome::ok(DeviceInfoRecord::SIZE as u64, 0),
                    Err(_) => Outcome::err(CuResult::INVALID_VALUE),
                }
            }
            Err(e) => e.into(),
        },
        op::MEM_GET_INFO => {
            let info = quota.info();
            done(client.mem_get_info().await, |(f, t)| match info {
                Some((qf, qt)) => (f.min(qf), t.min(qt)),
                None => (f, t),
            })
        }
        op::CTX_CREATE => {
            let r = client.ctx_create(a[0] as u32).await;
            if let Ok(h) = &r {
                ctxs.push(*h);
            }
            done(r, |h| (h, 0))
        }
        op::CTX_DESTROY => {
            let r = client.ctx_destroy(a[0]).await;
            if r.is_ok() {
                ctxs.retain(|c| *c != a[0]);
                quota.forget_ctx(a[0]);
            }
            done(r, |_| (0, 0))
        }
        op::CTX_SYNCHRONIZE => done(client.ctx_synchronize(a[0]).await, |_| (0, 0)),
        op::MEM_ALLOC => {
            if !quota.reserve(a[1]) {
                return Outcome::err(CuResult::OUT_OF_MEMORY);
            }
            let r = client.mem_alloc(a[0], a[1]).await;
            match &r {
                Ok(p) => {
                    quota.allocs.insert(*p, (a[1], a[0]));
                }
                Err(_) => quota.release(a[1]),
            }
            done(r, |p| (p, 0))
        }
        op::MEM_FREE => {
            let r = client.mem_free(a[0]).await;
            if r.is_ok() {
                if let Some((bytes, _)) = quota.allocs.remove(&a[0]) {
                    quota.release(bytes);
                }
            }
            done(r, |_| (0, 0))
        }
        op::MEMCPY_HTOD => {
            let data = match sg.gather(mem, 0, sg.total) {
                Ok(d) => d,
                Err(_) => return Outcome::err(CuResult::INVALID_VALUE),
            };
            let r = if is_async {
                client.memcpy_htod_async(a[0], a[1], &data, a[2]).await
            } else {
                client.memcpy_htod(a[0], a[1], &data, a[2]).await
            };
            done(r, |_| (0, 0))
        }
        op::MEMCPY_DTOH => match client.memcpy_dtoh(a[0], a[1], sg.total, a[2]).await {
            Ok(data) => match sg.scatter(mem, 0, &data) {
                Ok(()) => Outcome::ok(data.len() as u64, 0),
                Err(_) => Outcome::err(CuResult::INVALID_VALUE),
            },
            Err(e) => e.into(),
        },
        op::MEMCPY_DTOD => {
            let r = if is_async {
                client.memcpy_dtod_async(a[0], a[1], a[2], a[3], a[4]).await
            } else {
                client.memcpy_dtod(a[0], a[1], a[2], a[3], a[4]).await
            };
            done(r, |_| (0, 0))
        }
        op::MEMSET => {
            let elem = a[3];
            if !matches!(elem, 1 | 2 | 4) {
                return Outcome::err(CuResult::INVALID_VALUE);
            }
            let r = if is_async {
                client
                    .memset_async(a[0], a[1], a[2] as u32, elem as u8, a[4], a[5])
                    .await
            } else {
                client
                    .memset(a[0], a[1], a[2] as u32, elem as u8, a[4], a[5])
                    .await
            };
            done(r, |_| (0, 0))
        }
        op::MODULE_LOAD => {
            let image = match sg.gather(mem, 0, sg.total) {
                Ok(d) => d,
                Err(_) => return Outcome::err(CuResult::INVALID_VALUE),
            };
            done(client.module_load(a[0], &image).await, |h| (h, 0))
        }
        op::MODULE_UNLOAD => done(client.module_unload(a[0]).await, |_| (0, 0)),
        op::MODULE_GET_FUNCTION | op::MODULE_GET_GLOBAL => {
            let n = a[1];
            if n == 0 || n > u64::from(abi::MAX_NAME_LEN) || n > sg.total {
                return Outcome::err(CuResult::INVALID_VALUE);
            }
            let name = match sg
                .gather(mem, 0, n)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(s) => s,
                None => return Outcome::err(CuResult::INVALID_VALUE),
            };
            if cmd.opcode == op::MODULE_GET_GLOBAL {
                return done(client.module_get_global(a[0], &name).await, |(p, s)| (p, s));
            }
            match client.module_get_function(a[0], &name).await {
                Ok(f) => {
                    let room = ((sg.total - n) / ParamRecord::SIZE as u64) as usize;
                    let mut out = Vec::new();
                    for p in f.params.iter().take(room) {
                        let rec = ParamRecord {
                            offset: p.offset,
                            size: p.size,
                        };
                        out.extend_from_slice(&rec.to_bytes());
                    }
                    if sg.scatter(mem, n, &out).is_err() {
                        return Outcome::err(CuResult::INVALID_VALUE);
                    }
                    let v1 = ((f.params.len() as u64) << 32) | u64::from(f.param_buffer_size);
                    Outcome::ok(f.handle, v1)
                }
                Err(e) => e.into(),
            }
        }
        op::LAUNCH_KERNEL => {
            if sg.total > u64::from(abi::MAX_PARAM_BUFFER) {
                return Outcome::err(CuResult::INVALID_VALUE);
            }
            let params = match sg.gather(mem, 0, sg.total) {
                Ok(d) => d,
                Err(_) => return Outcome::err(CuResult::INVALID_VALUE),
            };
            let (grid, block) = abi::unpack_launch_dims([a[1], a[2], a[3]]);
            let r = client
                .launch_kernel(a[0], grid, block, a[4] as u32, a[5], &params)
                .await;
            if r.is_ok() && !is_async {
                // A synchronous launch waits for its stream, so the guest sees its errors.
                return done(client.stream_synchronize(a[5]).await, |_| (0, 0));
            }
            done(r, |_| (0, 0))
        }
        op::STREAM_CREATE => done(client.stream_create(a[0], a[1] as u32).await, |h| (h, 0)),
        op::STREAM_DESTROY => done(client.stream_destroy(a[0]).await, |_| (0, 0)),
        op::STREAM_SYNCHRONIZE => done(client.stream_synchronize(a[0]).await, |_| (0, 0)),
        op::STREAM_QUERY => match client.stream_query(a[0]).await {
            Ok(true) => Outcome::ok(0, 0),
            Ok(false) => Outcome::err(CuResult::NOT_READY),
            Err(e) => e.into(),
        },
        op::EVENT_CREATE => done(client.event_create(a[0], a[1] as u32).await, |h| (h, 0)),
        op::EVENT_RECORD => done(client.event_record(a[0], a[1]).await, |_| (0, 0)),
        op::EVENT_SYNCHRONIZE => done(client.event_synchronize(a[0]).await, |_| (0, 0)),
        op::EVENT_QUERY => match client.event_query(a[0]).await {
            Ok(true) => Outcome::ok(0, 0),
            Ok(false) => Outcome::err(CuResult::NOT_READY),
            Err(e) => e.into(),
        },
        op::EVENT_ELAPSED_TIME => done(client.event_elapsed_time(a[0], a[1]).await, |ms| {
            (u64::from(ms.to_bits()), 0)
        }),
        op::EVENT_DESTROY => done(client.event_destroy(a[0]).await, |_| (0, 0)),
        _ => Outcome::err(CuResult::NOT_SUPPORTED),
    }
}
