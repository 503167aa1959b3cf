//! Device memory: allocation (with the address-space reservations of [`crate::memmap`] that
//! make unified addressing exact), copies (split into transport-sized pieces; unified,
//! pitched 2D/3D), memsets, page-locked host memory and pointer attributes.
//!
//! Page-locked memory makes copies truly asynchronous: a host-to-device copy is staged and
//! posted at once, and a device-to-host copy into pinned memory returns before its data
//! arrives (it lands when the reply does; the next synchronising call waits for it). Into
//! pageable memory a device-to-host copy completes before the call returns, as in CUDA.

use std::ffi::{c_int, c_uint, c_void};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Handle, Reply, Request};

use super::{
    ctx, default_stream, graph, guard, optional, put, stream_of, CUdeviceptr, CUresult, Opaque, R,
};
use crate::memmap;
use crate::state;

const MEMHOSTALLOC_DEVICEMAP: c_uint = 0x02;

/// # Safety
/// `dptr` must be NULL or valid for writing a CUdeviceptr.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    guard(|| {
        let ctx = ctx()?;
        if dptr.is_null() || bytesize == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let p = alloc(ctx, bytesize as u64, 0)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(dptr, p) }
    })
}

/// Allocates device memory and reserves its range in this process; an allocation whose
/// range a host mapping already holds goes back and is made again elsewhere.
pub fn alloc(ctx: Handle, size: u64, pool: u64) -> Result<CUdeviceptr, CuResult> {
    let drv = state::driver()?;
    let mut refused = Vec::new();
    let mut result = Err(CuResult::OUT_OF_MEMORY);
    for _ in 0..8 {
        let p = match drv.call(&Request::MemAlloc { ctx, size })? {
            Reply::DevPtr(p) => p,
            _ => return Err(CuResult::UNKNOWN),
        };
        if memmap::reserve(p, size) {
            memmap::add_device(memmap::DeviceAlloc {
                base: p,
                size,
                pool,
            });
            result = Ok(p);
            break;
        }
        refused.push(p);
    }
    for p in refused {
        let _ = drv.call(&Request::MemFree { ptr: p });
    }
    if result.is_err() {
        crate::log("cannot reserve a device allocation's addresses in this process");
    }
    result
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    guard(|| {
        ctx()?;
        let drv = state::driver()?;
        // Stream-ordered work that may still use the memory goes first.
        drv.transport.flush()?;
        drv.call(&Request::MemFree { ptr: dptr })?;
        memmap::remove_device(dptr);
        Ok(())
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
    if !sync
        && graph::record(stream, || graph::Node::HtoD {
            dst,
            src: src.as_ptr() as usize,
            len: src.len(),
        })?
    {
        return Ok(());
    }
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
    if graph::record(stream, || graph::Node::DtoH {
        dst: dst.as_mut_ptr() as usize,
        src,
        len: dst.len(),
    })? {
        return Ok(());
    }
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
    guard(|| host_to_device(dst, unsafe { host_slice(src, n) }?, default_stream(), true))
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
    guard(|| device_to_host(unsafe { host_slice_mut(dst, n) }?, src, default_stream()))
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
    guard(|| {
        let stream = stream_of(stream);
        if memmap::is_pinned(dst as usize, n) && n > 0 {
            // SAFETY: page-locked memory the program may not touch before it synchronises.
            return unsafe { device_to_pinned(dst.cast(), src, n, stream) };
        }
        // SAFETY: the caller's buffer contract.
        device_to_host(unsafe { host_slice_mut(dst, n) }?, src, stream)
    })
}

/// Posts reads of `n` bytes into pinned memory at `dst`.
///
/// # Safety
/// `dst` must be page-locked memory valid for `n` bytes until the next synchronising call.
unsafe fn device_to_pinned(dst: *mut u8, src: CUdeviceptr, n: usize, stream: Handle) -> R {
    let ctx = ctx()?;
    if graph::record(stream, || graph::Node::DtoH {
        dst: dst as usize,
        src,
        len: n,
    })? {
        return Ok(());
    }
    let drv = state::driver()?;
    let max = drv.transport.max_transfer();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(max);
        let req = Request::MemcpyDtoH {
            ctx,
            src: src.wrapping_add(off as u64),
            len: len as u64,
            stream,
        };
        // SAFETY: inside the caller's pinned buffer.
        unsafe { drv.transport.post_read(&req, dst.add(off), len) }?;
        off += len;
    }
    Ok(())
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
    } else if graph::record(stream, || graph::Node::Post {
        req: req.clone(),
        data: Vec::new(),
    })? {
        Ok(())
    } else {
        drv.transport.post(&req, &[])
    }
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    guard(|| device_to_device(dst, src, n, default_stream(), true))
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
    } else if graph::record(stream, || graph::Node::Post {
        req: req.clone(),
        data: Vec::new(),
    })? {
        Ok(())
    } else {
        drv.transport.post(&req, &[])
    }
}

#[no_mangle]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) -> CUresult {
    guard(|| memset(dst, v.into(), 1, n, default_stream(), true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, v: u16, n: usize) -> CUresult {
    guard(|| memset(dst, v.into(), 2, n, default_stream(), true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, v: u32, n: usize) -> CUresult {
    guard(|| memset(dst, v, 4, n, default_stream(), true))
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
    flags: c_uint,
) -> CUresult {
    guard(|| {
        ctx()?;
        if pp.is_null() || bytesize == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if flags & MEMHOSTALLOC_DEVICEMAP != 0 {
            // Mapped pinned memory needs the GPU to reach this process's memory.
            return Err(state::unsupported(
                "cuMemHostAlloc(CU_MEMHOSTALLOC_DEVICEMAP)",
            ));
        }
        let size = bytesize.div_ceil(4096) * 4096;
        // SAFETY: plain libc allocation; freed by cuMemFreeHost with free().
        let p = unsafe { libc::aligned_alloc(4096, size) };
        if p.is_null() {
            return Err(CuResult::OUT_OF_MEMORY);
        }
        // Locked so transfers never wait on a page fault (best effort: RLIMIT_MEMLOCK may
        // forbid it, which changes nothing but speed).
        // SAFETY: the allocation just made.
        unsafe { libc::mlock(p, size) };
        memmap::add_host(memmap::HostRegion {
            base: p as usize,
            size,
            flags,
            owned: true,
        });
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
    guard(|| match memmap::host(p as usize) {
        Some(r) if r.owned && r.base == p as usize => {
            memmap::remove_host(r.base);
            // SAFETY: allocated (and locked) by cuMemHostAlloc.
            unsafe {
                libc::munlock(p, r.size);
                libc::free(p);
            }
            Ok(())
        }
        _ => Err(CuResult::INVALID_VALUE),
    })
}

// ---- registered host memory ----

/// # Safety
/// `p` must be valid for `bytesize` bytes while registered.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostRegister_v2(
    p: *mut c_void,
    bytesize: usize,
    flags: c_uint,
) -> CUresult {
    guard(|| {
        ctx()?;
        if p.is_null() || bytesize == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if flags & (0x02 | 0x04 | 0x08) != 0 {
            // DEVICEMAP, IOMEMORY, READ_ONLY mappings need the GPU to reach this memory.
            return Err(state::unsupported(
                "cuMemHostRegister(DEVICEMAP/IOMEMORY/READ_ONLY)",
            ));
        }
        if memmap::host(p as usize).is_some() || memmap::host(p as usize + bytesize - 1).is_some() {
            return Err(CuResult(712)); // HOST_MEMORY_ALREADY_REGISTERED
        }
        // SAFETY: the caller's memory; best effort, as for cuMemHostAlloc.
        unsafe { libc::mlock(p, bytesize) };
        memmap::add_host(memmap::HostRegion {
            base: p as usize,
            size: bytesize,
            flags,
            owned: false,
        });
        Ok(())
    })
}

/// # Safety
/// As [`cuMemHostRegister_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemHostRegister(
    p: *mut c_void,
    bytesize: usize,
    flags: c_uint,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuMemHostRegister_v2(p, bytesize, flags) }
}

/// # Safety
/// `p` must be the start of a range registered with [`cuMemHostRegister_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemHostUnregister(p: *mut c_void) -> CUresult {
    guard(|| {
        match memmap::host(p as usize) {
            Some(r) if !r.owned && r.base == p as usize => {
                memmap::remove_host(r.base);
                // SAFETY: the range registered (and locked) before.
                unsafe { libc::munlock(p, r.size) };
                Ok(())
            }
            _ => Err(CuResult(713)), // HOST_MEMORY_NOT_REGISTERED
        }
    })
}

/// # Safety
/// `flags` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostGetFlags(flags: *mut c_uint, p: *mut c_void) -> CUresult {
    guard(|| {
        let r = memmap::host(p as usize).ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(flags, r.flags) }
    })
}

// ---- unified copies ----

/// One side of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Device(u64),
    Host(usize),
}

fn classify(p: u64) -> Side {
    if memmap::device(p).is_some() {
        Side::Device(p)
    } else {
        Side::Host(p as usize)
    }
}

/// A copy of `n` bytes between any two addresses, stream-ordered on `stream`; `sync`: the
/// call returns when it is done (the `cuMemcpy` forms).
fn copy(dst: Side, src: Side, n: usize, stream: Handle, sync: bool) -> R {
    if n == 0 {
        return Ok(());
    }
    match (dst, src) {
        (Side::Device(d), Side::Device(s)) => device_to_device(d, s, n, stream, sync),
        (Side::Device(d), Side::Host(s)) => {
            // SAFETY: a host address the program passed, valid for `n` bytes (API contract).
            let src = unsafe { host_slice(s as *const c_void, n) }?;
            host_to_device(d, src, stream, sync)
        }
        (Side::Host(d), Side::Device(s)) => {
            if !sync && memmap::is_pinned(d, n) {
                // SAFETY: page-locked memory the program may not touch before it synchronises.
                return unsafe { device_to_pinned(d as *mut u8, s, n, stream) };
            }
            // SAFETY: as above, writable.
            let dst = unsafe { host_slice_mut(d as *mut c_void, n) }?;
            device_to_host(dst, s, stream)
        }
        (Side::Host(d), Side::Host(s)) => {
            // Stream-ordered: earlier work on the stream (which may fill `s`) goes first.
            state::driver()?.call(&Request::StreamSynchronize { stream })?;
            if d == 0 || s == 0 {
                return Err(CuResult::INVALID_VALUE);
            }
            // SAFETY: two host ranges of `n` bytes (API contract); they may overlap.
            unsafe { std::ptr::copy(s as *const u8, d as *mut u8, n) };
            Ok(())
        }
    }
}

#[no_mangle]
pub extern "C" fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    guard(|| copy(classify(dst), classify(src), n, default_stream(), true))
}

#[no_mangle]
pub extern "C" fn cuMemcpyAsync(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    stream: Opaque,
) -> CUresult {
    guard(|| copy(classify(dst), classify(src), n, stream_of(stream), false))
}

/// # Safety
/// `base` and `size` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(
    base: *mut CUdeviceptr,
    size: *mut usize,
    p: CUdeviceptr,
) -> CUresult {
    guard(|| {
        ctx()?;
        let a = memmap::device(p).ok_or(CuResult::NOT_FOUND)?;
        // SAFETY: the caller's out-pointers, each optional.
        unsafe {
            if !base.is_null() {
                put(base, a.base)?;
            }
            if !size.is_null() {
                put(size, a.size as usize)?;
            }
        }
        Ok(())
    })
}

/// Pitched allocation: rows padded to the texture alignment.
///
/// # Safety
/// `dptr` and `pitch` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    elem: c_uint,
) -> CUresult {
    guard(|| {
        let ctx = ctx()?;
        if dptr.is_null()
            || pitch.is_null()
            || width == 0
            || height == 0
            || ![4, 8, 16].contains(&elem)
        {
            return Err(CuResult::INVALID_VALUE);
        }
        let align = 512usize;
        let row = width
            .div_ceil(align)
            .checked_mul(align)
            .ok_or(CuResult::INVALID_VALUE)?;
        let total = row.checked_mul(height).ok_or(CuResult::OUT_OF_MEMORY)?;
        let p = alloc(ctx, total as u64, 0)?;
        // SAFETY: the caller's out-pointers, checked above.
        unsafe {
            put(dptr, p)?;
            put(pitch, row)
        }
    })
}

// ---- pointer attributes ----

const PA_CONTEXT: c_int = 1;
const PA_MEMORY_TYPE: c_int = 2;
const PA_DEVICE_POINTER: c_int = 3;
const PA_HOST_POINTER: c_int = 4;
const PA_SYNC_MEMOPS: c_int = 6;
const PA_BUFFER_ID: c_int = 7;
const PA_IS_MANAGED: c_int = 8;
const PA_DEVICE_ORDINAL: c_int = 9;
const PA_IS_LEGACY_CUDA_IPC_CAPABLE: c_int = 10;
const PA_RANGE_START_ADDR: c_int = 11;
const PA_RANGE_SIZE: c_int = 12;
const PA_MAPPED: c_int = 13;
const PA_ALLOWED_HANDLE_TYPES: c_int = 14;
const PA_IS_GPU_DIRECT_RDMA_CAPABLE: c_int = 15;
const PA_ACCESS_FLAGS: c_int = 16;
const PA_MEMPOOL_HANDLE: c_int = 17;
const PA_MAPPING_SIZE: c_int = 18;
const PA_MAPPING_BASE_ADDR: c_int = 19;
const PA_MEMORY_BLOCK_ID: c_int = 20;
const MEMORYTYPE_HOST: u32 = 1;
const MEMORYTYPE_DEVICE: u32 = 2;

/// Writes attribute `a` of `p` to `data`; `Ok(false)`: `p` is memory the driver does not know
/// (plain pageable host memory), for which `cuPointerGetAttribute` fails and
/// `cuPointerGetAttributes` writes zeros.
///
/// # Safety
/// `data` must be valid for the attribute's type.
unsafe fn pointer_attribute(a: c_int, p: u64, data: *mut c_void) -> Result<bool, CuResult> {
    let drv = state::driver()?;
    let dev = memmap::device(p);
    let host = memmap::host(p as usize);
    if dev.is_none() && host.is_none() {
        return Ok(false);
    }
    let ctx_id = state::current_context()
        .map(|c| c.id)
        .unwrap_or(drv.primary.id);
    // SAFETY: `data` points to the attribute's type (API contract): each arm writes its own.
    unsafe {
        match a {
            PA_CONTEXT => put(data.cast::<Opaque>(), super::opaque(ctx_id))?,
            PA_MEMORY_TYPE => put(
                data.cast::<u32>(),
                if dev.is_some() {
                    MEMORYTYPE_DEVICE
                } else {
                    MEMORYTYPE_HOST
                },
            )?,
            // Device memory has no host address and pinned memory no device address (no
            // mapped memory): the attribute does not exist for it.
            PA_DEVICE_POINTER => match dev {
                Some(_) => put(data.cast::<u64>(), p)?,
                None => return Ok(false),
            },
            PA_HOST_POINTER => match host {
                Some(_) => put(data.cast::<u64>(), p)?,
                None => return Ok(false),
            },
            PA_SYNC_MEMOPS | PA_IS_LEGACY_CUDA_IPC_CAPABLE => put(data.cast::<u32>(), 0)?,
            PA_BUFFER_ID | PA_MEMORY_BLOCK_ID => put(
                data.cast::<u64>(),
                dev.map_or(host.map_or(0, |h| h.base as u64), |d| d.base),
            )?,
            PA_IS_MANAGED | PA_MAPPED if a == PA_MAPPED => {
                put(data.cast::<u32>(), u32::from(dev.is_some()))?
            }
            PA_IS_MANAGED => put(data.cast::<u32>(), 0)?,
            PA_DEVICE_ORDINAL => put(data.cast::<c_int>(), 0)?,
            PA_RANGE_START_ADDR | PA_MAPPING_BASE_ADDR => put(
                data.cast::<u64>(),
                dev.map_or(host.map_or(0, |h| h.base as u64), |d| d.base),
            )?,
            PA_RANGE_SIZE | PA_MAPPING_SIZE => put(
                data.cast::<u64>(),
                dev.map_or(host.map_or(0, |h| h.size as u64), |d| d.size),
            )?,
            PA_ALLOWED_HANDLE_TYPES | PA_IS_GPU_DIRECT_RDMA_CAPABLE => put(data.cast::<u32>(), 0)?,
            // CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE
            PA_ACCESS_FLAGS => put(data.cast::<u32>(), 3)?,
            PA_MEMPOOL_HANDLE => put(data.cast::<u64>(), dev.map_or(0, |d| d.pool))?,
            _ => return Err(CuResult::INVALID_VALUE),
        }
    }
    Ok(true)
}

/// # Safety
/// `data` must be valid for the attribute's type.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(
    data: *mut c_void,
    attribute: c_int,
    p: CUdeviceptr,
) -> CUresult {
    guard(|| {
        if data.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: the caller's buffer for the attribute.
        match unsafe { pointer_attribute(attribute, p, data) }? {
            true => Ok(()),
            false => Err(CuResult::INVALID_VALUE),
        }
    })
}

/// Size of each attribute's value, to zero it for unknown memory.
fn attribute_size(a: c_int) -> usize {
    match a {
        PA_CONTEXT | PA_DEVICE_POINTER | PA_HOST_POINTER | PA_BUFFER_ID | PA_RANGE_START_ADDR
        | PA_RANGE_SIZE | PA_MEMPOOL_HANDLE | PA_MAPPING_SIZE | PA_MAPPING_BASE_ADDR
        | PA_MEMORY_BLOCK_ID => 8,
        _ => 4,
    }
}

/// # Safety
/// `attributes` and `data` arrays of `n` entries, each `data[i]` NULL or valid for its type.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttributes(
    n: c_uint,
    attributes: *const c_int,
    data: *mut *mut c_void,
    p: CUdeviceptr,
) -> CUresult {
    guard(|| {
        if n > 0 && (attributes.is_null() || data.is_null()) {
            return Err(CuResult::INVALID_VALUE);
        }
        for i in 0..n as usize {
            // SAFETY: `n` entries each (API contract).
            let (a, d) = unsafe { (*attributes.add(i), *data.add(i)) };
            if d.is_null() {
                continue;
            }
            // SAFETY: the caller's buffer for attribute `a`.
            if !unsafe { pointer_attribute(a, p, d) }? {
                // Unregistered host memory: zeros (memory type 0, no context).
                // SAFETY: as above.
                unsafe { std::ptr::write_bytes(d.cast::<u8>(), 0, attribute_size(a)) };
                if a == PA_DEVICE_ORDINAL {
                    // SAFETY: as above.
                    unsafe { d.cast::<c_int>().write_unaligned(-2) };
                }
            }
        }
        Ok(())
    })
}

// ---- pitched 2D / 3D copies and memsets ----

/// `CUDA_MEMCPY3D` (`CUDA_MEMCPY2D` is the same with `srcZ`, `srcLOD`, `reserved`,
/// `srcHeight` (and the dst ones) and `Depth` left out).
#[repr(C)]
pub struct Memcpy3D {
    src_x: usize,
    src_y: usize,
    src_z: usize,
    src_lod: usize,
    src_type: c_uint,
    src_host: *const c_void,
    src_device: CUdeviceptr,
    src_array: *mut c_void,
    reserved0: *mut c_void,
    src_pitch: usize,
    src_height: usize,
    dst_x: usize,
    dst_y: usize,
    dst_z: usize,
    dst_lod: usize,
    dst_type: c_uint,
    dst_host: *mut c_void,
    dst_device: CUdeviceptr,
    dst_array: *mut c_void,
    reserved1: *mut c_void,
    dst_pitch: usize,
    dst_height: usize,
    width: usize,
    height: usize,
    depth: usize,
}

#[repr(C)]
pub struct Memcpy2D {
    src_x: usize,
    src_y: usize,
    src_type: c_uint,
    src_host: *const c_void,
    src_device: CUdeviceptr,
    src_array: *mut c_void,
    src_pitch: usize,
    dst_x: usize,
    dst_y: usize,
    dst_type: c_uint,
    dst_host: *mut c_void,
    dst_device: CUdeviceptr,
    dst_array: *mut c_void,
    dst_pitch: usize,
    width: usize,
    height: usize,
}

/// One side of a pitched copy: its base address, as a unified pointer.
fn pitched_base(
    kind: c_uint,
    host: usize,
    device: u64,
    array: *mut c_void,
) -> Result<u64, CuResult> {
    match kind {
        1 => Ok(host as u64),
        2 => Ok(device),
        // CU_MEMORYTYPE_UNIFIED: the device pointer field carries it.
        4 => Ok(device),
        3 if !array.is_null() => Err(state::unsupported("cuMemcpy2D/3D with CUDA arrays")),
        _ => Err(CuResult::INVALID_VALUE),
    }
}

#[allow(clippy::too_many_arguments)]
fn pitched(
    src: u64,
    src_pitch: usize,
    src_height: usize,
    dst: u64,
    dst_pitch: usize,
    dst_height: usize,
    width: usize,
    height: usize,
    depth: usize,
    stream: Handle,
    sync: bool,
) -> R {
    if width == 0 || height == 0 || depth == 0 {
        return Ok(());
    }
    if (height > 1 || depth > 1) && (src_pitch < width || dst_pitch < width) {
        return Err(CuResult::INVALID_VALUE);
    }
    if !graph::is_capturing(stream)
        && pitched_wire(
            src, src_pitch, src_height, dst, dst_pitch, dst_height, width, height, depth, stream,
            sync,
        )?
    {
        return Ok(());
    }
    let contiguous = src_pitch == width
        && dst_pitch == width
        && (depth == 1 || (src_height == height && dst_height == height));
    let rows = if contiguous { 1 } else { height * depth };
    let row_len = if contiguous {
        width * height * depth
    } else {
        width
    };
    for r in 0..rows {
        let (y, z) = (r % height, r / height);
        let so = (y + z * src_height.max(height)) as u64 * src_pitch as u64;
        let d_o = (y + z * dst_height.max(height)) as u64 * dst_pitch as u64;
        let last = r + 1 == rows;
        let (s, d) = (classify(src + so), classify(dst + d_o));
        // Rows go out posted; the last one carries the synchronous wait.
        let row_sync = sync && last;
        match (d, s) {
            (Side::Host(_), Side::Device(_)) if sync && !last => {
                // SAFETY: inside the destination the caller described.
                unsafe {
                    device_to_pinned((dst + d_o) as usize as *mut u8, src + so, row_len, stream)
                }?
            }
            _ => copy(d, s, row_len, stream, row_sync)?,
        }
    }
    Ok(())
}

/// A pitched copy as one `Memcpy3D` request (host rows travel packed). `Ok(false)`: not this
/// way (host to host, larger than one request, or a backend without the operation); the
/// caller copies row by row.
#[allow(clippy::too_many_arguments)]
fn pitched_wire(
    src: u64,
    src_pitch: usize,
    src_height: usize,
    dst: u64,
    dst_pitch: usize,
    dst_height: usize,
    width: usize,
    height: usize,
    depth: usize,
    stream: Handle,
    sync: bool,
) -> Result<bool, CuResult> {
    use netgpu_proto::wire::ops::{Copy3D, Copy3DKind, MemLoc};
    if optional::lacking(optional::Op::Memcpy3D) {
        return Ok(false);
    }
    let ctx = ctx()?;
    let loc = |p: u64, pitch: usize, h: usize| match classify(p) {
        Side::Device(ptr) => MemLoc::Device {
            ptr,
            pitch: pitch as u64,
            height: h as u64,
        },
        Side::Host(_) => MemLoc::Host,
    };
    let copy = Copy3D {
        src: loc(src, src_pitch, src_height),
        dst: loc(dst, dst_pitch, dst_height),
        width: width as u64,
        height: height as u64,
        depth: depth as u64,
    };
    let kind = copy.direction();
    let packed = copy.packed_len().ok_or(CuResult::INVALID_VALUE)? as usize;
    let drv = state::driver()?;
    if kind == Copy3DKind::HostToHost || packed > drv.transport.max_transfer() {
        return Ok(false);
    }
    // Host row (y, z) of a pitched host side.
    let row = |base: u64, pitch: usize, h: usize, y: usize, z: usize| {
        (base as usize) + (y + z * h) * pitch
    };
    let req = Request::Memcpy3D { ctx, copy, stream };
    match kind {
        Copy3DKind::HostToDevice => {
            let mut buf = Vec::with_capacity(packed);
            for z in 0..depth {
                for y in 0..height {
                    let at = row(src, src_pitch, src_height, y, z);
                    // SAFETY: a row of the host memory the caller described (API contract).
                    buf.extend_from_slice(unsafe { host_slice(at as *const c_void, width) }?);
                }
            }
            optional::send(optional::Op::Memcpy3D, &req, &buf, &mut [], !sync)
        }
        Copy3DKind::DeviceToHost => {
            let mut buf = vec![0u8; packed];
            if !optional::send(optional::Op::Memcpy3D, &req, &[], &mut buf, false)? {
                return Ok(false);
            }
            let mut off = 0;
            for z in 0..depth {
                for y in 0..height {
                    let at = row(dst, dst_pitch, dst_height, y, z);
                    // SAFETY: a row of the host memory the caller described (API contract).
                    unsafe { host_slice_mut(at as *mut c_void, width) }?
                        .copy_from_slice(&buf[off..off + width]);
                    off += width;
                }
            }
            Ok(true)
        }
        _ => optional::send(optional::Op::Memcpy3D, &req, &[], &mut [], !sync),
    }
}

/// # Safety
/// `p` must point to a `CUDA_MEMCPY3D` describing valid memory.
unsafe fn memcpy3d(p: *const Memcpy3D, stream: Handle, sync: bool) -> R {
    if p.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: the caller's descriptor.
    let c = unsafe { &*p };
    if c.src_lod != 0 || c.dst_lod != 0 {
        return Err(CuResult::INVALID_VALUE);
    }
    let src = pitched_base(c.src_type, c.src_host as usize, c.src_device, c.src_array)?;
    let dst = pitched_base(c.dst_type, c.dst_host as usize, c.dst_device, c.dst_array)?;
    let sh = c.src_height.max(1);
    let dh = c.dst_height.max(1);
    let src = src + (c.src_x + c.src_y * c.src_pitch + c.src_z * c.src_pitch * sh) as u64;
    let dst = dst + (c.dst_x + c.dst_y * c.dst_pitch + c.dst_z * c.dst_pitch * dh) as u64;
    pitched(
        src,
        c.src_pitch,
        sh,
        dst,
        c.dst_pitch,
        dh,
        c.width,
        c.height,
        c.depth,
        stream,
        sync,
    )
}

/// # Safety
/// `p` must point to a `CUDA_MEMCPY2D` describing valid memory.
unsafe fn memcpy2d(p: *const Memcpy2D, stream: Handle, sync: bool) -> R {
    if p.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: the caller's descriptor.
    let c = unsafe { &*p };
    let src = pitched_base(c.src_type, c.src_host as usize, c.src_device, c.src_array)?;
    let dst = pitched_base(c.dst_type, c.dst_host as usize, c.dst_device, c.dst_array)?;
    let src = src + (c.src_x + c.src_y * c.src_pitch) as u64;
    let dst = dst + (c.dst_x + c.dst_y * c.dst_pitch) as u64;
    pitched(
        src,
        c.src_pitch,
        c.height,
        dst,
        c.dst_pitch,
        c.height,
        c.width,
        c.height,
        1,
        stream,
        sync,
    )
}

/// # Safety
/// `p` must point to a valid `CUDA_MEMCPY2D`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const Memcpy2D) -> CUresult {
    // SAFETY: the caller's descriptor.
    guard(|| unsafe { memcpy2d(p, default_stream(), true) })
}

/// # Safety
/// As [`cuMemcpy2D_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DUnaligned_v2(p: *const Memcpy2D) -> CUresult {
    // SAFETY: the caller's descriptor.
    guard(|| unsafe { memcpy2d(p, default_stream(), true) })
}

/// # Safety
/// As [`cuMemcpy2D_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const Memcpy2D, stream: Opaque) -> CUresult {
    // SAFETY: the caller's descriptor.
    guard(|| unsafe { memcpy2d(p, stream_of(stream), false) })
}

/// # Safety
/// `p` must point to a valid `CUDA_MEMCPY3D`.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy3D_v2(p: *const Memcpy3D) -> CUresult {
    // SAFETY: the caller's descriptor.
    guard(|| unsafe { memcpy3d(p, default_stream(), true) })
}

/// # Safety
/// As [`cuMemcpy3D_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy3DAsync_v2(p: *const Memcpy3D, stream: Opaque) -> CUresult {
    // SAFETY: the caller's descriptor.
    guard(|| unsafe { memcpy3d(p, stream_of(stream), false) })
}

#[allow(clippy::too_many_arguments)]
fn memset2d(
    dst: CUdeviceptr,
    pitch: usize,
    value: u32,
    elem: u8,
    width: usize,
    height: usize,
    stream: Handle,
    sync: bool,
) -> R {
    if width == 0 || height == 0 {
        return Ok(());
    }
    let row_bytes = width * elem as usize;
    if pitch == row_bytes {
        return memset(dst, value, elem, width * height, stream, sync);
    }
    if pitch < row_bytes {
        return Err(CuResult::INVALID_VALUE);
    }
    for y in 0..height {
        memset(
            dst + (y * pitch) as u64,
            value,
            elem,
            width,
            stream,
            sync && y + 1 == height,
        )?;
    }
    Ok(())
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D8_v2(
    dst: CUdeviceptr,
    pitch: usize,
    v: u8,
    w: usize,
    h: usize,
) -> CUresult {
    guard(|| memset2d(dst, pitch, v.into(), 1, w, h, default_stream(), true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D16_v2(
    dst: CUdeviceptr,
    pitch: usize,
    v: u16,
    w: usize,
    h: usize,
) -> CUresult {
    guard(|| memset2d(dst, pitch, v.into(), 2, w, h, default_stream(), true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D32_v2(
    dst: CUdeviceptr,
    pitch: usize,
    v: u32,
    w: usize,
    h: usize,
) -> CUresult {
    guard(|| memset2d(dst, pitch, v, 4, w, h, default_stream(), true))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D8Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: u8,
    w: usize,
    h: usize,
    s: Opaque,
) -> CUresult {
    guard(|| memset2d(dst, pitch, v.into(), 1, w, h, stream_of(s), false))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D16Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: u16,
    w: usize,
    h: usize,
    s: Opaque,
) -> CUresult {
    guard(|| memset2d(dst, pitch, v.into(), 2, w, h, stream_of(s), false))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D32Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: u32,
    w: usize,
    h: usize,
    s: Opaque,
) -> CUresult {
    guard(|| memset2d(dst, pitch, v, 4, w, h, stream_of(s), false))
}
