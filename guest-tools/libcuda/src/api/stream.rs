//! Streams and events. Work on a stream is ordered by the backend; `cuStreamWaitEvent`
//! waits on the host for the event (correct, if more conservative than a device-side wait).

use std::ffi::{c_float, c_int, c_uint};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Reply, Request};

use super::{ctx, guard, handle_of, opaque, put, stream_of, CUresult, Opaque};
use crate::state;

/// # Safety
/// `ph` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(ph: *mut Opaque, flags: c_uint) -> CUresult {
    guard(|| {
        let ctx = ctx()?;
        if ph.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let h = state::driver()?.handle(&Request::StreamCreate {
            ctx,
            flags,
            priority: 0,
        })?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(ph, opaque(h)) }
    })
}

/// Priorities are accepted and ignored.
///
/// # Safety
/// As [`cuStreamCreate`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ph: *mut Opaque,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuStreamCreate(ph, flags) }
}

#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(s: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
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
        state::driver()?
            .call(&Request::StreamQuery {
                stream: stream_of(s),
            })
            .map(|_| ())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(_s: Opaque, event: Opaque, _flags: c_uint) -> CUresult {
    guard(|| {
        ctx()?;
        state::driver()?
            .call(&Request::EventSynchronize {
                event: handle_of(event),
            })
            .map(|_| ())
    })
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
        let req = Request::EventRecord {
            event: handle_of(event),
            stream: stream_of(s),
        };
        state::driver()?.transport.post(&req, &[])
    })
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
