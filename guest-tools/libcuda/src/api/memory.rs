//! Device memory: allocation, copies (split into transport-sized pieces), memsets, and
//! page-locked host memory (plain host memory here: every copy is staged by the transport
//! anyway, so "pinned" buys nothing and costs nothing).

use std::ffi::{c_uint, c_void};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Handle, Reply, Request};

use super::{ctx, guard, put, stream_of, CUdeviceptr, CUresult, Opaque, R};
use crate::state;

/// # Safety
/// `dptr` must be NULL or valid for writing a CUdeviceptr.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    guard(|| {
        let ctx = ctx()?;
        if dptr.is_null() || bytesize == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        match state::driver()?.call(&Request::MemAlloc {
            ctx,
            size: bytesize as u64,
        })? {
            // SAFETY: the caller's out-pointer, checked above.
            Reply::DevPtr(p) => unsafe { put(dptr, p) },
            _ => Err(CuResult::UNKNOWN),
        }
    })
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    guard(|| {
        ctx()?;
        let drv = state::driver()?;
        // Stream-ordered work that may still use the memory goes first.
        drv.transport.flush()?;
        drv.call(&Request::MemFree { ptr: dptr }).map(|_| ())
    })
}

/// # Safety
/// `free` and `total` must be NULL or valid for writing a size_t.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    guard(|| {
        ctx()?;
        match state::driver()?.call(&Request::MemGetInfo)? {
            // SAFETY: the caller's out-pointers.
            Reply::MemInfo { free: f, total: t } => unsafe {
                put(free, f as usize)?;
                put(total, t as usize)
            },
            _ => Err(CuResult::UNKNOWN),
        }
    })
}

fn host_to_device(dst: CUdeviceptr, src: &[u8], stream: Handle, sync: bool) -> R {
    let ctx = ctx()?;
    let drv = state::driver()?;
    let max = drv.transport.max_transfer();
    let mut off = 0;
    loop {
        let n = (src.len() - off).min(max);
        let req = Request::MemcpyHtoD {
            ctx,
            dst: dst.wrapping_add(off as u64),
            stream,
        };
        let last = off + n == src.len();
        if last && sync {
            drv.transport.call(&req, &src[off..off + n], &mut [])?;
        } else {
            drv.transport.post(&req, &src[off..off + n])?;
        }
        off += n;
        if last {
            return Ok(());
        }
    }
}

fn device_to_host(dst: &mut [u8], src: CUdeviceptr, stream: Handle) -> R {
    let ctx = ctx()?;
    let drv = state::driver()?;
    let max = drv.transport.max_transfer();
    if dst.is_empty() {
        return drv.call(&Request::StreamSynchronize { stream }).map(|_| ());
    }
    for (i, chunk) in dst.chunks_mut(max).enumerate() {
        let off = (i * max) as u64;
        let req = Request::MemcpyDtoH {
            ctx,
            src: src.wrapping_add(off),
            len: chunk.len() as u64,
            stream,
        };
        drv.transport.call(&req, &[], chunk)?;
    }
    Ok(())
}

/// # Safety
/// `src` must be valid for reading `n` bytes.
unsafe fn host_slice<'a>(src: *const c_void, n: usize) -> Result<&'a [u8], CuResult> {
    if n == 0 {
        return Ok(&[]);
    }
    if src.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: non-NULL, and the caller guarantees `n` readable bytes (the C API contract).
    Ok(unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) })
}

/// # Safety
/// `dst` must be valid for writing `n` bytes.
unsafe fn host_slice_mut<'a>(dst: *mut c_void, n: usize) -> Result<&'a mut [u8], CuResult> {
    if n == 0 {
        return Ok(&mut []);
    }
    if dst.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: non-NULL, and the caller guarantees `n` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), n) })
}

/// # Safety
/// `src` must be valid for reading `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
) -> CUresult {
    // SAFETY: the caller's buffer contract.
    guard(|| host_to_device(dst, unsafe { host_slice(src, n) }?, 0, true))
}

/// # Safety
/// `src` must be valid for reading `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    stream: Opaque,
) -> CUresult {
    guard(|| {
        // SAFETY: the caller's buffer contract; the bytes are staged before this returns.
        let src = unsafe { host_slice(src, n) }?;
        host_to_device(dst, src, stream_of(stream), false)
    })
}

/// # Safety
/// `dst` must be valid for writing `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CUresult {
    // SAFETY: the caller's buffer contract.
    guard(|| device_to_host(unsafe { host_slice_mut(dst, n) }?, src, 0))
}

/// Completes before returning, which satisfies the asynchronous contract.
///
/// # Safety
/// `dst` must be valid for writing `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    stream: Opaque,
) -> CUresult {
    // SAFETY: the caller's buffer contract.
    guard(|| device_to_host(unsafe { host_slice_mut(dst, n) }?, src, stream_of(stream)))
}

fn device_to_device(dst: CUdeviceptr, src: CUdeviceptr, n: usize, stream: Handle, sync: bool) -> R {
    let ctx = ctx()?;
    let req = Request::MemcpyDtoD {
        ctx,
        dst,
        src,
        len: n as u64,
        stream,
    };
    let drv = state::driver()?;
    if sync {
        drv.call(&req).map(|_| ())
    } else {
        drv.transport.post(&req, &[])
    }
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    guard(|| device_to_device(dst, src, n, 0, true))
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    stream: Opaque,
) -> CUresult {
    guard(|| device_to_device(dst, src, n, stream_of(stream), false))
}

fn memset(
    dst: CUdeviceptr,
    value: u32,
    elem_size: u8,
    count: usize,
    stream: Handle,
    sync: bool,
) -> R {
    let ctx = ctx()?;
    let req = Request::Memset {
        ctx,
        dst,
        value,
        elem_size,
        count: count as u64,
        stream,
    };
    let drv = state::driver()?;
    if sync {
        drv.call(&req).map(|_| ())
    } else {
        drv.transport.post(&req, &[])
    }
}

#[no_mangle]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) -> CUresult {
    guard(|| memset(dst, v.into(), 1, n, 0, true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, v: u16, n: usize) -> CUresult {
    guard(|| memset(dst, v.into(), 2, n, 0, true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, v: u32, n: usize) -> CUresult {
    guard(|| memset(dst, v, 4, n, 0, true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, v: u8, n: usize, s: Opaque) -> CUresult {
    guard(|| memset(dst, v.into(), 1, n, stream_of(s), false))
}

#[no_mangle]
pub extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, v: u16, n: usize, s: Opaque) -> CUresult {
    guard(|| memset(dst, v.into(), 2, n, stream_of(s), false))
}

#[no_mangle]
pub extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, v: u32, n: usize, s: Opaque) -> CUresult {
    guard(|| memset(dst, v, 4, n, stream_of(s), false))
}

/// # Safety
/// `pp` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    bytesize: usize,
    _flags: c_uint,
) -> CUresult {
    guard(|| {
        ctx()?;
        if pp.is_null() || bytesize == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: plain libc allocation; freed by cuMemFreeHost with free().
        let p = unsafe { libc::aligned_alloc(4096, bytesize.div_ceil(4096) * 4096) };
        if p.is_null() {
            return Err(CuResult::OUT_OF_MEMORY);
        }
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(pp, p) }
    })
}

/// # Safety
/// As [`cuMemHostAlloc`].
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuMemHostAlloc(pp, bytesize, 0) }
}

/// # Safety
/// `p` must come from [`cuMemHostAlloc`] / [`cuMemAllocHost_v2`] and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    guard(|| {
        // SAFETY: `p` was allocated by aligned_alloc in cuMemHostAlloc (caller contract).
        unsafe { libc::free(p) };
        Ok(())
    })
}
