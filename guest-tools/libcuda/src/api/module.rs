//! Modules (PTX images), kernel functions and launches.
//!
//! Kernels are launched stream-ordered and batched: `cuLaunchKernel` packs the arguments into
//! the driver API's parameter buffer layout (offsets and sizes reported by the backend when
//! the function was looked up) and posts the launch without waiting.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Reply, Request};

use super::{ctx, guard, handle_of, opaque, put, stream_of, CUdeviceptr, CUresult, Opaque, R};
use crate::state;

const CU_LAUNCH_PARAM_END: usize = 0x00;
const CU_LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
const CU_LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;

fn load(image: &[u8]) -> Result<Opaque, CuResult> {
    let ctx = ctx()?;
    let drv = state::driver()?;
    if image.starts_with(b"\x7fELF") || image.starts_with(&0xba55_ed50u32.to_le_bytes()) {
        crate::log("cuModuleLoad*: only PTX images are supported (cubin and fatbin are GPU-specific binaries)");
        return Err(CuResult::NO_BINARY_FOR_GPU);
    }
    match drv
        .transport
        .call(&Request::ModuleLoad { ctx, parts: vec![] }, image, &mut [])?
    {
        Reply::Handle(h) => Ok(opaque(h)),
        _ => Err(CuResult::UNKNOWN),
    }
}

/// # Safety
/// `module` must be NULL or writable; `image` a NUL-terminated PTX text.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut Opaque, image: *const c_void) -> CUresult {
    guard(|| {
        if image.is_null() || module.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a PTX image is NUL-terminated text (the driver API contract).
        let text = unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_bytes();
        let m = load(text)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(module, m) }
    })
}

/// JIT options are accepted and ignored: the backend compiles for its own GPU.
///
/// # Safety
/// As [`cuModuleLoadData`].
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut Opaque,
    image: *const c_void,
    _num_options: c_uint,
    _options: *mut c_int,
    _values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuModuleLoadData(module, image) }
}

/// # Safety
/// `fname` must be a NUL-terminated path; `module` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(module: *mut Opaque, fname: *const c_char) -> CUresult {
    guard(|| {
        if fname.is_null() || module.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated path (the API contract).
        let path = unsafe { CStr::from_ptr(fname) }
            .to_string_lossy()
            .into_owned();
        let image = std::fs::read(&path).map_err(|_| CuResult::FILE_NOT_FOUND)?;
        let m = load(&image)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(module, m) }
    })
}

#[no_mangle]
pub extern "C" fn cuModuleUnload(module: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        drv.transport.flush()?;
        drv.call(&Request::ModuleUnload {
            module: handle_of(module),
        })
        .map(|_| ())
    })
}

/// # Safety
/// `name` must be NUL-terminated; `hfunc` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    hfunc: *mut Opaque,
    module: Opaque,
    name: *const c_char,
) -> CUresult {
    guard(|| {
        if name.is_null() || hfunc.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated symbol name.
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| CuResult::NOT_FOUND)?
            .to_string();
        let drv = state::driver()?;
        match drv.call(&Request::ModuleGetFunction {
            module: handle_of(module),
            name,
        })? {
            Reply::Function(f) => {
                let h = f.handle;
                drv.remember_function(f);
                // SAFETY: the caller's out-pointer, checked above.
                unsafe { put(hfunc, opaque(h)) }
            }
            _ => Err(CuResult::UNKNOWN),
        }
    })
}

/// # Safety
/// `name` must be NUL-terminated; `dptr` and `bytes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: Opaque,
    name: *const c_char,
) -> CUresult {
    guard(|| {
        if name.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated symbol name.
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| CuResult::NOT_FOUND)?
            .to_string();
        match state::driver()?.call(&Request::ModuleGetGlobal {
            module: handle_of(module),
            name,
        })? {
            Reply::Global { ptr, size } => {
                // Both outputs are optional in the driver API.
                // SAFETY: the caller's out-pointers, each written only when non-NULL.
                unsafe {
                    if !dptr.is_null() {
                        put(dptr, ptr)?;
                    }
                    if !bytes.is_null() {
                        put(bytes, size as usize)?;
                    }
                }
                Ok(())
            }
            _ => Err(CuResult::UNKNOWN),
        }
    })
}

/// Packs `kernelParams` (one pointer per parameter) into the parameter buffer.
///
/// # Safety
/// `params` must hold one valid pointer per kernel parameter, each to `size` readable bytes.
unsafe fn pack(
    f: &netgpu_proto::wire::ops::FunctionInfo,
    params: *mut *mut c_void,
) -> Result<Vec<u8>, CuResult> {
    let mut buf = vec![0u8; f.param_buffer_size as usize];
    if f.params.is_empty() {
        return Ok(buf);
    }
    if params.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    for (i, p) in f.params.iter().enumerate() {
        // SAFETY: the caller passes one pointer per parameter (the API contract).
        let src = unsafe { *params.add(i) };
        if src.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let (o, n) = (p.offset as usize, p.size as usize);
        let dst = buf.get_mut(o..o + n).ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: `src` points to the parameter's `n` bytes (the API contract).
        dst.copy_from_slice(unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) });
    }
    Ok(buf)
}

/// Reads the `extra` array's parameter buffer.
///
/// # Safety
/// `extra` must be a CU_LAUNCH_PARAM_END-terminated array of (key, value) pointers.
unsafe fn extra_buffer(extra: *mut *mut c_void) -> Result<Vec<u8>, CuResult> {
    let (mut ptr, mut size): (*const u8, Option<usize>) = (std::ptr::null(), None);
    for i in (0..64).step_by(2) {
        // SAFETY: within the caller's terminated array; we stop at its END key.
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            CU_LAUNCH_PARAM_END => break,
            // SAFETY: a key is followed by its value.
            CU_LAUNCH_PARAM_BUFFER_POINTER => ptr = unsafe { *extra.add(i + 1) }.cast::<u8>(),
            CU_LAUNCH_PARAM_BUFFER_SIZE => {
                // SAFETY: the value of BUFFER_SIZE points to a size_t.
                let p = unsafe { *extra.add(i + 1) }.cast::<usize>();
                if p.is_null() {
                    return Err(CuResult::INVALID_VALUE);
                }
                // SAFETY: non-NULL pointer to the caller's size_t.
                size = Some(unsafe { p.read_unaligned() });
            }
            _ => return Err(CuResult::INVALID_VALUE),
        }
    }
    match (ptr.is_null(), size) {
        (false, Some(n)) if n <= netgpu_proto::abi::MAX_PARAM_BUFFER as usize => {
            // SAFETY: the caller's buffer of `n` bytes.
            Ok(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
        }
        _ => Err(CuResult::INVALID_VALUE),
    }
}

/// # Safety
/// `kernel_params`/`extra` as the driver API defines them.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: Opaque,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_mem_bytes: c_uint,
    stream: Opaque,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    guard(|| -> R {
        ctx()?;
        let drv = state::driver()?;
        let func = drv.function(handle_of(f)).ok_or(CuResult::INVALID_HANDLE)?;
        if [gx, gy, gz, bx, by, bz].contains(&0) {
            return Err(CuResult::INVALID_VALUE);
        }
        let params = match (kernel_params.is_null(), extra.is_null()) {
            // SAFETY: the caller's kernelParams array (API contract).
            (false, _) => unsafe { pack(&func, kernel_params) }?,
            // SAFETY: the caller's extra array (API contract).
            (true, false) => unsafe { extra_buffer(extra) }?,
            (true, true) if func.params.is_empty() => Vec::new(),
            (true, true) => return Err(CuResult::INVALID_VALUE),
        };
        let req = Request::LaunchKernel {
            func: func.handle,
            grid: [gx, gy, gz],
            block: [bx, by, bz],
            shared_mem_bytes,
            stream: stream_of(stream),
            flags: 0,
        };
        drv.transport.post(&req, &params)
    })
}

/// Static properties of a kernel, as far as they are known without the GPU's compiler.
///
/// # Safety
/// `pi` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut c_int, attrib: c_int, f: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        drv.function(handle_of(f)).ok_or(CuResult::INVALID_HANDLE)?;
        let v = match attrib {
            0 => 1024,                                                      // MAX_THREADS_PER_BLOCK
            1..=3 => 0, // SHARED/CONST/LOCAL_SIZE_BYTES
            4 => 32,    // NUM_REGS
            5 | 6 => (drv.info.cc_major * 10 + drv.info.cc_minor) as c_int, // PTX/BINARY_VERSION
            _ => return Err(drv.unsupported("cuFuncGetAttribute(attribute)")),
        };
        // SAFETY: the caller's out-pointer.
        unsafe { put(pi, v) }
    })
}
