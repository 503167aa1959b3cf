//! A blocking facade over an [`Engine`]: every call waits for its completion. For tests (the
//! executor conformance suite) and tools that drive an engine without a session.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Copy3D, DevPtr, FunctionInfo, Handle};

use super::{
    Completion, Console, Engine, ExecResult, Executor, HostBuf, HtodTarget, LaunchDims, Mode,
    Output, SessionSetup, Sink,
};

/// How long a blocking call waits before it reports `LAUNCH_TIMEOUT` (a hung engine must fail
/// a test, not hang it).
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Results {
    done: HashMap<u64, ExecResult<Output>>,
    deferred: Vec<CuResult>,
}

/// Collects completions by id.
#[derive(Default)]
pub struct Collector {
    results: Mutex<Results>,
    cv: Condvar,
}

impl Sink for Collector {
    fn complete(&self, id: u64, _mode: Mode, result: ExecResult<Output>) {
        let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.done.insert(id, result);
        self.cv.notify_all();
    }

    fn deferred(&self, error: CuResult) {
        let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        r.deferred.push(error);
    }
}

impl Collector {
    fn wait(&self, id: u64) -> ExecResult<Output> {
        let deadline = std::time::Instant::now() + WAIT_LIMIT;
        let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(x) = r.done.remove(&id) {
                return x;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(CuResult::LAUNCH_TIMEOUT);
            }
            r = self
                .cv
                .wait_timeout(r, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// An engine whose every call blocks until done.
pub struct Blocking {
    pub engine: Box<dyn Engine>,
    pub console: Arc<Console>,
    sink: Arc<Collector>,
    next: u64,
}

fn done(r: ExecResult<Output>) -> ExecResult<()> {
    r.map(|_| ())
}

impl Blocking {
    /// Opens an engine on `exec` with `quota` bytes and no time limit.
    pub fn open(exec: &dyn Executor, quota: u64) -> ExecResult<Blocking> {
        Self::open_with(exec, quota, None)
    }

    pub fn open_with(
        exec: &dyn Executor,
        quota: u64,
        kernel_time_limit: Option<Duration>,
    ) -> ExecResult<Blocking> {
        let sink = Arc::new(Collector::default());
        let console = Arc::new(Console::new());
        let engine = exec.open(SessionSetup {
            quota,
            kernel_time_limit,
            tenant_memory: None,
            sink: sink.clone(),
            console: console.clone(),
        })?;
        Ok(Blocking {
            engine,
            console,
            sink,
            next: 1,
        })
    }

    /// Failures reported through [`Sink::deferred`] so far (taken).
    pub fn take_deferred(&mut self) -> Vec<CuResult> {
        let mut r = self.sink.results.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut r.deferred)
    }

    fn call(&mut self, f: impl FnOnce(&mut dyn Engine, Completion)) -> ExecResult<Output> {
        let id = self.next;
        self.next += 1;
        let c = Completion::new(self.sink.clone(), id, Mode::Reply);
        f(self.engine.as_mut(), c);
        self.engine.flush();
        self.sink.wait(id)
    }

    pub fn ctx_create(&mut self, flags: u32) -> ExecResult<Handle> {
        self.engine.ctx_create(flags)
    }
    pub fn ctx_destroy(&mut self, ctx: Handle) -> ExecResult<()> {
        done(self.call(|e, c| e.ctx_destroy(ctx, c)))
    }
    pub fn ctx_synchronize(&mut self, ctx: Handle) -> ExecResult<()> {
        done(self.call(|e, c| e.ctx_synchronize(ctx, c)))
    }
    pub fn mem_alloc(&mut self, ctx: Handle, size: u64) -> ExecResult<DevPtr> {
        match self.call(|e, c| e.mem_alloc(ctx, size, c))? {
            Output::DevPtr(p) => Ok(p),
            _ => Err(CuResult::UNKNOWN),
        }
    }
    pub fn mem_free(&mut self, ptr: DevPtr) -> ExecResult<()> {
        done(self.call(|e, c| e.mem_free(ptr, c)))
    }
    pub fn mem_info(&self) -> (u64, u64) {
        self.engine.mem_info()
    }
    pub fn memcpy_htod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: &[u8],
        stream: Handle,
    ) -> ExecResult<()> {
        match self
            .engine
            .htod_target(ctx, dst, src.len() as u64, stream)?
        {
            HtodTarget::Direct(mut b) => {
                b.as_mut_slice().copy_from_slice(src);
                Ok(())
            }
            HtodTarget::Staged(mut b) => {
                b.as_mut_slice().copy_from_slice(src);
                done(self.call(|e, c| e.memcpy_htod(ctx, dst, b, stream, c)))
            }
        }
    }
    pub fn memcpy_dtoh(
        &mut self,
        ctx: Handle,
        dst: &mut [u8],
        src: DevPtr,
        stream: Handle,
    ) -> ExecResult<()> {
        let len = dst.len() as u64;
        match self.call(|e, c| e.memcpy_dtoh(ctx, src, len, stream, c))? {
            Output::Data(b) if b.len() == dst.len() => {
                dst.copy_from_slice(b.as_slice());
                Ok(())
            }
            _ => Err(CuResult::UNKNOWN),
        }
    }
    pub fn memcpy_dtod(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        src: DevPtr,
        len: u64,
        stream: Handle,
    ) -> ExecResult<()> {
        done(self.call(|e, c| e.memcpy_dtod(ctx, dst, src, len, stream, c)))
    }
    pub fn memset(
        &mut self,
        ctx: Handle,
        dst: DevPtr,
        value: u32,
        elem_size: u8,
        count: u64,
        stream: Handle,
    ) -> ExecResult<()> {
        done(self.call(|e, c| e.memset(ctx, dst, value, elem_size, count, stream, c)))
    }
    /// A 3D copy; `host` is the packed host side (source of a host-to-device copy). Returns the
    /// packed host bytes of a device-to-host copy.
    pub fn memcpy_3d(
        &mut self,
        ctx: Handle,
        copy: Copy3D,
        host: Option<&[u8]>,
        stream: Handle,
    ) -> ExecResult<Vec<u8>> {
        let buf = match host {
            Some(h) => {
                let mut b = self.engine.staging(h.len())?;
                b.as_mut_slice().copy_from_slice(h);
                Some(b)
            }
            None => None,
        };
        match self.call(|e, c| e.memcpy_3d(ctx, copy, buf, stream, c))? {
            Output::Data(b) => Ok(b.into_vec()),
            _ => Ok(Vec::new()),
        }
    }
    pub fn module_load(&mut self, ctx: Handle, image: &[u8]) -> ExecResult<Handle> {
        self.module_link(ctx, vec![image.to_vec()])
    }
    pub fn module_link(&mut self, ctx: Handle, images: Vec<Vec<u8>>) -> ExecResult<Handle> {
        match self.call(|e, c| e.module_load(ctx, images, c))? {
            Output::Handle(h) => Ok(h),
            _ => Err(CuResult::UNKNOWN),
        }
    }
    pub fn module_unload(&mut self, module: Handle) -> ExecResult<()> {
        done(self.call(|e, c| e.module_unload(module, c)))
    }
    pub fn module_get_function(&mut self, module: Handle, name: &str) -> ExecResult<FunctionInfo> {
        self.engine.module_get_function(module, name)
    }
    pub fn module_get_global(&mut self, module: Handle, name: &str) -> ExecResult<(DevPtr, u64)> {
        self.engine.module_get_global(module, name)
    }
    pub fn func_set_attribute(&mut self, func: Handle, attr: u32, value: i32) -> ExecResult<()> {
        self.engine.func_set_attribute(func, attr, value)
    }
    /// Queues a launch (does not wait for it).
    pub fn launch(
        &mut self,
        func: Handle,
        dims: LaunchDims,
        params: &[u8],
        stream: Handle,
        flags: u32,
    ) -> ExecResult<()> {
        let r = self.engine.launch(func, dims, params, stream, flags);
        self.engine.flush();
        r
    }
    pub fn stream_create(&mut self, ctx: Handle, flags: u32, priority: i32) -> ExecResult<Handle> {
        self.engine.stream_create(ctx, flags, priority)
    }
    pub fn stream_destroy(&mut self, stream: Handle) -> ExecResult<()> {
        self.engine.stream_destroy(stream)
    }
    pub fn stream_synchronize(&mut self, stream: Handle) -> ExecResult<()> {
        done(self.call(|e, c| e.stream_synchronize(stream, c)))
    }
    pub fn stream_query(&mut self, stream: Handle) -> ExecResult<bool> {
        self.engine.stream_query(stream)
    }
    pub fn stream_wait_event(&mut self, stream: Handle, event: Handle) -> ExecResult<()> {
        self.engine.stream_wait_event(stream, event)
    }
    pub fn event_create(&mut self, ctx: Handle, flags: u32) -> ExecResult<Handle> {
        self.engine.event_create(ctx, flags)
    }
    pub fn event_record(&mut self, event: Handle, stream: Handle) -> ExecResult<()> {
        let r = self.engine.event_record(event, stream);
        self.engine.flush();
        r
    }
    pub fn event_synchronize(&mut self, event: Handle) -> ExecResult<()> {
        done(self.call(|e, c| e.event_synchronize(event, c)))
    }
    pub fn event_query(&mut self, event: Handle) -> ExecResult<bool> {
        self.engine.event_query(event)
    }
    pub fn event_elapsed_ms(&mut self, start: Handle, end: Handle) -> ExecResult<f32> {
        self.engine.event_elapsed_ms(start, end)
    }
    pub fn event_destroy(&mut self, event: Handle) -> ExecResult<()> {
        self.engine.event_destroy(event)
    }
    pub fn mem_free_async(&mut self, ptr: DevPtr, stream: Handle) -> ExecResult<()> {
        let r = self.engine.mem_free_async(ptr, stream);
        self.engine.flush();
        r
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        self.engine.shutdown(Duration::from_secs(5));
    }
}

/// Wraps an owned vector as a host buffer (for callers that build data themselves).
pub fn host(v: Vec<u8>) -> HostBuf {
    HostBuf::from_vec(v)
}
