//! Modules and libraries (images of any kind the toolchain makes), kernel functions, their
//! attributes, and launches.
//!
//! Kernels are launched stream-ordered and batched: `cuLaunchKernel` checks the
//! configuration against the device's and the function's limits (so a bad launch fails in the
//! call, as with NVIDIA's driver), packs the arguments into the driver API's parameter buffer
//! layout (offsets and sizes the backend reported for the function) and posts the launch
//! without waiting.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Arc;

use netgpu_proto::cuda::{attr, func_attr, CuResult};
use netgpu_proto::wire::ops::{
    DeviceInfo, FunctionInfo, Handle, Reply, Request, LAUNCH_COOPERATIVE,
};

use super::{guard, handle_of, opaque, put, stream_of, CUdeviceptr, CUresult, Opaque, R};
use crate::image::{self, Image};
use crate::state::{self, lock, Driver, Function};

const CU_LAUNCH_PARAM_END: usize = 0x00;
const CU_LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
const CU_LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;

/// Loads `img` into backend context `ctx`. The whole image goes to the backend, which picks
/// what its executor runs. A backend that takes only PTX text (today's CPU executor) refuses
/// a fatbin; then the fatbin's newest PTX is sent instead.
pub fn load_image(drv: &Driver, ctx: Handle, img: &Image) -> Result<Handle, CuResult> {
    let cc = drv
        .info
        .cc_major
        .saturating_mul(10)
        .saturating_add(drv.info.cc_minor);
    let req = Request::ModuleLoad {
        ctx,
        parts: img.parts.clone(),
    };
    let max = drv.transport.max_transfer();
    let first = if img.data.len() <= max {
        drv.transport.call(&req, &img.data, &mut [])
    } else {
        Err(CuResult::INVALID_IMAGE)
    };
    let refused = matches!(
        first,
        Err(CuResult::INVALID_IMAGE)
            | Err(CuResult::INVALID_PTX)
            | Err(CuResult::NO_BINARY_FOR_GPU)
            | Err(CuResult::NOT_SUPPORTED)
    );
    let reply = if refused && image::is_binary(&img.data) {
        let cc = drv
            .info
            .cc_major
            .saturating_mul(10)
            .saturating_add(drv.info.cc_minor);
        match image::best_ptx(img, cc) {
            Some(ptx) => {
                drv.transport
                    .call(&Request::ModuleLoad { ctx, parts: vec![] }, &ptx, &mut [])
            }
            None => {
                crate::log("module image has no PTX the backend can run (build with a compute_XX PTX target, e.g. -gencode arch=compute_75,code=compute_75)");
                Err(CuResult::NO_BINARY_FOR_GPU)
            }
        }
    } else {
        first
    };
    match reply {
        Ok(Reply::Handle(h)) => {
            drv.set_module_arch(h, image::code_arch(img, cc));
            Ok(h)
        }
        Ok(_) => Err(CuResult::UNKNOWN),
        Err(e) => {
            // Some programs and libraries ignore a failed load (CuPy's CUB reductions then
            // return zeros): say it where a user looks.
            crate::log(&format!(
                "the backend refused a module image ({} bytes): {}; the backend's log names the construct",
                img.data.len(),
                e.name()
            ));
            Err(e)
        }
    }
}

fn load(image: Image) -> Result<Opaque, CuResult> {
    let ctx = super::ctx()?;
    load_image(state::driver()?, ctx, &image).map(opaque)
}

/// # Safety
/// `module` must be NULL or writable; `image` a fatbin wrapper, fatbin, cubin or PTX text.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut Opaque, image: *const c_void) -> CUresult {
    guard(|| {
        if image.is_null() || module.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: an image as the driver API defines it.
        let img = unsafe { image::locate(image.cast()) }?;
        let m = load(img)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(module, m) }
    })
}

/// JIT options steer the backend's compiler (for its own GPU) and are accepted; the log
/// buffers and the wall time are filled in (`api::link::JitReport`).
///
/// # Safety
/// As [`cuModuleLoadData`]; the option arrays hold `num_options` entries.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut Opaque,
    image: *const c_void,
    num_options: c_uint,
    options: *mut c_int,
    values: *mut *mut c_void,
) -> CUresult {
    let started = std::time::Instant::now();
    // SAFETY: the caller's option arrays.
    let report = match unsafe { super::link::JitReport::new(num_options, options, values) } {
        Ok(r) => r,
        Err(e) => return e.0,
    };
    // SAFETY: same contract.
    let r = unsafe { cuModuleLoadData(module, image) };
    if r == 0 {
        report.done("", started);
    } else {
        report.failed(
            &format!(
                "module load failed: {} (the backend refused the image)",
                CuResult(r).name()
            ),
            started,
        );
    }
    r
}

/// # Safety
/// As [`cuModuleLoadData`].
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadFatBinary(
    module: *mut Opaque,
    image: *const c_void,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuModuleLoadData(module, image) }
}

fn read_file(fname: *const c_char) -> Result<Vec<u8>, CuResult> {
    if fname.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: a NUL-terminated path (the API contract).
    let path = unsafe { CStr::from_ptr(fname) }
        .to_string_lossy()
        .into_owned();
    std::fs::read(&path).map_err(|_| CuResult::FILE_NOT_FOUND)
}

/// A file's bytes as an image: a binary file is one image whatever its headers say beyond
/// its size; a text file is PTX.
fn file_image(mut bytes: Vec<u8>) -> Result<Image, CuResult> {
    if bytes.first() == Some(&0xB1) {
        // A fatbin wrapper holds pointers: meaningless in a file.
        return Err(CuResult::INVALID_IMAGE);
    }
    if !image::is_binary(&bytes) {
        if let Some(n) = bytes.iter().position(|b| *b == 0) {
            bytes.truncate(n);
        }
    }
    Ok(Image::single(bytes))
}

/// # Safety
/// `fname` must be a NUL-terminated path; `module` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(module: *mut Opaque, fname: *const c_char) -> CUresult {
    guard(|| {
        if module.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let m = load(file_image(read_file(fname)?)?)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(module, m) }
    })
}

#[no_mangle]
pub extern "C" fn cuModuleUnload(module: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        drv.transport.flush()?;
        let module = handle_of(module);
        drv.call(&Request::ModuleUnload { module })?;
        drv.forget_module(module);
        Ok(())
    })
}

fn c_name(name: *const c_char) -> Result<String, CuResult> {
    if name.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    // SAFETY: a NUL-terminated symbol name (API contract).
    unsafe { CStr::from_ptr(name) }
        .to_str()
        .map(str::to_string)
        .map_err(|_| CuResult::NOT_FOUND)
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
        let name = c_name(name)?;
        if hfunc.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let ctx = super::ctx()?;
        let f = state::driver()?.module_function(ctx, handle_of(module), &name)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(hfunc, opaque(f.id)) }
    })
}

fn get_global(module: Handle, name: *const c_char, dptr: *mut CUdeviceptr, bytes: *mut usize) -> R {
    let name = c_name(name)?;
    match state::driver()?.call(&Request::ModuleGetGlobal { module, name })? {
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
    guard(|| get_global(handle_of(module), name, dptr, bytes))
}

/// The loading mode programs see: eager unless `CUDA_MODULE_LOADING=LAZY` (libraries are
/// always loaded into a context on first use, which is invisible to a program).
///
/// # Safety
/// `mode` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetLoadingMode(mode: *mut c_int) -> CUresult {
    guard(|| {
        let lazy =
            std::env::var("CUDA_MODULE_LOADING").is_ok_and(|v| v.eq_ignore_ascii_case("lazy"));
        // SAFETY: the caller's out-pointer (CU_MODULE_EAGER_LOADING 1, LAZY 2).
        unsafe { put(mode, if lazy { 2 } else { 1 }) }
    })
}

// ---- libraries and kernels (CUDA 12) ----

/// # Safety
/// `library` must be NULL or writable; `code` an image as for `cuModuleLoadData`; the option
/// arrays as the driver API defines them.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryLoadData(
    library: *mut Opaque,
    code: *const c_void,
    _jit_options: *mut c_int,
    _jit_values: *mut *mut c_void,
    _num_jit: c_uint,
    _lib_options: *mut c_int,
    _lib_values: *mut *mut c_void,
    _num_lib: c_uint,
) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        if library.is_null() || code.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // The image is copied now, so CU_LIBRARY_BINARY_IS_PRESERVED changes nothing.
        // SAFETY: an image as the driver API defines it.
        let img = unsafe { image::locate(code.cast()) }?;
        let lib = drv.library_create(img);
        // Load into the current context now when there is one, so a bad image fails here;
        // with none (cudart may load before any context exists), on first use.
        if let Ok(ctx) = state::current() {
            if let Err(e) = lib.module(drv, ctx) {
                let _ = drv.library_unload(lib.id);
                return Err(e);
            }
        }
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(library, opaque(lib.id)) }
    })
}

/// # Safety
/// As [`cuLibraryLoadData`], with a NUL-terminated path.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryLoadFromFile(
    library: *mut Opaque,
    fname: *const c_char,
    jit_options: *mut c_int,
    jit_values: *mut *mut c_void,
    num_jit: c_uint,
    lib_options: *mut c_int,
    lib_values: *mut *mut c_void,
    num_lib: c_uint,
) -> CUresult {
    guard(|| {
        let img = file_image(read_file(fname)?)?;
        let bytes = img.data;
        let mut data = bytes.clone();
        if !image::is_binary(&data) {
            data.push(0);
        }
        // SAFETY: `data` is a complete image (binary, or NUL-terminated text).
        let r = unsafe {
            cuLibraryLoadData(
                library,
                data.as_ptr().cast(),
                jit_options,
                jit_values,
                num_jit,
                lib_options,
                lib_values,
                num_lib,
            )
        };
        CuResult(r).ok()
    })
}

#[no_mangle]
pub extern "C" fn cuLibraryUnload(library: Opaque) -> CUresult {
    guard(|| state::driver()?.library_unload(handle_of(library)))
}

/// # Safety
/// `kernel` must be NULL or writable; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetKernel(
    kernel: *mut Opaque,
    library: Opaque,
    name: *const c_char,
) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let name = c_name(name)?;
        if kernel.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let lib = drv.library(handle_of(library))?;
        let k = drv.kernel(&lib, &name)?;
        // A name the image lacks fails now when a context is there to look it up in.
        if state::current().is_ok() {
            drv.kernel_function(&k)?;
        }
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(kernel, opaque(k.id)) }
    })
}

/// # Safety
/// `module` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetModule(module: *mut Opaque, library: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        if module.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let lib = drv.library(handle_of(library))?;
        let m = lib.module(drv, super::ctx()?)?;
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(module, opaque(m)) }
    })
}

/// # Safety
/// `name` must be NUL-terminated; `dptr` and `bytes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetGlobal(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: Opaque,
    name: *const c_char,
) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let lib = drv.library(handle_of(library))?;
        let m = lib.module(drv, super::ctx()?)?;
        get_global(m, name, dptr, bytes)
    })
}

/// # Safety
/// `func` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetFunction(func: *mut Opaque, kernel: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        if func.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let f = match drv.object(handle_of(kernel)) {
            Some(state::Object::Kernel(k)) => drv.kernel_function(&k)?,
            _ => return Err(CuResult::INVALID_HANDLE),
        };
        // SAFETY: the caller's out-pointer, checked above.
        unsafe { put(func, opaque(f.id)) }
    })
}

/// # Safety
/// `name` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetName(name: *mut *const c_char, kernel: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        match drv.object(handle_of(kernel)) {
            // SAFETY: the caller's out-pointer; the name lives as long as the kernel object,
            // which this library never frees.
            Some(state::Object::Kernel(k)) => unsafe { put(name, leak_name(&k.name)) },
            _ => Err(CuResult::INVALID_HANDLE),
        }
    })
}

/// # Safety
/// `name` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetName(name: *mut *const c_char, func: Opaque) -> CUresult {
    guard(|| {
        let f = state::driver()?.function(handle_of(func))?;
        // SAFETY: the caller's out-pointer; see leak_name.
        unsafe { put(name, leak_name(&f.name)) }
    })
}

/// A name pointer that stays valid after the function or kernel is unloaded (the driver API
/// lets programs keep it): each distinct name is kept once for the life of the process.
fn leak_name(n: &std::ffi::CString) -> *const c_char {
    static NAMES: std::sync::Mutex<Vec<&'static CStr>> = std::sync::Mutex::new(Vec::new());
    let mut names = lock(&NAMES);
    if let Some(s) = names.iter().find(|s| **s == n.as_c_str()) {
        return s.as_ptr();
    }
    let s: &'static CStr = Box::leak(n.clone().into_boxed_c_str());
    names.push(s);
    s.as_ptr()
}

fn param_info(f: &Function, index: usize, offset: *mut usize, size: *mut usize) -> R {
    let p = f.info.params.get(index).ok_or(CuResult::INVALID_VALUE)?;
    // SAFETY: the caller's out-pointers, each optional.
    unsafe {
        if !offset.is_null() {
            put(offset, p.offset as usize)?;
        }
        if !size.is_null() {
            put(size, p.size as usize)?;
        }
    }
    Ok(())
}

/// # Safety
/// `offset` and `size` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetParamInfo(
    func: Opaque,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CUresult {
    guard(|| {
        param_info(
            &*state::driver()?.function(handle_of(func))?,
            index,
            offset,
            size,
        )
    })
}

/// # Safety
/// As [`cuFuncGetParamInfo`].
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetParamInfo(
    kernel: Opaque,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CUresult {
    // SAFETY: a CUkernel is accepted wherever a CUfunction is.
    unsafe { cuFuncGetParamInfo(kernel, index, offset, size) }
}

/// # Safety
/// `count` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetParamCount(func: Opaque, count: *mut usize) -> CUresult {
    guard(|| {
        let f = state::driver()?.function(handle_of(func))?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(count, f.info.params.len()) }
    })
}

/// # Safety
/// As [`cuFuncGetParamCount`].
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetParamCount(kernel: Opaque, count: *mut usize) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuFuncGetParamCount(kernel, count) }
}

/// A function attribute: what `cuFuncSetAttribute` set, else the backend's report, else what
/// follows from the device ([`default_attribute`]).
pub fn function_attribute(drv: &Driver, f: &Function, a: u32) -> Result<c_int, CuResult> {
    if let Some((_, v)) = lock(&f.set_attributes).iter().find(|(k, _)| *k == a) {
        return Ok(*v);
    }
    if let Some(v) = f.info.attribute(a) {
        return Ok(v);
    }
    let static_smem = match a {
        func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
            function_attribute(drv, f, func_attr::SHARED_SIZE_BYTES)?
        }
        _ => 0,
    };
    default_attribute(&drv.info, a, static_smem).ok_or(CuResult::INVALID_VALUE)
}

/// A function attribute the backend reported nothing about (the device path carries none):
/// any block size and the device's shared memory, no registers or local memory counted, the
/// device's own architecture, no cluster requirements. `None` for an unknown attribute.
pub fn default_attribute(info: &DeviceInfo, a: u32, static_smem: c_int) -> Option<c_int> {
    let dev = |n: u32| super::device::attribute(info, n as c_int).unwrap_or(0);
    Some(match a {
        func_attr::MAX_THREADS_PER_BLOCK => dev(attr::MAX_THREADS_PER_BLOCK),
        func_attr::SHARED_SIZE_BYTES
        | func_attr::CONST_SIZE_BYTES
        | func_attr::LOCAL_SIZE_BYTES
        | func_attr::NUM_REGS => 0,
        func_attr::PTX_VERSION | func_attr::BINARY_VERSION => {
            info.cc_major
                .saturating_mul(10)
                .saturating_add(info.cc_minor) as c_int
        }
        func_attr::CACHE_MODE_CA => 0,
        func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
            dev(attr::MAX_SHARED_MEMORY_PER_BLOCK).saturating_sub(static_smem)
        }
        func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT => -1,
        func_attr::CLUSTER_SIZE_MUST_BE_SET
        | func_attr::REQUIRED_CLUSTER_WIDTH
        | func_attr::REQUIRED_CLUSTER_HEIGHT
        | func_attr::REQUIRED_CLUSTER_DEPTH
        | func_attr::NON_PORTABLE_CLUSTER_SIZE_ALLOWED
        | func_attr::CLUSTER_SCHEDULING_POLICY_PREFERENCE
        | func_attr::DEVICE_NODE_UPDATE_SUPPORTED
        | func_attr::SHARED_MEMORY_MODE => 0,
        _ => return None,
    })
}

/// # Safety
/// `pi` must be NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut c_int, attrib: c_int, f: Opaque) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        let f = drv.function(handle_of(f))?;
        let v = function_attribute(drv, &f, attrib as u32)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(pi, v) }
    })
}

/// # Safety
/// As [`cuFuncGetAttribute`] (one device, so `dev` must be 0).
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetAttribute(
    pi: *mut c_int,
    attrib: c_int,
    kernel: Opaque,
    dev: c_int,
) -> CUresult {
    if dev != 0 {
        return CuResult::INVALID_DEVICE.0;
    }
    // SAFETY: same contract.
    unsafe { cuFuncGetAttribute(pi, attrib, kernel) }
}

fn set_attribute(f: &Function, a: u32, value: c_int) -> R {
    let drv = state::driver()?;
    match a {
        func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
            let optin = super::device::attribute(
                &drv.info,
                attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN as c_int,
            )?
            .max(super::device::attribute(
                &drv.info,
                attr::MAX_SHARED_MEMORY_PER_BLOCK as c_int,
            )?);
            let static_smem = function_attribute(drv, f, func_attr::SHARED_SIZE_BYTES)?;
            if value < 0 || value.saturating_add(static_smem) > optin {
                return Err(CuResult::INVALID_VALUE);
            }
        }
        func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT if !(-1..=100).contains(&value) => {
            return Err(CuResult::INVALID_VALUE)
        }
        func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT
        | func_attr::REQUIRED_CLUSTER_WIDTH
        | func_attr::REQUIRED_CLUSTER_HEIGHT
        | func_attr::REQUIRED_CLUSTER_DEPTH
        | func_attr::NON_PORTABLE_CLUSTER_SIZE_ALLOWED
        | func_attr::CLUSTER_SCHEDULING_POLICY_PREFERENCE => {}
        _ => return Err(CuResult::INVALID_VALUE),
    }
    // The backend applies it where its executor has such a setting (a GPU); a backend that
    // has none (the CPU executor: no carve-out, any shared-memory size up to its limit)
    // answers NOT_SUPPORTED, which changes nothing the program can observe here.
    match drv.call(&Request::FuncSetAttribute {
        func: f.backend(),
        attr: a,
        value,
    }) {
        Ok(_) | Err(CuResult::NOT_SUPPORTED) => {}
        Err(e) => return Err(e),
    }
    let mut s = lock(&f.set_attributes);
    s.retain(|(k, _)| *k != a);
    s.push((a, value));
    *lock(&f.launch_limits) = None;
    Ok(())
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(f: Opaque, attrib: c_int, value: c_int) -> CUresult {
    guard(|| {
        set_attribute(
            &*state::driver()?.function(handle_of(f))?,
            attrib as u32,
            value,
        )
    })
}

#[no_mangle]
pub extern "C" fn cuKernelSetAttribute(
    attrib: c_int,
    value: c_int,
    kernel: Opaque,
    dev: c_int,
) -> CUresult {
    if dev != 0 {
        return CuResult::INVALID_DEVICE.0;
    }
    cuFuncSetAttribute(kernel, attrib, value)
}

/// Cache preferences are hints; the executors have one configuration.
#[no_mangle]
pub extern "C" fn cuFuncSetCacheConfig(f: Opaque, config: c_int) -> CUresult {
    guard(|| {
        state::driver()?.function(handle_of(f))?;
        if !(0..=3).contains(&config) {
            return Err(CuResult::INVALID_VALUE);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuKernelSetCacheConfig(kernel: Opaque, config: c_int, dev: c_int) -> CUresult {
    if dev != 0 {
        return CuResult::INVALID_DEVICE.0;
    }
    cuFuncSetCacheConfig(kernel, config)
}

#[no_mangle]
pub extern "C" fn cuFuncSetSharedMemConfig(f: Opaque, config: c_int) -> CUresult {
    guard(|| {
        state::driver()?.function(handle_of(f))?;
        if !(0..=2).contains(&config) {
            return Err(CuResult::INVALID_VALUE);
        }
        Ok(())
    })
}

/// Packs `kernelParams` (one pointer per parameter) into the parameter buffer.
///
/// # Safety
/// `params` must hold one valid pointer per kernel parameter, each to `size` readable bytes.
unsafe fn pack(f: &FunctionInfo, params: *mut *mut c_void) -> Result<Vec<u8>, CuResult> {
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

/// A launch configuration the device or the function cannot run fails now, as in CUDA.
fn check_config(drv: &Driver, f: &Function, grid: [u32; 3], block: [u32; 3], smem: u32) -> R {
    if grid.contains(&0) || block.contains(&0) {
        return Err(CuResult::INVALID_VALUE);
    }
    let dev = &drv.limits;
    for i in 0..3 {
        if (dev.block[i] > 0 && u64::from(block[i]) > dev.block[i])
            || (dev.grid[i] > 0 && u64::from(grid[i]) > dev.grid[i])
        {
            return Err(CuResult::INVALID_VALUE);
        }
    }
    let lim = func_limits(drv, f)?;
    let threads: u64 = block.iter().map(|b| u64::from(*b)).product();
    if lim.max_threads > 0 && threads > lim.max_threads {
        return Err(CuResult::INVALID_VALUE);
    }
    let smem = u64::from(smem);
    if smem > lim.max_dynamic_smem || smem + lim.static_smem > dev.smem_per_block {
        return Err(CuResult::INVALID_VALUE);
    }
    Ok(())
}

/// `f`'s launch limits, from its attributes (worked out once until an attribute is set).
fn func_limits(drv: &Driver, f: &Function) -> Result<state::FuncLimits, CuResult> {
    if let Some(l) = *lock(&f.launch_limits) {
        return Ok(l);
    }
    let a = |n| function_attribute(drv, f, n).map(|v| v.max(0) as u64);
    let l = state::FuncLimits {
        max_threads: a(func_attr::MAX_THREADS_PER_BLOCK)?,
        static_smem: a(func_attr::SHARED_SIZE_BYTES)?,
        max_dynamic_smem: a(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES)?,
    };
    *lock(&f.launch_limits) = Some(l);
    Ok(l)
}

/// Checks, packs and posts a launch.
///
/// # Safety
/// `kernel_params`/`extra` as the driver API defines them.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch(
    f: Opaque,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem_bytes: u32,
    stream: Opaque,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    flags: u32,
) -> R {
    super::ctx()?;
    let drv = state::driver()?;
    let func: Arc<Function> = drv.function(handle_of(f))?;
    check_config(drv, &func, grid, block, shared_mem_bytes)?;
    if flags & LAUNCH_COOPERATIVE != 0 {
        let blocks: u64 = grid.iter().map(|g| u64::from(*g)).product();
        let per_sm = super::occupancy::max_active_blocks(
            drv,
            &func,
            block.iter().product(),
            shared_mem_bytes as usize,
        )?;
        let sms =
            super::device::attribute(&drv.info, attr::MULTIPROCESSOR_COUNT as c_int)?.max(1) as u64;
        if blocks > per_sm as u64 * sms {
            return Err(CuResult(720)); // COOPERATIVE_LAUNCH_TOO_LARGE
        }
    }
    let params = match (kernel_params.is_null(), extra.is_null()) {
        // SAFETY: the caller's kernelParams array (API contract).
        (false, _) => unsafe { pack(&func.info, kernel_params) }?,
        // SAFETY: the caller's extra array (API contract).
        (true, false) => unsafe { extra_buffer(extra) }?,
        (true, true) if func.info.params.is_empty() => Vec::new(),
        (true, true) => return Err(CuResult::INVALID_VALUE),
    };
    let req = Request::LaunchKernel {
        func: func.backend(),
        grid,
        block,
        shared_mem_bytes,
        stream: stream_of(stream),
        flags,
    };
    if super::graph::record(stream_of(stream), || super::graph::Node::Post {
        req: req.clone(),
        data: params.clone(),
    })? {
        return Ok(());
    }
    drv.transport.post(&req, &params)
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
    // SAFETY: the caller's arguments, as the API defines them.
    guard(|| unsafe {
        launch(
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared_mem_bytes,
            stream,
            kernel_params,
            extra,
            0,
        )
    })
}

/// # Safety
/// As [`cuLaunchKernel`] (no `extra` form).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
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
) -> CUresult {
    // SAFETY: the caller's arguments, as the API defines them.
    guard(|| unsafe {
        launch(
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared_mem_bytes,
            stream,
            kernel_params,
            std::ptr::null_mut(),
            LAUNCH_COOPERATIVE,
        )
    })
}

/// `CUlaunchConfig`.
#[repr(C)]
pub struct LaunchConfig {
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared_mem_bytes: c_uint,
    stream: Opaque,
    attrs: *const LaunchAttribute,
    num_attrs: c_uint,
}

/// `CUlaunchAttribute`: an id and a 64-byte value union.
#[repr(C)]
pub struct LaunchAttribute {
    id: c_uint,
    pad: [u8; 4],
    value: [u32; 16],
}

/// # Safety
/// `config` must point to a `CUlaunchConfig` whose attribute array holds `numAttrs` entries;
/// `kernel_params`/`extra` as for [`cuLaunchKernel`].
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const LaunchConfig,
    f: Opaque,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    guard(|| {
        if config.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: the caller's configuration (API contract).
        let c = unsafe { &*config };
        let mut flags = 0;
        if c.num_attrs > 0 {
            if c.attrs.is_null() {
                return Err(CuResult::INVALID_VALUE);
            }
            // SAFETY: `num_attrs` entries (API contract).
            let attrs = unsafe { std::slice::from_raw_parts(c.attrs, c.num_attrs as usize) };
            for a in attrs {
                match a.id {
                    // COOPERATIVE
                    2 if a.value[0] != 0 => flags |= LAUNCH_COOPERATIVE,
                    2 => {}
                    // CLUSTER_DIMENSION: one-block clusters are no clusters.
                    4 if a.value[..3].iter().all(|d| *d <= 1) => {}
                    // ACCESS_POLICY_WINDOW, SYNCHRONIZATION_POLICY, CLUSTER_SCHEDULING_POLICY,
                    // PROGRAMMATIC_STREAM_SERIALIZATION (full serialisation is what happens),
                    // PRIORITY, MEM_SYNC_DOMAIN(_MAP): performance hints.
                    1 | 3 | 5 | 8 | 9 | 10 => {}
                    6 => {}
                    _ => return Err(state::unsupported("cuLaunchKernelEx (launch attribute)")),
                }
            }
        }
        // SAFETY: the caller's arguments, as the API defines them.
        unsafe {
            launch(
                f,
                c.grid,
                c.block,
                c.shared_mem_bytes,
                c.stream,
                kernel_params,
                extra,
                flags,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_cudart_asks_has_an_answer_without_the_backends_report() {
        // cudaFuncGetAttributes asks 0..=17 (measured, cudart 13.5); one failure makes thrust
        // fail with cudaErrorInvalidDeviceFunction on the device path.
        let info = DeviceInfo {
            name: "d".into(),
            total_mem: 1 << 30,
            cc_major: 8,
            cc_minor: 0,
            multiprocessors: 2,
            uuid: [0; 16],
            driver_version: 0,
            executor: "cpu".into(),
            attributes: vec![
                (attr::MAX_THREADS_PER_BLOCK, 1024),
                (attr::MAX_SHARED_MEMORY_PER_BLOCK, 49152),
            ],
        };
        for a in 0..=func_attr::SHARED_MEMORY_MODE {
            assert!(default_attribute(&info, a, 0).is_some(), "attribute {a}");
        }
        assert_eq!(
            default_attribute(&info, func_attr::MAX_THREADS_PER_BLOCK, 0),
            Some(1024)
        );
        assert_eq!(
            default_attribute(&info, func_attr::PTX_VERSION, 0),
            Some(80)
        );
        assert_eq!(
            default_attribute(&info, func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES, 1024),
            Some(48128)
        );
        assert_eq!(default_attribute(&info, 99, 0), None);
    }
}
