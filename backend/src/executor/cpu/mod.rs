//! The CPU executor: device memory in host memory ([`memory`]), kernels run by the PTX
//! interpreter (`netgpu-ptx`, through [`kernels`]).
//!
//! Work executes when the session's thread reaches it, in request order, so every stream
//! is always complete by the time a later request is read: stream and event queries answer
//! "done", synchronisation is immediate, and events take their timestamp when reached.

mod kernels;
pub mod memory;

use std::sync::Arc;
use std::time::Instant;

use netgpu_proto::cuda::{attr, CuResult};
use netgpu_proto::wire::ops::{DevPtr, DeviceInfo, Handle, ParamInfo};

use super::{check_launch_dims, memset_len, Engine, ExecResult, Executor, HandleTable, LaunchDims};
use kernels::CpuModule;
use memory::{DeviceHeap, MemoryPool};

/// Static shared memory plus dynamic shared memory a block may use.
pub const MAX_SHARED_PER_BLOCK: u32 = 48 * 1024;
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;

pub struct CpuExecutor {
    info: DeviceInfo,
    pool: Arc<MemoryPool>,
    threads: usize,
}

impl CpuExecutor {
    pub fn new(name: &str, total_memory: u64, threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let attributes = vec![
            (attr::MAX_THREADS_PER_BLOCK, MAX_THREADS_PER_BLOCK as i32),
            (attr::MAX_BLOCK_DIM_X, 1024),
            (attr::MAX_BLOCK_DIM_Y, 1024),
            (attr::MAX_BLOCK_DIM_Z, 64),
            (attr::MAX_GRID_DIM_X, i32::MAX),
            (attr::MAX_GRID_DIM_Y, 65_535),
            (attr::MAX_GRID_DIM_Z, 65_535),
            (
                attr::MAX_SHARED_MEMORY_PER_BLOCK,
                MAX_SHARED_PER_BLOCK as i32,
            ),
            (attr::TOTAL_CONSTANT_MEMORY, 65_536),
            (attr::WARP_SIZE, 32),
            (attr::MAX_PITCH, i32::MAX),
            (attr::MAX_REGISTERS_PER_BLOCK, 65_536),
            (attr::CLOCK_RATE, 1_000_000),
            (attr::TEXTURE_ALIGNMENT, 512),
            (attr::MULTIPROCESSOR_COUNT, threads as i32),
            (attr::INTEGRATED, 0),
            (attr::CAN_MAP_HOST_MEMORY, 0),
            (attr::CONCURRENT_KERNELS, 0),
            (attr::MAX_THREADS_PER_MULTIPROCESSOR, 2048),
            (attr::ASYNC_ENGINE_COUNT, 0),
            (attr::UNIFIED_ADDRESSING, 0),
            (attr::COMPUTE_CAPABILITY_MAJOR, 8),
            (attr::COMPUTE_CAPABILITY_MINOR, 0),
            (
                attr::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
                MAX_SHARED_PER_BLOCK as i32,
            ),
            (attr::MAX_REGISTERS_PER_MULTIPROCESSOR, 65_536),
            (
                attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                MAX_SHARED_PER_BLOCK as i32,
            ),
        ];
        let mut uuid = [0u8; 16];
        uuid[..4].copy_from_slice(b"NGPU");
        CpuExecutor {
            info: DeviceInfo {
                name: name.to_string(),
                total_mem: total_memory,
                cc_major: 8,
                cc_minor: 0,
                multiprocessors: threads as u32,
                uuid,
                driver_version: 0,
                executor: "cpu".to_string(),
                attributes,
            },
            pool: MemoryPool::new(total_memory),
            threads,
        }
    }

    /// Device memory held by all sessions together.
    pub fn memory_used(&self) -> u64 {
        self.pool.used()
    }
}

impl Executor for CpuExecutor {
    fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    fn open(&self, quota: u64) -> ExecResult<Box<dyn Engine>> {
        Ok(Box::new(CpuEngine {
            heap: DeviceHeap::new(self.pool.clone(), quota.min(self.pool.total())),
            ctxs: HandleTable::new(),
            modules: HandleTable::new(),
            functions: HandleTable::new(),
            streams: HandleTable::new(),
            events: HandleTable::new(),
            threads: self.threads,
        }))
    }
}

struct Ctx {
    /// A launch fault (illegal address, ...) poisons the context as it does in CUDA.
    poisoned: Option<CuResult>,
}

struct Module {
    ctx: Handle,
    module: CpuModule,
}

struct Function {
    ctx: Handle,
    module: Handle,
    kernel: String,
    params: Vec<ParamInfo>,
}

struct Stream {
    ctx: Handle,
}

struct Event {
    ctx: Handle,
    recorded: Option<Instant>,
}

pub struct CpuEngine {
    heap: DeviceHeap,
    ctxs: HandleTable<Ctx>,
    modules: HandleTable<Module>,
    functions: HandleTable<Function>,
    streams: HandleTable<Stream>,
    events: HandleTable<Event>,
    threads: usize,
}

impl CpuEngine {
    fn ctx(&self, ctx: Handle) -> ExecResult<()> {
        match self.ctxs.get(ctx) {
            None => Err(CuResult::INVALID_CONTEXT),
            Some(Ctx { poisoned: Some(e) }) => Err(*e),
            Some(_) => Ok(()),
        }
    }

    /// Checks that `stream` is 0 (the null stream) or a stream of `ctx`.
    fn stream_in(&self, ctx: Handle, stream: Handle) -> ExecResult<()> {
        self.ctx(ctx)?;
        if stream == 0 {
            return Ok(());
        }
        match self.streams.get(stream) {
            Some(s) if s.ctx == ctx => Ok(()),
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    /// The context of a stream handle (0 is refused: it does not name a context).
    fn stream_ctx(&self, stream: Handle) -> ExecResult<Handle> {
        let ctx = self
            .streams
            .get(stream)
            .ok_or(CuResult::INVALID_HANDLE)?
            .ctx;
        self.ctx(ctx)?;
        Ok(ctx)
    }

    /// Checks that a device range lies in memory of `ctx`.
    fn range_in(&self, ctx: Handle, ptr: DevPtr, len: u64) -> ExecResult<()> {
        match self.heap.resolve(ptr, len) {
            Some((_, owner)) if owner == ctx => Ok(()),
            _ => Err(CuResult::INVALID_VALUE),
        }
    }

    fn poison(&mut self, ctx: Handle, e: CuResult) {
        if e.is_sticky() {
            if let Some(c) = self.ctxs.get_mut(ctx) {
                c.poisoned = Some(e);
            }
        }
    }
}

impl Engine for CpuEngine {
    fn ctx_create(&mut self, _flags: u32) -> ExecResult<Handle> {
        Ok(self.ctxs.insert(Ctx { poisoned: None }))
    }

    fn ctx_destroy(&mut self, ctx: Handle) -> ExecResult<()> {
        self.ctxs.remove(ctx).ok_or(CuResult::INVALID_CONTEXT)?;
        for (_, m) in self.modules.drain_where(|m| m.ctx == ctx) {
            m.module.free_globals(&mut self.heap);
        }
        self.functions.drain_where(|f| f.ctx == ctx);
        self.streams.drain_where(|s| s.ctx == ctx);
        self.events.drain_where(|e| e.ctx == ctx);
        self.heap.free_ctx(ctx);
        Ok(())
    }

    fn ctx_synchronize(&mut self, ctx: Handle) -> ExecResult<()> {
        self.ctx(ctx)
    }

    fn mem_alloc(&mut self, ctx: Handle, size: u64) -> ExecResult<DevPtr> {
        self.ctx(ctx)?;
        self.heap.alloc(ctx, size)
    }

    fn mem_free(&mut self, ptr: DevPtr) -> ExecResult<()> {
        if ptr == 0 {
            return Ok(());
        }
        self.heap.free(ptr)
    }

    fn mem_info(&self) -> (u64, u64) {
        (self.heap.quota() - self.heap.used(), self.heap.quota())
    }

    fn host_view_mut(&mut self, ctx: Handle, ptr: DevPtr, len: u64) -> Option<&mut [u8]> {
        self.range_in(ctx, ptr, len).ok()?;
        self.heap.slice_mut(ptr, len)
    }

    fn host_view(&mut self, ctx: Handle, ptr: DevPtr, len: u64) -> Option<&[u8]> {
        self.range_in(ctx, ptr, len).ok()?;
        self.heap.slice(ptr, len)
    }

    fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: &[u8],
        stream: Handle,
    ) -> ExecResult<()> {
        self.stream_in(ctx, stream)?;
        if src.is_empty() {
            return Ok(());
        }
        self.range_in(ctx, dst, src.len() as u64)?;
        let d = self
            .heap
            .slice_mut(dst, src.len() as u64)
            .ok_or(CuResult::INVALID_VALUE)?;
        d.copy_from_slice(src);
        Ok(())
    }

    fn memcpy_dtoh(
        &mut self,
        ctx: Handle,
        dst: &mut [u8],
        src: DevPtr,
        stream: Handle,
    ) -> ExecResult<()> {
        self.stream_in(ctx, stream)?;
        if dst.is_empty() {
            return Ok(());
        }
        self.range_in(ctx, src, dst.len() as u64)?;
        let s = self
            .heap
            .slice(src, dst.len() as u64)
            .ok_or(CuResult::INVALID_VALUE)?;
        dst.copy_from_slice(s);
        Ok(())
    }

    fn memcpy_dtod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<()> {
        self.stream_in(ctx, stream)?;
        if len == 0 {
            return Ok(());
        }
        self.range_in(ctx, src, len)?;
        self.range_in(ctx, dst, len)?;
        self.heap
            .copy_within(dst, src, len)
            .ok_or(CuResult::INVALID_VALUE)
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
        self.stream_in(ctx, stream)?;
        let len = memset_len(dst, elem_size, count)?;
        if len == 0 {
            return Ok(());
        }
        self.range_in(ctx, dst, len)?;
        let d = self
            .heap
            .slice_mut(dst, len)
            .ok_or(CuResult::INVALID_VALUE)?;
        match elem_size {
            1 => d.fill(value as u8),
            2 => {
                let v = (value as u16).to_le_bytes();
                d.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&v));
            }
            _ => {
                let v = value.to_le_bytes();
                d.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&v));
            }
        }
        Ok(())
    }

    fn module_load(&mut self, ctx: Handle, image: &[u8]) -> ExecResult<Handle> {
        self.ctx(ctx)?;
        let module = CpuModule::load(image, ctx, &mut self.heap)?;
        Ok(self.modules.insert(Module { ctx, module }))
    }

    fn module_unload(&mut self, module: Handle) -> ExecResult<()> {
        let m = self
            .modules
            .remove(module)
            .ok_or(CuResult::INVALID_HANDLE)?;
        m.module.free_globals(&mut self.heap);
        self.functions.drain_where(|f| f.module == module);
        Ok(())
    }

    fn module_get_function(
        &mut self,
        module: Handle,
        name: &str,
    ) -> ExecResult<(Handle, Vec<ParamInfo>)> {
        let m = self.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        let params = m.module.kernel_params(name).ok_or(CuResult::NOT_FOUND)?;
        let ctx = m.ctx;
        let h = self.functions.insert(Function {
            ctx,
            module,
            kernel: name.to_string(),
            params: params.clone(),
        });
        Ok((h, params))
    }

    fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)> {
        let m = self.modules.get(module).ok_or(CuResult::INVALID_HANDLE)?;
        m.module.global(name).ok_or(CuResult::NOT_FOUND)
    }

    fn launch(
        &mut self,
        func: Handle,
        dims: LaunchDims,
        params: &[u8],
        stream: Handle,
    ) -> ExecResult<()> {
        let f = self.functions.get(func).ok_or(CuResult::INVALID_HANDLE)?;
        let ctx = f.ctx;
        self.stream_in(ctx, stream)?;
        check_launch_dims(&dims, MAX_THREADS_PER_BLOCK, MAX_SHARED_PER_BLOCK)?;
        let need = f
            .params
            .iter()
            .map(|p| p.offset + p.size)
            .max()
            .unwrap_or(0);
        if (params.len() as u64) < u64::from(need) {
            return Err(CuResult::INVALID_VALUE);
        }
        let m = self.modules.get(f.module).ok_or(CuResult::INVALID_HANDLE)?;
        let result = m
            .module
            .launch(&f.kernel, dims, params, &self.heap, self.threads);
        if let Err(e) = result {
            self.poison(ctx, e);
        }
        result
    }

    fn stream_create(&mut self, ctx: Handle, _flags: u32) -> ExecResult<Handle> {
        self.ctx(ctx)?;
        Ok(self.streams.insert(Stream { ctx }))
    }

    fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()> {
        self.streams
            .remove(stream)
            .map(|_| ())
            .ok_or(CuResult::INVALID_HANDLE)
    }

    fn stream_synchronize(&mut self, stream: Handle) -> ExecResult<()> {
        if stream == 0 {
            return Ok(());
        }
        self.stream_ctx(stream).map(|_| ())
    }

    fn stream_query(&mut self, stream: Handle) -> ExecResult<bool> {
        self.stream_synchronize(stream).map(|_| true)
    }

    fn event_create(&mut self, ctx: Handle, _flags: u32) -> ExecResult<Handle> {
        self.ctx(ctx)?;
        Ok(self.events.insert(Event {
            ctx,
            recorded: None,
        }))
    }

    fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()> {
        let ctx = self.events.get(event).ok_or(CuResult::INVALID_HANDLE)?.ctx;
        self.stream_in(ctx, stream)?;
        if let Some(e) = self.events.get_mut(event) {
            e.recorded = Some(Instant::now());
        }
        Ok(())
    }

    fn event_synchronize(&mut self, event: Handle) -> ExecResult<()> {
        let ctx = self.events.get(event).ok_or(CuResult::INVALID_HANDLE)?.ctx;
        self.ctx(ctx)
    }

    fn event_query(&mut self, event: Handle) -> ExecResult<bool> {
        self.event_synchronize(event).map(|_| true)
    }

    fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32> {
        let s = self.events.get(start).ok_or(CuResult::INVALID_HANDLE)?;
        let e = self.events.get(end).ok_or(CuResult::INVALID_HANDLE)?;
        if s.ctx != e.ctx {
            return Err(CuResult::INVALID_HANDLE);
        }
        match (s.recorded, e.recorded) {
            (Some(a), Some(b)) => {
                let ms = if b >= a {
                    (b - a).as_secs_f64() * 1e3
                } else {
                    -((a - b).as_secs_f64() * 1e3)
                };
                Ok(ms as f32)
            }
            // CUDA: an event that was never recorded cannot be timed.
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    fn event_destroy(&mut self, event: Handle) -> ExecResult<()> {
        self.events
            .remove(event)
            .map(|_| ())
            .ok_or(CuResult::INVALID_HANDLE)
    }
}
