//! The CUDA executor: a physical GPU through the CUDA driver API, via cudarc loaded at run
//! time so the backend builds and starts on machines without CUDA.
//!
//! cudarc panics when `libcuda.so` is missing, so [`CudaExecutor::open`] probes with
//! `is_culib_present()` before the first driver call and turns every failure into a
//! [`CudaError`]. Each session gets its own CUDA contexts (`cuCtxCreate`), so its memory,
//! modules and streams live in address spaces of their own; the engine also tracks every
//! allocation so copies and memsets are checked against the calling context's memory before
//! they reach the driver, and destroying the engine destroys its contexts, which frees
//! everything they held.
//!
//! All calls come from the session's thread; each operation makes its context current first.

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::ptr;

use cudarc::driver::sys;
use netgpu_proto::cuda::{attr, CuResult};
use netgpu_proto::wire::ops::{DevPtr, DeviceInfo, Handle, ParamInfo};
use thiserror::Error;

use super::{memset_len, Engine, ExecResult, Executor, HandleTable, LaunchDims};

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("libcuda.so was not found: install the NVIDIA driver, or run with --executor cpu")]
    NoDriver,
    #[error("CUDA driver call {call} failed: {code}")]
    Driver { call: &'static str, code: CuResult },
    #[error("CUDA device {0} does not exist")]
    NoSuchDevice(u32),
}

fn check(r: sys::CUresult) -> ExecResult<()> {
    CuResult(r as u32).ok()
}

fn init_check(call: &'static str, r: sys::CUresult) -> Result<(), CudaError> {
    check(r).map_err(|code| CudaError::Driver { call, code })
}

/// The attributes reported to clients, with the driver's enum values.
const ATTRIBUTES: &[(u32, sys::CUdevice_attribute)] = {
    use sys::CUdevice_attribute::*;
    &[
        (
            attr::MAX_THREADS_PER_BLOCK,
            CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        ),
        (attr::MAX_BLOCK_DIM_X, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X),
        (attr::MAX_BLOCK_DIM_Y, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y),
        (attr::MAX_BLOCK_DIM_Z, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z),
        (attr::MAX_GRID_DIM_X, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X),
        (attr::MAX_GRID_DIM_Y, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y),
        (attr::MAX_GRID_DIM_Z, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z),
        (
            attr::MAX_SHARED_MEMORY_PER_BLOCK,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK,
        ),
        (
            attr::TOTAL_CONSTANT_MEMORY,
            CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY,
        ),
        (attr::WARP_SIZE, CU_DEVICE_ATTRIBUTE_WARP_SIZE),
        (attr::MAX_PITCH, CU_DEVICE_ATTRIBUTE_MAX_PITCH),
        (
            attr::MAX_REGISTERS_PER_BLOCK,
            CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK,
        ),
        (attr::CLOCK_RATE, CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
        (
            attr::TEXTURE_ALIGNMENT,
            CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT,
        ),
        (
            attr::MULTIPROCESSOR_COUNT,
            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        ),
        (attr::INTEGRATED, CU_DEVICE_ATTRIBUTE_INTEGRATED),
        (
            attr::CAN_MAP_HOST_MEMORY,
            CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY,
        ),
        (
            attr::CONCURRENT_KERNELS,
            CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS,
        ),
        (attr::PCI_BUS_ID, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
        (attr::PCI_DEVICE_ID, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
        (
            attr::MEMORY_CLOCK_RATE,
            CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE,
        ),
        (
            attr::GLOBAL_MEMORY_BUS_WIDTH,
            CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH,
        ),
        (attr::L2_CACHE_SIZE, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
        (
            attr::MAX_THREADS_PER_MULTIPROCESSOR,
            CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR,
        ),
        (
            attr::ASYNC_ENGINE_COUNT,
            CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT,
        ),
        (
            attr::UNIFIED_ADDRESSING,
            CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING,
        ),
        (
            attr::COMPUTE_CAPABILITY_MAJOR,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
        ),
        (
            attr::COMPUTE_CAPABILITY_MINOR,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
        ),
        (
            attr::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        ),
        (
            attr::MAX_REGISTERS_PER_MULTIPROCESSOR,
            CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR,
        ),
        (
            attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        ),
    ]
};

pub struct CudaExecutor {
    info: DeviceInfo,
    dev: sys::CUdevice,
}

impl CudaExecutor {
    /// Opens CUDA device `ordinal`; any missing piece is an error, never a panic.
    pub fn open(ordinal: u32) -> Result<CudaExecutor, CudaError> {
        // SAFETY: only tries to dlopen libcuda and reports whether that worked; it touches
        // no CUDA state.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        // SAFETY: libcuda is present (checked above), so cudarc's lazily loaded entry points
        // resolve; every out-pointer below points to a live local of the right type.
        unsafe {
            init_check("cuInit", sys::cuInit(0))?;
            let mut count = 0;
            init_check("cuDeviceGetCount", sys::cuDeviceGetCount(&mut count))?;
            if i64::from(ordinal) >= i64::from(count) {
                return Err(CudaError::NoSuchDevice(ordinal));
            }
            let mut dev = 0;
            init_check("cuDeviceGet", sys::cuDeviceGet(&mut dev, ordinal as i32))?;
            let mut name = [0 as std::ffi::c_char; 256];
            init_check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev),
            )?;
            let name = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let mut total = 0usize;
            init_check(
                "cuDeviceTotalMem",
                sys::cuDeviceTotalMem_v2(&mut total, dev),
            )?;
            let mut uuid = sys::CUuuid_st { bytes: [0; 16] };
            init_check("cuDeviceGetUuid", sys::cuDeviceGetUuid(&mut uuid, dev))?;
            let mut version = 0;
            init_check("cuDriverGetVersion", sys::cuDriverGetVersion(&mut version))?;
            let mut attributes = Vec::with_capacity(ATTRIBUTES.len());
            for &(num, a) in ATTRIBUTES {
                let mut v = 0;
                // Attributes a driver does not know are left out rather than failing.
                if check(sys::cuDeviceGetAttribute(&mut v, a, dev)).is_ok() {
                    attributes.push((num, v));
                }
            }
            let get = |n| {
                attributes
                    .iter()
                    .find(|(a, _)| *a == n)
                    .map(|(_, v)| *v as u32)
                    .unwrap_or(0)
            };
            let info = DeviceInfo {
                name,
                total_mem: total as u64,
                cc_major: get(attr::COMPUTE_CAPABILITY_MAJOR),
                cc_minor: get(attr::COMPUTE_CAPABILITY_MINOR),
                multiprocessors: get(attr::MULTIPROCESSOR_COUNT),
                uuid: uuid.bytes.map(|b| b as u8),
                driver_version: version as u32,
                executor: "cuda".into(),
                attributes,
            };
            Ok(CudaExecutor { info, dev })
        }
    }
}

impl Executor for CudaExecutor {
    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    fn open(&self, quota: u64) -> ExecResult<Box<dyn Engine>> {
        Ok(Box::new(CudaEngine {
            dev: self.dev,
            quota: quota.min(self.info.total_mem),
            used: 0,
            ctxs: HandleTable::new(),
            allocs: BTreeMap::new(),
            modules: HandleTable::new(),
            functions: HandleTable::new(),
            streams: HandleTable::new(),
            events: HandleTable::new(),
        }))
    }
}

struct Ctx(sys::CUcontext);
struct Module {
    ctx: Handle,
    raw: sys::CUmodule,
}
struct Function {
    ctx: Handle,
    module: Handle,
    raw: sys::CUfunction,
    params: Vec<ParamInfo>,
}
struct Stream {
    ctx: Handle,
    raw: sys::CUstream,
}
struct Event {
    ctx: Handle,
    raw: sys::CUevent,
}

pub struct CudaEngine {
    dev: sys::CUdevice,
    quota: u64,
    used: u64,
    ctxs: HandleTable<Ctx>,
    /// Every allocation of this session: base -> (size, owning context).
    allocs: BTreeMap<DevPtr, (u64, Handle)>,
    modules: HandleTable<Module>,
    functions: HandleTable<Function>,
    streams: HandleTable<Stream>,
    events: HandleTable<Event>,
}

// SAFETY: the raw CUDA handles are owned by this engine and used only from the thread that
// currently owns it (a session moves its engine to its own thread once); the driver API is
// thread-safe and every call first makes the right context current on the calling thread.
unsafe impl Send for CudaEngine {}

impl CudaEngine {
    /// Makes `ctx` current on this thread.
    fn enter(&self, ctx: Handle) -> ExecResult<()> {
        let c = self.ctxs.get(ctx).ok_or(CuResult::INVALID_CONTEXT)?;
        // SAFETY: `c.0` is a live context created by this engine.
        check(unsafe { sys::cuCtxSetCurrent(c.0) })
    }

    /// The raw stream for `stream` in `ctx` (0 is the null stream), with `ctx` made current.
    fn stream_in(&self, ctx: Handle, stream: Handle) -> ExecResult<sys::CUstream> {
        self.enter(ctx)?;
        if stream == 0 {
            return Ok(ptr::null_mut());
        }
        match self.streams.get(stream) {
            Some(s) if s.ctx == ctx => Ok(s.raw),
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    fn range_in(&self, ctx: Handle, p: DevPtr, len: u64) -> ExecResult<()> {
        let (base, (size, owner)) = self
            .allocs
            .range(..=p)
            .next_back()
            .ok_or(CuResult::INVALID_VALUE)?;
        let end = p.checked_add(len).ok_or(CuResult::INVALID_VALUE)?;
        if *owner != ctx || end > base + size {
            return Err(CuResult::INVALID_VALUE);
        }
        Ok(())
    }

    fn destroy_ctx_objects(&mut self, ctx: Handle) {
        // Destroying the context frees its memory, modules, streams and events in the
        // driver; here only the bookkeeping goes.
        self.modules.drain_where(|m| m.ctx == ctx);
        self.functions.drain_where(|f| f.ctx == ctx);
        self.streams.drain_where(|s| s.ctx == ctx);
        self.events.drain_where(|e| e.ctx == ctx);
        let freed: u64 = self
            .allocs
            .values()
            .filter(|(_, c)| *c == ctx)
            .map(|(s, _)| *s)
            .sum();
        self.allocs.retain(|_, (_, c)| *c != ctx);
        self.used -= freed;
    }
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        for (_, c) in self.ctxs.drain_where(|_| true) {
            // SAFETY: each context was created by this engine and is destroyed once.
            unsafe {
                sys::cuCtxDestroy_v2(c.0);
            }
        }
    }
}

impl Engine for CudaEngine {
    fn ctx_create(&mut self, _flags: u32) -> ExecResult<Handle> {
        let mut c = ptr::null_mut();
        // SAFETY: out-pointer to a local; `dev` was obtained from cuDeviceGet.
        check(unsafe { sys::cuCtxCreate_v2(&mut c, 0, self.dev) })?;
        Ok(self.ctxs.insert(Ctx(c)))
    }

    fn ctx_destroy(&mut self, ctx: Handle) -> ExecResult<()> {
        let c = self.ctxs.remove(ctx).ok_or(CuResult::INVALID_CONTEXT)?;
        self.destroy_ctx_objects(ctx);
        // SAFETY: the context was created by this engine and is no longer referenced.
        check(unsafe { sys::cuCtxDestroy_v2(c.0) })
    }

    fn ctx_synchronize(&mut self, ctx: Handle) -> ExecResult<()> {
        self.enter(ctx)?;
        // SAFETY: a context is current.
        check(unsafe { sys::cuCtxSynchronize() })
    }

    fn mem_alloc(&mut self, ctx: Handle, size: u64) -> ExecResult<DevPtr> {
        self.enter(ctx)?;
        if size == 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        if self.used.saturating_add(size) > self.quota {
            return Err(CuResult::OUT_OF_MEMORY);
        }
        let mut p = 0;
        // SAFETY: out-pointer to a local; a context is current.
        check(unsafe { sys::cuMemAlloc_v2(&mut p, size as usize) })?;
        self.allocs.insert(p, (size, ctx));
        self.used += size;
        Ok(p)
    }

    fn mem_free(&mut self, p: DevPtr) -> ExecResult<()> {
        if p == 0 {
            return Ok(());
        }
        let &(size, ctx) = self.allocs.get(&p).ok_or(CuResult::INVALID_VALUE)?;
        self.enter(ctx)?;
        // SAFETY: `p` is a live allocation of this engine in the current context.
        check(unsafe { sys::cuMemFree_v2(p) })?;
        self.allocs.remove(&p);
        self.used -= size;
        Ok(())
    }

    fn mem_info(&self) -> (u64, u64) {
        (self.quota - self.used, self.quota)
    }

    fn host_view_mut(&mut self, _: Handle, _: DevPtr, _: u64) -> Option<&mut [u8]> {
        None
    }

    fn host_view(&mut self, _: Handle, _: DevPtr, _: u64) -> Option<&[u8]> {
        None
    }

    fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: &[u8],
        stream: Handle,
    ) -> ExecResult<()> {
        let s = self.stream_in(ctx, stream)?;
        if src.is_empty() {
            return Ok(());
        }
        self.range_in(ctx, dst, src.len() as u64)?;
        // SAFETY: the destination lies in an allocation of the current context; `src` is
        // pageable memory, which the driver stages before returning, so it may be reused.
        check(unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.as_ptr().cast(), src.len(), s) })
    }

    fn memcpy_dtoh(
        &mut self,
        ctx: Handle,
        dst: &mut [u8],
        src: DevPtr,
        stream: Handle,
    ) -> ExecResult<()> {
        let s = self.stream_in(ctx, stream)?;
        if dst.is_empty() {
            return Ok(());
        }
        self.range_in(ctx, src, dst.len() as u64)?;
        // SAFETY: the source lies in an allocation of the current context; the stream is
        // synchronised before `dst` is used.
        unsafe {
            check(sys::cuMemcpyDtoHAsync_v2(
                dst.as_mut_ptr().cast(),
                src,
                dst.len(),
                s,
            ))?;
            check(sys::cuStreamSynchronize(s))
        }
    }

    fn memcpy_dtod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<()> {
        let s = self.stream_in(ctx, stream)?;
        if len == 0 {
            return Ok(());
        }
        self.range_in(ctx, src, len)?;
        self.range_in(ctx, dst, len)?;
        // SAFETY: both ranges lie in allocations of the current context.
        check(unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len as usize, s) })
    }

    fn memset(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
    ) -> ExecResult<()> {
        let s = self.stream_in(ctx, stream)?;
        let len = memset_len(dst, elem_size, count)?;
        if len == 0 {
            return Ok(());
        }
        self.range_in(ctx, dst, len)?;
        let n = count as usize;
        // SAFETY: the range lies in an allocation of the current context.
        check(unsafe {
            match elem_size {
                1 => sys::cuMemsetD8Async(dst, value as u8, n, s),
                2 => sys::cuMemsetD16Async(dst, value as u16, n, s),
                _ => sys::cuMemsetD32Async(dst, value, n, s),
            }
        })
    }

    fn module_load(&mut self, ctx: Handle, image: &[u8]) -> ExecResult<Handle> {
        self.enter(ctx)?;
        // The driver reads PTX up to a NUL: an interior NUL would hide the rest, so refuse it.
        let text = image.strip_suffix(&[0]).unwrap_or(image);
        let c = CString::new(text).map_err(|_| CuResult::INVALID_IMAGE)?;
        let mut m = ptr::null_mut();
        // SAFETY: `c` is a NUL-terminated image that outlives the call; a context is current.
        check(unsafe { sys::cuModuleLoadData(&mut m, c.as_ptr().cast()) })?;
        Ok(self.modules.insert(Module { ctx, raw: m }))
    }

    fn module_unload(&mut self, module: Handle) -> ExecResult<()> {
        let ctx = self
            .modules
            .get(module)
            .ok_or(CuResult::INVALID_HANDLE)?
            .ctx;
        self.enter(ctx)?;
        let m = self
            .modules
            .remove(module)
            .ok_or(CuResult::INVALID_HANDLE)?;
        self.functions.drain_where(|f| f.module == module);
        // SAFETY: the module was loaded by this engine and is unloaded once.
        check(unsafe { sys::cuModuleUnload(m.raw) })
    }

    fn module_get_function(
        &mut self,
        module: Handle,
        name: &str,
    ) -> ExecResult<(Handle, Vec<ParamInfo>)> {
        let m = self.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, raw_mod) = (m.ctx, m.raw);
        self.enter(ctx)?;
        let cname = CString::new(name).map_err(|_| CuResult::INVALID_VALUE)?;
        let mut f = ptr::null_mut();
        // SAFETY: live module, NUL-terminated name, out-pointer to a local.
        check(unsafe { sys::cuModuleGetFunction(&mut f, raw_mod, cname.as_ptr()) })?;
        let mut params = Vec::new();
        for i in 0..4096usize {
            let (mut off, mut size) = (0usize, 0usize);
            // SAFETY: live function, out-pointers to locals; past the last parameter the
            // driver answers INVALID_VALUE, which ends the loop.
            if check(unsafe { sys::cuFuncGetParamInfo(f, i, &mut off, &mut size) }).is_err() {
                break;
            }
            params.push(ParamInfo {
                offset: off as u32,
                size: size as u32,
            });
        }
        let h = self.functions.insert(Function {
            ctx,
            module,
            raw: f,
            params: params.clone(),
        });
        Ok((h, params))
    }

    fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)> {
        let m = self.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, raw_mod) = (m.ctx, m.raw);
        self.enter(ctx)?;
        let cname = CString::new(name).map_err(|_| CuResult::INVALID_VALUE)?;
        let (mut p, mut size) = (0, 0usize);
        // SAFETY: live module, NUL-terminated name, out-pointers to locals.
        check(unsafe { sys::cuModuleGetGlobal_v2(&mut p, &mut size, raw_mod, cname.as_ptr()) })?;
        // Module globals are memory of the context: copies to and from them are allowed.
        self.allocs.entry(p).or_insert((size as u64, ctx));
        Ok((p, size as u64))
    }

    fn launch(
        &mut self,
        func: Handle,
        dims: LaunchDims,
        params: &[u8],
        stream: Handle,
    ) -> ExecResult<()> {
        let f = self.functions.get(func).ok_or(CuResult::INVALID_HANDLE)?;
        let (ctx, raw, need) = (
            f.ctx,
            f.raw,
            f.params
                .iter()
                .map(|p| p.offset + p.size)
                .max()
                .unwrap_or(0),
        );
        let s = self.stream_in(ctx, stream)?;
        if (params.len() as u64) < u64::from(need) {
            return Err(CuResult::INVALID_VALUE);
        }
        let mut size = params.len();
        let mut extra = [
            ptr::without_provenance_mut::<c_void>(1), // CU_LAUNCH_PARAM_BUFFER_POINTER
            params.as_ptr() as *mut c_void,
            ptr::without_provenance_mut::<c_void>(2), // CU_LAUNCH_PARAM_BUFFER_SIZE
            (&mut size as *mut usize).cast(),
            ptr::null_mut(), // CU_LAUNCH_PARAM_END
        ];
        let [gx, gy, gz] = dims.grid;
        let [bx, by, bz] = dims.block;
        // SAFETY: live function of the current context; the parameter buffer holds at least
        // the bytes the kernel's parameters span and is copied by the driver during the call.
        check(unsafe {
            sys::cuLaunchKernel(
                raw,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                dims.shared_mem_bytes,
                s,
                ptr::null_mut(),
                extra.as_mut_ptr(),
            )
        })
    }

    fn stream_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle> {
        self.enter(ctx)?;
        let mut s = ptr::null_mut();
        // SAFETY: out-pointer to a local; a context is current.
        check(unsafe { sys::cuStreamCreate(&mut s, flags & 1) })?;
        Ok(self.streams.insert(Stream { ctx, raw: s }))
    }

    fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()> {
        let ctx = self
            .streams
            .get(stream)
            .ok_or(CuResult::INVALID_HANDLE)?
            .ctx;
        self.enter(ctx)?;
        let s = self
            .streams
            .remove(stream)
            .ok_or(CuResult::INVALID_HANDLE)?;
        // SAFETY: the stream was created by this engine and is destroyed once.
        check(unsafe { sys::cuStreamDestroy_v2(s.raw) })
    }

    fn stream_synchronize(&mut self, stream: Handle) -> ExecResult<()> {
        if stream == 0 {
            // SAFETY: with no context current this fails cleanly with INVALID_CONTEXT.
            return check(unsafe { sys::cuCtxSynchronize() });
        }
        let s = self.streams.get(stream).ok_or(CuResult::INVALID_HANDLE)?;
        let raw = s.raw;
        self.enter(s.ctx)?;
        // SAFETY: live stream of the current context.
        check(unsafe { sys::cuStreamSynchronize(raw) })
    }

    fn stream_query(&mut self, stream: Handle) -> ExecResult<bool> {
        let raw = if stream == 0 {
            ptr::null_mut()
        } else {
            let s = self.streams.get(stream).ok_or(CuResult::INVALID_HANDLE)?;
            let raw = s.raw;
            self.enter(s.ctx)?;
            raw
        };
        // SAFETY: live stream (or the null stream) of the current context.
        match check(unsafe { sys::cuStreamQuery(raw) }) {
            Ok(()) => Ok(true),
            Err(e) if e == CuResult::NOT_READY => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn event_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle> {
        self.enter(ctx)?;
        let mut e = ptr::null_mut();
        // SAFETY: out-pointer to a local; a context is current. Only the blocking-sync and
        // disable-timing flags are passed on.
        check(unsafe { sys::cuEventCreate(&mut e, flags & 0x3) })?;
        Ok(self.events.insert(Event { ctx, raw: e }))
    }

    fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()> {
        let e = self.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        let raw = e.raw;
        let s = self.stream_in(e.ctx, stream)?;
        // SAFETY: live event and stream of the current context.
        check(unsafe { sys::cuEventRecord(raw, s) })
    }

    fn event_synchronize(&mut self, event: Handle) -> ExecResult<()> {
        let e = self.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        let raw = e.raw;
        self.enter(e.ctx)?;
        // SAFETY: live event of the current context.
        check(unsafe { sys::cuEventSynchronize(raw) })
    }

    fn event_query(&mut self, event: Handle) -> ExecResult<bool> {
        let e = self.events.get(event).ok_or(CuResult::INVALID_HANDLE)?;
        let raw = e.raw;
        self.enter(e.ctx)?;
        // SAFETY: live event of the current context.
        match check(unsafe { sys::cuEventQuery(raw) }) {
            Ok(()) => Ok(true),
            Err(e) if e == CuResult::NOT_READY => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32> {
        let s = self.events.get(start).ok_or(CuResult::INVALID_HANDLE)?;
        let e = self.events.get(end).ok_or(CuResult::INVALID_HANDLE)?;
        if s.ctx != e.ctx {
            return Err(CuResult::INVALID_HANDLE);
        }
        let (rs, re) = (s.raw, e.raw);
        self.enter(s.ctx)?;
        let mut ms = 0f32;
        // SAFETY: live events of the current context, out-pointer to a local.
        check(unsafe { sys::cuEventElapsedTime(&mut ms, rs, re) })?;
        Ok(ms)
    }

    fn event_destroy(&mut self, event: Handle) -> ExecResult<()> {
        let ctx = self.events.get(event).ok_or(CuResult::INVALID_HANDLE)?.ctx;
        self.enter(ctx)?;
        let e = self.events.remove(event).ok_or(CuResult::INVALID_HANDLE)?;
        // SAFETY: the event was created by this engine and is destroyed once.
        check(unsafe { sys::cuEventDestroy_v2(e.raw) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_driver_is_an_error_not_a_panic() {
        // On machines with a GPU this opens it; on the others it must fail cleanly.
        match CudaExecutor::open(0) {
            Ok(e) => assert_eq!(e.device_info().executor, "cuda"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        assert!(CudaExecutor::open(10_000).is_err());
    }
}
