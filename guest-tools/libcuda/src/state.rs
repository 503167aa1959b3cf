//! Process-wide driver state.
//!
//! Contexts, modules, functions, streams and events are the backend's handles, handed to the
//! program as opaque pointer values (a handle is never 0). The library keeps only what it
//! needs locally: kernel parameter layouts (to pack `kernelParams`), the primary context's
//! reference count, and each thread's current-context stack.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, OnceLock};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DeviceInfo, FunctionInfo, Handle, Reply, Request};

use crate::transport::{self, Transport};

pub struct Driver {
    pub transport: Box<dyn Transport>,
    pub info: DeviceInfo,
    functions: Mutex<HashMap<Handle, FunctionInfo>>,
    primary: Mutex<Primary>,
    contexts: Mutex<HashSet<Handle>>,
    unsupported: Mutex<HashSet<&'static str>>,
}

#[derive(Default)]
struct Primary {
    ctx: Handle,
    refs: u32,
    flags: u32,
}

static DRIVER: OnceLock<Result<Driver, CuResult>> = OnceLock::new();

thread_local! {
    static CTX_STACK: RefCell<Vec<Handle>> = const { RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cuInit`: opens the transport and reads the device record, once per process.
pub fn init() -> Result<&'static Driver, CuResult> {
    DRIVER
        .get_or_init(|| {
            let transport = transport::from_env()?;
            let info = transport.device_query()?;
            Ok(Driver {
                transport,
                info,
                functions: Mutex::new(HashMap::new()),
                primary: Mutex::new(Primary::default()),
                contexts: Mutex::new(HashSet::new()),
                unsupported: Mutex::new(HashSet::new()),
            })
        })
        .as_ref()
        .map_err(|e| *e)
}

/// The driver, if `cuInit` succeeded.
pub fn driver() -> Result<&'static Driver, CuResult> {
    match DRIVER.get() {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(*e),
        None => Err(CuResult::NOT_INITIALIZED),
    }
}

/// The calling thread's current context.
pub fn current() -> Result<Handle, CuResult> {
    driver()?;
    CTX_STACK
        .with(|s| s.borrow().last().copied())
        .ok_or(CuResult::INVALID_CONTEXT)
}

pub fn push(ctx: Handle) {
    CTX_STACK.with(|s| s.borrow_mut().push(ctx));
}

pub fn pop() -> Option<Handle> {
    CTX_STACK.with(|s| s.borrow_mut().pop())
}

/// `cuCtxSetCurrent`: replaces the top of the stack (0 empties it).
pub fn set_current(ctx: Handle) {
    CTX_STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if ctx != 0 {
            s.push(ctx);
        }
    });
}

impl Driver {
    pub fn call(&self, req: &Request) -> Result<Reply, CuResult> {
        self.transport.call(req, &[], &mut [])
    }

    pub fn handle(&self, req: &Request) -> Result<Handle, CuResult> {
        match self.call(req)? {
            Reply::Handle(h) => Ok(h),
            _ => Err(CuResult::UNKNOWN),
        }
    }

    pub fn ctx_create(&self, flags: u32) -> Result<Handle, CuResult> {
        let h = self.handle(&Request::CtxCreate { flags })?;
        lock(&self.contexts).insert(h);
        Ok(h)
    }

    pub fn ctx_destroy(&self, ctx: Handle) -> Result<(), CuResult> {
        if !lock(&self.contexts).remove(&ctx) {
            return Err(CuResult::INVALID_CONTEXT);
        }
        self.transport.flush()?;
        self.call(&Request::CtxDestroy { ctx })?;
        CTX_STACK.with(|s| s.borrow_mut().retain(|c| *c != ctx));
        Ok(())
    }

    pub fn is_context(&self, ctx: Handle) -> bool {
        lock(&self.contexts).contains(&ctx)
    }

    /// `cuDevicePrimaryCtxRetain`.
    pub fn primary_retain(&self) -> Result<Handle, CuResult> {
        let mut p = lock(&self.primary);
        if p.refs == 0 || p.ctx == 0 {
            p.ctx = self.ctx_create(p.flags)?;
        }
        p.refs += 1;
        Ok(p.ctx)
    }

    /// `cuDevicePrimaryCtxRelease`: the context is destroyed with its last reference.
    pub fn primary_release(&self) -> Result<(), CuResult> {
        let mut p = lock(&self.primary);
        if p.refs == 0 {
            return Err(CuResult::INVALID_CONTEXT);
        }
        p.refs -= 1;
        if p.refs == 0 {
            let ctx = std::mem::take(&mut p.ctx);
            self.ctx_destroy(ctx)?;
        }
        Ok(())
    }

    pub fn primary_reset(&self) -> Result<(), CuResult> {
        let mut p = lock(&self.primary);
        if p.ctx != 0 {
            let ctx = std::mem::take(&mut p.ctx);
            self.ctx_destroy(ctx)?;
        }
        p.refs = 0;
        Ok(())
    }

    /// `(flags, active)` of the primary context.
    pub fn primary_state(&self) -> (u32, bool) {
        let p = lock(&self.primary);
        (p.flags, p.refs > 0)
    }

    pub fn primary_set_flags(&self, flags: u32) {
        lock(&self.primary).flags = flags;
    }

    pub fn remember_function(&self, f: FunctionInfo) {
        lock(&self.functions).insert(f.handle, f);
    }

    pub fn function(&self, h: Handle) -> Option<FunctionInfo> {
        lock(&self.functions).get(&h).cloned()
    }

    /// Logs the first use of a call this library does not implement.
    pub fn unsupported(&self, name: &'static str) -> CuResult {
        if lock(&self.unsupported).insert(name) {
            crate::log(&format!(
                "{name} is not supported; returning CUDA_ERROR_NOT_SUPPORTED"
            ));
        }
        CuResult::NOT_SUPPORTED
    }
}
