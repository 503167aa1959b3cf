//! Streams and events. Work on a stream is ordered by the backend; `cuStreamWaitEvent` is a
//! posted `StreamWaitEvent` (a host-side wait on a backend without it).

use std::collections::HashMap;
use std::ffi::{c_float, c_int, c_uint};
use std::sync::Mutex;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Handle, Reply, Request};

use super::context::{GREATEST_PRIORITY, LEAST_PRIORITY};
use super::{ctx, graph, guard, handle_of, opaque, put, stream_of, CUresult, Opaque, R};
use crate::state::{self, lock};

/// # Safety
/// `ph` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(ph: *mut Opaque, flags: c_uint) -> CUresult {
    // SAFETY: same contract.
    guard(|| unsafe { create(ph, flags, 0) })
}

/// What the program may ask about a stream later.
#[derive(Clone, Copy)]
struct StreamInfo {
    flags: c_uint,
    priority: c_int,
    /// The `CUcontext` it belongs to.
    ctx: u64,
}

static STREAMS: Mutex<Option<HashMap<Handle, StreamInfo>>> = Mutex::new(None);

/// # Safety
/// `ph` must be NULL or writable.
unsafe fn create(ph: *mut Opaque, flags: c_uint, priority: c_int) -> R {
    let c = state::current_context()?;
    let ctx = ctx()?;
    if ph.is_null() || flags & !1 != 0 {
        return Err(CuResult::INVALID_VALUE);
    }
    let priority = priority.clamp(GREATEST_PRIORITY, LEAST_PRIORITY);
    let h = state::driver()?.handle(&Request::StreamCreate {
        ctx,
        flags,
        priority,
    })?;
    lock(&STREAMS).get_or_insert_with(HashMap::new).insert(
        h,
        StreamInfo {
            flags,
            priority,
            ctx: c.id,
        },
    );
    // SAFETY: the caller's out-pointer, checked above.
    unsafe { put(ph, opaque(h)) }
}

/// A stream's description; the null and per-thread streams are the current context's
/// default stream (flags 0, priority 0).
fn info(s: Opaque) -> Result<StreamInfo, CuResult> {
    let h = stream_of(s);
    if h == 0 || super::per_thread::is_default(h) {
        return Ok(StreamInfo {
            flags: 0,
            priority: 0,
            ctx: state::current_context()?.id,
        });
    }
    lock(&STREAMS)
        .as_ref()
        .and_then(|m| m.get(&h).copied())
        .ok_or(CuResult::INVALID_HANDLE)
}

/// # Safety
/// `flags` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetFlags(s: Opaque, flags: *mut c_uint) -> CUresult {
    // SAFETY: the caller's out-pointer.
    guard(|| unsafe { put(flags, info(s)?.flags) })
}

/// # Safety
/// `priority` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetPriority(s: Opaque, priority: *mut c_int) -> CUresult {
    // SAFETY: the caller's out-pointer.
    guard(|| unsafe { put(priority, info(s)?.priority) })
}

/// # Safety
/// `pctx` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx(s: Opaque, pctx: *mut Opaque) -> CUresult {
    // SAFETY: the caller's out-pointer.
    guard(|| unsafe { put(pctx, opaque(info(s)?.ctx)) })
}

/// `cuStreamGetCtx_v2`: no green contexts, so that output is NULL.
///
/// # Safety
/// Both pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx_v2(
    s: Opaque,
    pctx: *mut Opaque,
    green: *mut Opaque,
) -> CUresult {
    guard(|| {
        let i = info(s)?;
        // SAFETY: the caller's out-pointers (`green` optional).
        unsafe {
            if !pctx.is_null() {
                put(pctx, opaque(i.ctx))?;
            }
            if !green.is_null() {
                put(green, std::ptr::null_mut())?;
            }
        }
        Ok(())
    })
}

/// # Safety
/// `id` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetId(s: Opaque, id: *mut u64) -> CUresult {
    guard(|| {
        info(s)?;
        // Unique per stream: the backend's handle (the legacy NULL stream is 1).
        let h = stream_of(s);
        // SAFETY: the caller's out-pointer.
        unsafe { put(id, if h == 0 { 1 } else { h }) }
    })
}

/// # Safety
/// `device` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetDevice(s: Opaque, device: *mut c_int) -> CUresult {
    guard(|| {
        info(s)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(device, 0) }
    })
}

/// Whether `s` is capturing (`api::graph`).
///
/// # Safety
/// `status` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(s: Opaque, status: *mut c_int) -> CUresult {
    guard(|| {
        info(s)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(status, graph::status(stream_of(s)).0) }
    })
}

/// As [`cuStreamIsCapturing`], with the capture's id.
///
/// # Safety
/// Each pointer NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo(
    s: Opaque,
    status: *mut c_int,
    id: *mut u64,
) -> CUresult {
    guard(|| {
        info(s)?;
        let (st, i, _) = graph::status(stream_of(s));
        // SAFETY: the caller's out-pointers (`id` optional).
        unsafe {
            put(status, st)?;
            if !id.is_null() {
                put(id, i)?;
            }
        }
        Ok(())
    })
}

/// CUDA 11.3 / 12.3 forms: also the graph being built and the capture's current
/// dependencies (reported as none: the replay keeps capture order, which needs no edges).
///
/// # Safety
/// Each pointer NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2(
    s: Opaque,
    status: *mut c_int,
    id: *mut u64,
    graph: *mut Opaque,
    deps: *mut *const Opaque,
    num_deps: *mut usize,
) -> CUresult {
    guard(|| {
        // SAFETY: the caller's out-pointers.
        CuResult(unsafe { cuStreamGetCaptureInfo(s, status, id) }).ok()?;
        let (_, _, g) = graph::status(stream_of(s));
        // SAFETY: optional outputs, written only when given.
        unsafe {
            if !graph.is_null() {
                put(graph, opaque(g))?;
            }
            if !deps.is_null() {
                put(deps, std::ptr::null())?;
            }
            if !num_deps.is_null() {
                put(num_deps, 0)?;
            }
        }
        Ok(())
    })
}

/// # Safety
/// As [`cuStreamGetCaptureInfo_v2`], with an edge-data output.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v3(
    s: Opaque,
    status: *mut c_int,
    id: *mut u64,
    graph: *mut Opaque,
    deps: *mut *const Opaque,
    edges: *mut *const std::ffi::c_void,
    num_deps: *mut usize,
) -> CUresult {
    // SAFETY: same contract.
    let r = unsafe { cuStreamGetCaptureInfo_v2(s, status, id, graph, deps, num_deps) };
    if r == 0 && !edges.is_null() {
        // SAFETY: the caller's optional out-pointer.
        unsafe { *edges = std::ptr::null() };
    }
    r
}

thread_local! {
    static CAPTURE_MODE: std::cell::Cell<c_int> = const { std::cell::Cell::new(0) };
}

/// The per-thread capture mode. It only governs which calls CUDA forbids while a capture is
/// active; this library forbids none beyond synchronising the capturing stream itself.
///
/// # Safety
/// `mode` must be valid for reading and writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut c_int) -> CUresult {
    guard(|| {
        if mode.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: the caller's in/out int.
        unsafe { *mode = CAPTURE_MODE.with(|m| m.replace(*mode)) };
        Ok(())
    })
}

/// `CUhostFn`.
pub type HostFn = Option<extern "C" fn(*mut std::ffi::c_void)>;
/// `CUstreamCallback`.
pub type StreamCallback = Option<extern "C" fn(Opaque, c_int, *mut std::ffi::c_void)>;

/// Runs `f` once all earlier work on `s` is done; later work waits for it (it runs before
/// this call returns).
pub fn after_stream(s: Opaque, f: impl FnOnce(CuResult)) -> R {
    ctx()?;
    let drv = state::driver()?;
    let r = drv.call(&Request::StreamSynchronize {
        stream: stream_of(s),
    });
    match r {
        Ok(_) => {
            f(CuResult::SUCCESS);
            Ok(())
        }
        Err(e) if e == CuResult::DEVICE_UNAVAILABLE => Err(e),
        Err(e) => {
            f(e);
            Err(e)
        }
    }
}

/// # Safety
/// `f` must be a valid host function.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc(
    s: Opaque,
    f: HostFn,
    data: *mut std::ffi::c_void,
) -> CUresult {
    guard(|| {
        let f = f.ok_or(CuResult::INVALID_VALUE)?;
        let data = data as usize;
        if graph::record(stream_of(s), || graph::Node::Host { f, data })? {
            return Ok(());
        }
        after_stream(s, |r| {
            if r.is_success() {
                f(data as *mut std::ffi::c_void)
            }
        })
    })
}

/// `cuLaunchHostFunc_v2` (CUDA 13.1): the sync mode changes nothing when the function runs
/// after the stream has drained.
///
/// # Safety
/// As [`cuLaunchHostFunc`].
#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc_v2(
    s: Opaque,
    f: HostFn,
    data: *mut std::ffi::c_void,
    _mode: c_uint,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLaunchHostFunc(s, f, data) }
}

/// # Safety
/// `cb` must be a valid callback.
#[no_mangle]
pub unsafe extern "C" fn cuStreamAddCallback(
    s: Opaque,
    cb: StreamCallback,
    data: *mut std::ffi::c_void,
    flags: c_uint,
) -> CUresult {
    guard(|| {
        let cb = cb.ok_or(CuResult::INVALID_VALUE)?;
        graph::refuse_if_capturing(stream_of(s))?;
        if flags != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let data = data as usize;
        // The callback also runs (with the error) when earlier work failed, as in CUDA.
        after_stream(s, |r| cb(s, r.0 as c_int, data as *mut std::ffi::c_void)).or_else(|e| {
            if e == CuResult::DEVICE_UNAVAILABLE {
                Err(e)
            } else {
                Ok(())
            }
        })
    })
}

/// The priority goes to the backend (clamped to [`GREATEST_PRIORITY`, `LEAST_PRIORITY`]).
///
/// # Safety
/// As [`cuStreamCreate`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ph: *mut Opaque,
    flags: c_uint,
    priority: c_int,
) -> CUresult {
    // SAFETY: same contract.
    guard(|| unsafe { create(ph, flags, priority) })
}

#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(s: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        if let Some(m) = lock(&STREAMS).as_mut() {
            m.remove(&stream_of(s));
        }
        drv.transport.flush()?;
        drv.call(&Request::StreamDestroy {
            stream: stream_of(s),
        })
        .map(|_| ())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(s: Opaque) -> CUresult {
    guard(|| {
        ctx()?;
        graph::refuse_if_capturing(stream_of(s))?;
        state::driver()?
            .call(&Request::StreamSynchronize {
                stream: stream_of(s),
            })
            .map(|_| ())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamQuery(s: Opaque) -> CUresult {
    guard(|| {
        ctx()?;
        graph::refuse_if_capturing(stream_of(s))?;
        state::driver()?
            .call(&Request::StreamQuery {
                stream: stream_of(s),
            })
            .map(|_| ())
    })
}

/// Later work on `s` waits for `event`'s work (in a capture: joins it, or records the wait).
#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(s: Opaque, event: Opaque, _flags: c_uint) -> CUresult {
    guard(|| {
        ctx()?;
        if graph::wait_event(stream_of(s), handle_of(event))? {
            return Ok(());
        }
        wait_event_now(stream_of(s), handle_of(event))
    })
}

/// Makes later work on `stream` wait for `event`: a posted `StreamWaitEvent` (the backend
/// orders it; no round trip), or, on a backend without it, a wait on the host for the event
/// (correct, if more conservative).
pub fn wait_event_now(stream: Handle, event: Handle) -> R {
    let req = Request::StreamWaitEvent { stream, event };
    if super::optional::send(
        super::optional::Op::StreamWaitEvent,
        &req,
        &[],
        &mut [],
        true,
    )? {
        return Ok(());
    }
    state::driver()?
        .call(&Request::EventSynchronize { event })
        .map(|_| ())
}

/// # Safety
/// `ph` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(ph: *mut Opaque, flags: c_uint) -> CUresult {
    guard(|| {
        let ctx = ctx()?;
        if ph.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let h = state::driver()?.handle(&Request::EventCreate { ctx, flags })?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(ph, opaque(h)) }
    })
}

#[no_mangle]
pub extern "C" fn cuEventRecord(event: Opaque, s: Opaque) -> CUresult {
    guard(|| {
        ctx()?;
        if graph::record_event(handle_of(event), stream_of(s))? {
            return Ok(());
        }
        let req = Request::EventRecord {
            event: handle_of(event),
            stream: stream_of(s),
        };
        state::driver()?.transport.post(&req, &[])
    })
}

/// `CU_EVENT_RECORD_EXTERNAL`: in stream capture, an external event-record node.
const EVENT_RECORD_EXTERNAL: c_uint = 1;

/// `cuEventRecord` with `CU_EVENT_RECORD_DEFAULT` (what PyTorch's `Event.record` calls);
/// `CU_EVENT_RECORD_EXTERNAL` (graph capture's external event nodes) is not supported, any
/// other flag is invalid.
#[no_mangle]
pub extern "C" fn cuEventRecordWithFlags(event: Opaque, s: Opaque, flags: c_uint) -> CUresult {
    match flags {
        0 => cuEventRecord(event, s),
        EVENT_RECORD_EXTERNAL => {
            state::unsupported("cuEventRecordWithFlags(CU_EVENT_RECORD_EXTERNAL)").0
        }
        _ => CuResult::INVALID_VALUE.0,
    }
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: Opaque) -> CUresult {
    guard(|| {
        state::driver()?
            .call(&Request::EventSynchronize {
                event: handle_of(event),
            })
            .map(|_| ())
    })
}

#[no_mangle]
pub extern "C" fn cuEventQuery(event: Opaque) -> CUresult {
    guard(|| {
        state::driver()?
            .call(&Request::EventQuery {
                event: handle_of(event),
            })
            .map(|_| ())
    })
}

/// # Safety
/// `ms` must be NULL or valid for writing a float.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(
    ms: *mut c_float,
    start: Opaque,
    end: Opaque,
) -> CUresult {
    guard(|| {
        let req = Request::EventElapsedTime {
            start: handle_of(start),
            end: handle_of(end),
        };
        match state::driver()?.call(&req)? {
            // SAFETY: the caller's out-pointer.
            Reply::ElapsedMs(v) => unsafe { put(ms, v) },
            _ => Err(CuResult::UNKNOWN),
        }
    })
}

#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(event: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        drv.transport.flush()?;
        drv.call(&Request::EventDestroy {
            event: handle_of(event),
        })
        .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags are checked before anything else: no driver needed.
    #[test]
    fn event_record_flags_other_than_default_are_refused() {
        let e = std::ptr::null_mut();
        assert_eq!(
            cuEventRecordWithFlags(e, e, EVENT_RECORD_EXTERNAL),
            CuResult::NOT_SUPPORTED.0
        );
        assert_eq!(cuEventRecordWithFlags(e, e, 2), CuResult::INVALID_VALUE.0);
    }
}
