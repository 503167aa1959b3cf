//! Forwarding policy: how a decoded command ([`codec::DeviceRequest`]) becomes the wire
//! frames sent for it ([`plan`]), and what the device itself keeps track of around them (the
//! device-wide memory limit, [`Quota`]).
//!
//! This module decides; it moves no bytes. Which opcode means which request is the codec's
//! business (`netgpu_proto::abi::codec`); sending and receiving is the worker's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netgpu_proto::abi::codec::{DeviceRequest, ReplyForm};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{self, DevPtr, Handle, Reply, Request};

/// One frame sent for a command.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub request: Request,
    pub no_reply: bool,
    /// The frame's data section: `len` bytes of the command's input from `skip` on.
    pub data_skip: u64,
    pub data_len: u64,
    /// Where this part's reply data goes in the command's output, and how much room it has.
    pub out_skip: u64,
    pub out_len: u64,
    /// How this part's reply becomes completion values (the last part's reply completes the
    /// command; earlier replies only contribute their data and errors).
    pub form: ReplyForm,
}

/// What the device does around a command's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// `MemAlloc` of `size` bytes in `ctx` was reserved against the limit: record the
    /// pointer on success, give the bytes back on failure.
    Alloc {
        ctx: Handle,
        size: u64,
    },
    /// Give the allocation at `ptr` back once freed.
    Free {
        ptr: DevPtr,
    },
    /// A destroyed context frees all its allocations.
    ForgetCtx {
        ctx: Handle,
    },
    /// `MemGetInfo`: report at most the device-wide limit.
    MemInfo,
}

/// The frames of one command and its effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub parts: Vec<Part>,
    pub effect: Effect,
    /// The command completes once its frames are written (no part waits for a reply).
    pub posted: bool,
}

/// Plans the frames for `dr`, whose output has `output_len` bytes, for a backend that accepts
/// data sections of at most `max_data` bytes. Copies larger than that become several frames
/// (pipelined: only the last one of a synchronous host-to-device copy waits); any other
/// request whose data does not fit one frame is refused.
pub fn plan(dr: &DeviceRequest, output_len: u64, max_data: u64) -> Result<Plan, CuResult> {
    let max_data = max_data.max(4096);
    let effect = match &dr.request {
        Request::MemAlloc { ctx, size } => Effect::Alloc {
            ctx: *ctx,
            size: *size,
        },
        Request::MemFree { ptr } | Request::MemFreeAsync { ptr, .. } => Effect::Free { ptr: *ptr },
        Request::CtxDestroy { ctx } => Effect::ForgetCtx { ctx: *ctx },
        Request::MemGetInfo => Effect::MemInfo,
        _ => Effect::None,
    };
    let single = |request: Request, no_reply: bool| Part {
        request,
        no_reply,
        data_skip: dr.data_skip,
        data_len: dr.data_len,
        out_skip: 0,
        out_len: output_len,
        form: dr.form,
    };
    let mut parts = Vec::new();
    match &dr.request {
        Request::MemcpyHtoD { ctx, dst, stream } if dr.data_len > max_data => {
            let mut off = 0;
            while off < dr.data_len {
                let n = (dr.data_len - off).min(max_data);
                let last = off + n == dr.data_len;
                parts.push(Part {
                    request: Request::MemcpyHtoD {
                        ctx: *ctx,
                        dst: dst.wrapping_add(off),
                        stream: *stream,
                    },
                    no_reply: dr.no_reply || !last,
                    data_skip: dr.data_skip + off,
                    data_len: n,
                    out_skip: 0,
                    out_len: 0,
                    form: dr.form,
                });
                off += n;
            }
        }
        Request::MemcpyDtoH {
            ctx,
            src,
            len,
            stream,
        } if *len > max_data && dr.form == ReplyForm::Data => {
            let mut off = 0;
            while off < *len {
                let n = (*len - off).min(max_data);
                parts.push(Part {
                    request: Request::MemcpyDtoH {
                        ctx: *ctx,
                        src: src.wrapping_add(off),
                        len: n,
                        stream: *stream,
                    },
                    no_reply: false,
                    data_skip: 0,
                    data_len: 0,
                    out_skip: off,
                    out_len: n,
                    form: ReplyForm::Data,
                });
                off += n;
            }
        }
        _ if dr.data_len > max_data => return Err(CuResult::INVALID_VALUE),
        _ => match dr.then_sync {
            Some(stream) => {
                parts.push(single(dr.request.clone(), true));
                parts.push(Part {
                    request: Request::StreamSynchronize { stream },
                    no_reply: false,
                    data_skip: 0,
                    data_len: 0,
                    out_skip: 0,
                    out_len: 0,
                    form: ReplyForm::Done,
                });
            }
            None => parts.push(single(dr.request.clone(), dr.no_reply)),
        },
    }
    let posted = parts.iter().all(|p| p.no_reply);
    Ok(Plan {
        parts,
        effect,
        posted,
    })
}

/// One queue's share of the device's memory limit (`netgpu-vdev --memory`). Every queue has a
/// backend session of its own, so the device-wide limit is kept here: all queues draw on one
/// counter, each remembers what it allocated, and a closed queue gives its share back.
pub struct Quota {
    used: Arc<AtomicU64>,
    /// 0: no device-wide limit.
    limit: u64,
    /// Device pointer -> (bytes, context) of this queue's live allocations.
    allocs: HashMap<u64, (u64, Handle)>,
    /// Bytes reserved for allocations whose reply has not come yet.
    reserved: u64,
}

impl Quota {
    pub fn new(used: Arc<AtomicU64>, limit: u64) -> Self {
        Quota {
            used,
            limit,
            allocs: HashMap::new(),
            reserved: 0,
        }
    }

    /// Reserves `bytes` for an allocation (settled by [`Quota::settle`]); false when the
    /// device-wide limit would be exceeded.
    pub fn reserve(&mut self, bytes: u64) -> bool {
        let ok = self.limit == 0
            || self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    u.checked_add(bytes).filter(|&n| n <= self.limit)
                })
                .is_ok();
        if ok {
            self.reserved = self.reserved.saturating_add(bytes);
        }
        ok
    }

    fn release(&self, bytes: u64) {
        if self.limit != 0 {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(bytes))
                });
        }
    }

    /// Applies `effect` once the command's result `result` (and, for an allocation, the
    /// pointer `value0`) is known.
    pub fn settle(&mut self, effect: Effect, result: CuResult, value0: u64) {
        match effect {
            Effect::Alloc { ctx, size } => {
                self.reserved = self.reserved.saturating_sub(size);
                if result.is_success() {
                    self.allocs.insert(value0, (size, ctx));
                } else {
                    self.release(size);
                }
            }
            Effect::Free { ptr } if result.is_success() => {
                if let Some((bytes, _)) = self.allocs.remove(&ptr) {
                    self.release(bytes);
                }
            }
            Effect::ForgetCtx { ctx } if result.is_success() => {
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
            _ => {}
        }
    }

    /// `(free, total)` as the device-wide limit sees it, if there is one.
    pub fn info(&self) -> Option<(u64, u64)> {
        (self.limit != 0).then(|| {
            (
                self.limit.saturating_sub(self.used.load(Ordering::Acquire)),
                self.limit,
            )
        })
    }

    /// Clamps a `MemGetInfo` answer to the device-wide limit: completion values (fixed form)
    /// or a reply control section (wire form, re-encoded).
    pub fn clamp_mem_info(&self, v0: &mut u64, v1: &mut u64, ctrl: Option<&mut Vec<u8>>) {
        let Some((qf, qt)) = self.info() else {
            return;
        };
        match ctrl {
            None => {
                *v0 = (*v0).min(qf);
                *v1 = (*v1).min(qt);
            }
            Some(ctrl) => {
                if let Ok(Reply::MemInfo { free, total }) = ops::decode::<Reply>(ctrl) {
                    let r = Reply::MemInfo {
                        free: free.min(qf),
                        total: total.min(qt),
                    };
                    if let Ok(b) = ops::encode(&r) {
                        *ctrl = b;
                    }
                }
            }
        }
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        let total: u64 = self.allocs.values().map(|(b, _)| *b).sum();
        self.release(total.saturating_add(self.reserved));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dr(request: Request, data_len: u64, form: ReplyForm) -> DeviceRequest {
        DeviceRequest {
            request,
            no_reply: false,
            data_skip: 0,
            data_len,
            then_sync: None,
            form,
        }
    }

    #[test]
    fn large_copies_become_frames_the_backend_accepts() {
        let htod = dr(
            Request::MemcpyHtoD {
                ctx: 1,
                dst: 0x1000,
                stream: 2,
            },
            10_000,
            ReplyForm::Done,
        );
        let p = plan(&htod, 0, 4096).unwrap();
        assert_eq!(p.parts.len(), 3);
        assert!(p.parts[..2].iter().all(|x| x.no_reply));
        assert!(
            !p.parts[2].no_reply,
            "a synchronous copy waits for its last part"
        );
        assert_eq!(
            p.parts[2].request,
            Request::MemcpyHtoD {
                ctx: 1,
                dst: 0x1000 + 8192,
                stream: 2
            }
        );
        assert_eq!((p.parts[2].data_skip, p.parts[2].data_len), (8192, 1808));
        assert!(!p.posted);
        let dtoh = dr(
            Request::MemcpyDtoH {
                ctx: 1,
                src: 0x2000,
                len: 9000,
                stream: 0,
            },
            0,
            ReplyForm::Data,
        );
        let p = plan(&dtoh, 9000, 4096).unwrap();
        assert_eq!(p.parts.len(), 3);
        assert_eq!((p.parts[1].out_skip, p.parts[1].out_len), (4096, 4096));
        assert!(p.parts.iter().all(|x| !x.no_reply));
        // Data of any other request must fit one frame.
        let load = dr(
            Request::ModuleLoad {
                ctx: 1,
                parts: vec![],
            },
            10_000,
            ReplyForm::Handle,
        );
        assert_eq!(plan(&load, 0, 4096), Err(CuResult::INVALID_VALUE));
    }

    #[test]
    fn a_synchronous_launch_waits_for_its_stream_and_posted_work_does_not() {
        let mut launch = dr(
            Request::LaunchKernel {
                func: 1,
                grid: [1; 3],
                block: [1; 3],
                shared_mem_bytes: 0,
                stream: 7,
                flags: 0,
            },
            8,
            ReplyForm::Done,
        );
        launch.no_reply = true;
        launch.then_sync = Some(7);
        let p = plan(&launch, 0, 1 << 20).unwrap();
        assert_eq!(p.parts.len(), 2);
        assert!(p.parts[0].no_reply);
        assert_eq!(p.parts[1].request, Request::StreamSynchronize { stream: 7 });
        assert!(!p.posted);
        launch.then_sync = None;
        assert!(plan(&launch, 0, 1 << 20).unwrap().posted);
    }

    #[test]
    fn the_device_memory_limit_is_shared_and_returned() {
        let used = Arc::new(AtomicU64::new(0));
        let mut a = Quota::new(Arc::clone(&used), 1000);
        let mut b = Quota::new(Arc::clone(&used), 1000);
        let mut c = Quota::new(Arc::clone(&used), 1000);
        assert!(c.reserve(10));
        drop(c);
        assert_eq!(
            used.load(Ordering::Acquire),
            0,
            "a queue closed with an allocation in flight gives its reservation back"
        );
        assert!(a.reserve(600));
        a.settle(Effect::Alloc { ctx: 1, size: 600 }, CuResult::SUCCESS, 0xa);
        assert!(!b.reserve(500), "over the device limit");
        assert!(b.reserve(400));
        b.settle(
            Effect::Alloc { ctx: 2, size: 400 },
            CuResult::OUT_OF_MEMORY,
            0,
        );
        assert_eq!(
            used.load(Ordering::Acquire),
            600,
            "a failed allocation gives back"
        );
        let (mut f, mut t) = (u64::MAX, u64::MAX);
        b.clamp_mem_info(&mut f, &mut t, None);
        assert_eq!((f, t), (400, 1000));
        let mut ctrl = ops::encode(&Reply::MemInfo {
            free: 1 << 40,
            total: 1 << 41,
        })
        .unwrap();
        b.clamp_mem_info(&mut 0, &mut 0, Some(&mut ctrl));
        assert_eq!(
            ops::decode::<Reply>(&ctrl).unwrap(),
            Reply::MemInfo {
                free: 400,
                total: 1000
            }
        );
        a.settle(Effect::ForgetCtx { ctx: 1 }, CuResult::SUCCESS, 0);
        assert_eq!(used.load(Ordering::Acquire), 0);
        assert!(a.reserve(100));
        a.settle(Effect::Alloc { ctx: 1, size: 100 }, CuResult::SUCCESS, 0xb);
        drop(a);
        assert_eq!(
            used.load(Ordering::Acquire),
            0,
            "a closed queue gives its share back"
        );
        b.settle(Effect::Free { ptr: 0xdead }, CuResult::SUCCESS, 0);
        assert_eq!(
            used.load(Ordering::Acquire),
            0,
            "unknown pointers change nothing"
        );
    }
}
