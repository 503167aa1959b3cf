//! Process-wide driver state.
//!
//! The program sees this library's own handles for contexts, functions, kernels and libraries
//! (opaque pointer values from one counter, never 0 and never dereferenced), so they stay
//! valid and stable whatever the backend does: the primary context keeps one `CUcontext`
//! across release and reset, as in CUDA, and a `CUkernel` is usable as a `CUfunction`. Modules,
//! streams and events are the backend's handles. Each thread has its own current-context stack.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use netgpu_proto::cuda::{attr, func_attr, CuResult};
use netgpu_proto::wire::ops::{DeviceInfo, FunctionInfo, Handle, Reply, Request};

use crate::image::Image;
use crate::transport::{self, Transport};

/// A context-local-storage destructor: `dtor(ctx, key, value)`.
pub type ClsDtor = extern "C" fn(*mut c_void, *mut c_void, *mut c_void);

struct ClsEntry {
    key: usize,
    value: usize,
    dtor: Option<ClsDtor>,
}

struct CtxInner {
    /// The backend's context, 0 while it has none (an inactive primary context).
    backend: Handle,
    /// Primary context: `cuDevicePrimaryCtxRetain` references.
    refs: u32,
    flags: u32,
    destroyed: bool,
    cls: Vec<ClsEntry>,
}

pub struct Context {
    /// The `CUcontext` value.
    pub id: u64,
    pub primary: bool,
    inner: Mutex<CtxInner>,
}

/// A kernel function loaded in one backend context.
pub struct Function {
    pub id: u64,
    pub ctx: Handle,
    pub module: Handle,
    pub name: CString,
    pub info: FunctionInfo,
    /// Values set with `cuFuncSetAttribute`.
    pub set_attributes: Mutex<Vec<(u32, i32)>>,
    /// What a launch checks, worked out at the first launch and again after a
    /// `cuFuncSetAttribute` (`api::module::check_config`).
    pub launch_limits: Mutex<Option<FuncLimits>>,
}

/// A function's launch limits: threads per block, static and largest dynamic shared memory.
#[derive(Clone, Copy, Debug)]
pub struct FuncLimits {
    pub max_threads: u64,
    pub static_smem: u64,
    pub max_dynamic_smem: u64,
}

/// The device's launch limits (0: none reported), read once from the device record.
#[derive(Clone, Copy, Debug, Default)]
pub struct DevLimits {
    pub block: [u64; 3],
    pub grid: [u64; 3],
    /// Shared memory one block may use (opt-in maximum).
    pub smem_per_block: u64,
}

impl Function {
    pub fn backend(&self) -> Handle {
        self.info.handle
    }
}

/// A `CUlibrary`: an image, loaded into each context on first use.
pub struct Library {
    pub id: u64,
    pub image: Image,
    /// Backend context -> module.
    modules: Mutex<HashMap<Handle, Handle>>,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
}

/// A `CUkernel`: a library's kernel, a function in each context that uses it.
pub struct Kernel {
    pub id: u64,
    pub library: Arc<Library>,
    pub name: CString,
    /// Its function in each backend context that used it (a launch resolves a `CUkernel`
    /// without hashing its name).
    functions: Mutex<Vec<(Handle, Arc<Function>)>>,
}

#[derive(Clone)]
pub enum Object {
    Context(Arc<Context>),
    Function(Arc<Function>),
    Library(Arc<Library>),
    Kernel(Arc<Kernel>),
}

pub struct Driver {
    pub transport: Box<dyn Transport>,
    pub info: DeviceInfo,
    pub limits: DevLimits,
    pub primary: Arc<Context>,
    objects: Mutex<HashMap<u64, Object, IdHash>>,
    /// (module, name) -> function, so a name looked up twice is one `CUfunction`.
    module_functions: Mutex<HashMap<(Handle, String), Arc<Function>>>,
    /// Module -> the architecture its code was compiled for (`image::code_arch`), for a
    /// backend that reports no `PTX_VERSION` of its functions.
    module_arch: Mutex<HashMap<Handle, u32>>,
}

static DRIVER: OnceLock<Result<Driver, CuResult>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(0x1000);

thread_local! {
    static CTX_STACK: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
}

/// Hashes the library's own object ids (multiples of 16 it hands out; a launch looks one up):
/// a multiply-shift instead of SipHash, whose flooding resistance guards nothing here (a
/// program can only slow down its own lookups).
#[derive(Clone, Copy, Default)]
pub struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The table indexes by the low bits: fold the well-mixed high ones in.
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn next_id() -> u64 {
    NEXT_ID.fetch_add(16, Ordering::Relaxed)
}

/// `cuInit`: opens the transport and reads the device record, once per process.
pub fn init() -> Result<&'static Driver, CuResult> {
    DRIVER
        .get_or_init(|| {
            let transport = transport::from_env()?;
            let info = transport.device_query()?;
            let limits = DevLimits::of(&info);
            let primary = Arc::new(Context::new(true, 0, 0));
            let mut objects = HashMap::with_hasher(IdHash);
            objects.insert(primary.id, Object::Context(primary.clone()));
            Ok(Driver {
                transport,
                info,
                limits,
                primary,
                objects: Mutex::new(objects),
                module_functions: Mutex::new(HashMap::new()),
                module_arch: Mutex::new(HashMap::new()),
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
pub fn current_context() -> Result<Arc<Context>, CuResult> {
    driver()?;
    CTX_STACK
        .with(|s| s.borrow().last().cloned())
        .ok_or(CuResult::INVALID_CONTEXT)
}

/// The backend context of the calling thread's current context.
pub fn current() -> Result<Handle, CuResult> {
    let drv = driver()?;
    current_context()?.backend(drv)
}

pub fn push(ctx: Arc<Context>) {
    CTX_STACK.with(|s| s.borrow_mut().push(ctx));
}

pub fn pop() -> Option<Arc<Context>> {
    CTX_STACK.with(|s| s.borrow_mut().pop())
}

/// `cuCtxSetCurrent`: replaces the top of the stack (`None` empties it).
pub fn set_current(ctx: Option<Arc<Context>>) {
    CTX_STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if let Some(c) = ctx {
            s.push(c);
        }
    });
}

impl Context {
    fn new(primary: bool, backend: Handle, flags: u32) -> Context {
        Context {
            id: next_id(),
            primary,
            inner: Mutex::new(CtxInner {
                backend,
                refs: 0,
                flags,
                destroyed: false,
                cls: Vec::new(),
            }),
        }
    }

    /// The backend context, created on first use (a primary context that is current
    /// without being retained gets one too, as cudart expects of the runtime's context).
    pub fn backend(&self, drv: &Driver) -> Result<Handle, CuResult> {
        let mut i = lock(&self.inner);
        if i.backend != 0 {
            return Ok(i.backend);
        }
        if i.destroyed {
            return Err(CuResult::CONTEXT_IS_DESTROYED);
        }
        i.backend = drv.handle(&Request::CtxCreate { flags: i.flags })?;
        Ok(i.backend)
    }

    /// The backend context if it exists.
    pub fn backend_if_active(&self) -> Option<Handle> {
        let b = lock(&self.inner).backend;
        (b != 0).then_some(b)
    }

    pub fn flags(&self) -> u32 {
        lock(&self.inner).flags
    }

    /// Runs every context-local-storage destructor, then destroys the backend context.
    fn teardown(&self, drv: &Driver) -> Result<(), CuResult> {
        let (backend, cls) = {
            let mut i = lock(&self.inner);
            (std::mem::take(&mut i.backend), std::mem::take(&mut i.cls))
        };
        for e in cls {
            if let Some(d) = e.dtor {
                d(
                    self.id as usize as *mut c_void,
                    e.key as *mut c_void,
                    e.value as *mut c_void,
                );
            }
        }
        if backend != 0 {
            drv.transport.flush()?;
            drv.call(&Request::CtxDestroy { ctx: backend })?;
            drv.forget_context(backend);
        }
        Ok(())
    }

    pub fn cls_put(&self, key: usize, value: usize, dtor: Option<ClsDtor>) {
        let mut i = lock(&self.inner);
        match i.cls.iter_mut().find(|e| e.key == key) {
            Some(e) => {
                e.value = value;
                e.dtor = dtor;
            }
            None => i.cls.push(ClsEntry { key, value, dtor }),
        }
    }

    pub fn cls_delete(&self, key: usize) -> bool {
        let mut i = lock(&self.inner);
        let n = i.cls.len();
        i.cls.retain(|e| e.key != key);
        i.cls.len() != n
    }

    pub fn cls_get(&self, key: usize) -> Option<usize> {
        lock(&self.inner)
            .cls
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value)
    }
}

impl DevLimits {
    pub fn of(info: &DeviceInfo) -> DevLimits {
        let a = |n: u32| {
            crate::api::device::attribute(info, n as std::ffi::c_int)
                .unwrap_or(0)
                .max(0) as u64
        };
        DevLimits {
            block: [
                attr::MAX_BLOCK_DIM_X,
                attr::MAX_BLOCK_DIM_Y,
                attr::MAX_BLOCK_DIM_Z,
            ]
            .map(a),
            grid: [
                attr::MAX_GRID_DIM_X,
                attr::MAX_GRID_DIM_Y,
                attr::MAX_GRID_DIM_Z,
            ]
            .map(a),
            smem_per_block: a(attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .max(a(attr::MAX_SHARED_MEMORY_PER_BLOCK)),
        }
    }
}

impl Library {
    /// The library's module in backend context `ctx`, loaded on first use.
    pub fn module(&self, drv: &Driver, ctx: Handle) -> Result<Handle, CuResult> {
        let mut m = lock(&self.modules);
        if let Some(h) = m.get(&ctx) {
            return Ok(*h);
        }
        let h = crate::api::module::load_image(drv, ctx, &self.image)?;
        m.insert(ctx, h);
        Ok(h)
    }

    /// Every module loaded so far, emptying the cache.
    pub fn take_modules(&self) -> Vec<Handle> {
        lock(&self.modules).drain().map(|(_, m)| m).collect()
    }
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

    pub fn object(&self, id: u64) -> Option<Object> {
        lock(&self.objects).get(&id).cloned()
    }

    pub fn context(&self, id: u64) -> Result<Arc<Context>, CuResult> {
        match self.object(id) {
            Some(Object::Context(c)) => Ok(c),
            _ => Err(CuResult::INVALID_CONTEXT),
        }
    }

    /// `cuCtxCreate`: a new context with its backend context.
    pub fn ctx_create(&self, flags: u32) -> Result<Arc<Context>, CuResult> {
        let backend = self.handle(&Request::CtxCreate { flags })?;
        let c = Arc::new(Context::new(false, backend, flags));
        lock(&self.objects).insert(c.id, Object::Context(c.clone()));
        Ok(c)
    }

    /// `cuCtxDestroy`.
    pub fn ctx_destroy(&self, id: u64) -> Result<(), CuResult> {
        let c = self.context(id)?;
        if c.primary {
            return Err(CuResult::INVALID_CONTEXT);
        }
        lock(&self.objects).remove(&id);
        lock(&c.inner).destroyed = true;
        CTX_STACK.with(|s| s.borrow_mut().retain(|x| x.id != id));
        c.teardown(self)
    }

    /// Drops what this library remembers about a destroyed backend context.
    fn forget_context(&self, backend: Handle) {
        self.forget_kernel_functions(|f| f.ctx == backend);
        lock(&self.module_functions).retain(|_, f| f.ctx != backend);
        lock(&self.objects).retain(|_, o| match o {
            Object::Function(f) => f.ctx != backend,
            Object::Library(l) => {
                lock(&l.modules).remove(&backend);
                true
            }
            _ => true,
        });
    }

    /// `cuDevicePrimaryCtxRetain`.
    pub fn primary_retain(&self) -> Result<Arc<Context>, CuResult> {
        self.primary.backend(self)?;
        lock(&self.primary.inner).refs += 1;
        Ok(self.primary.clone())
    }

    /// `cuDevicePrimaryCtxRelease`: the context's resources go with its last reference.
    pub fn primary_release(&self) -> Result<(), CuResult> {
        let last = {
            let mut i = lock(&self.primary.inner);
            if i.refs == 0 {
                return Err(CuResult::INVALID_CONTEXT);
            }
            i.refs -= 1;
            i.refs == 0
        };
        if last {
            self.primary.teardown(self)?;
        }
        Ok(())
    }

    /// `cuDevicePrimaryCtxReset`: destroys the primary context's resources now (running the
    /// context-local-storage destructors); the handle stays valid for a later retain.
    pub fn primary_reset(&self) -> Result<(), CuResult> {
        lock(&self.primary.inner).refs = 0;
        self.primary.teardown(self)
    }

    /// `(flags, active)` of the primary context.
    pub fn primary_state(&self) -> (u32, bool) {
        let i = lock(&self.primary.inner);
        (i.flags, i.refs > 0)
    }

    pub fn primary_set_flags(&self, flags: u32) {
        lock(&self.primary.inner).flags = flags;
    }

    /// The function `name` of backend module `module`, looked up once.
    pub fn module_function(
        &self,
        ctx: Handle,
        module: Handle,
        name: &str,
    ) -> Result<Arc<Function>, CuResult> {
        let key = (module, name.to_string());
        if let Some(f) = lock(&self.module_functions).get(&key) {
            return Ok(f.clone());
        }
        let mut info = match self.call(&Request::ModuleGetFunction {
            module,
            name: name.to_string(),
        })? {
            Reply::Function(f) => f,
            _ => return Err(CuResult::UNKNOWN),
        };
        if info.attribute(func_attr::PTX_VERSION).is_none() {
            if let Some(&arch) = lock(&self.module_arch).get(&module) {
                info.attributes
                    .push((func_attr::PTX_VERSION, arch.min(i32::MAX as u32) as i32));
            }
        }
        let f = Arc::new(Function {
            id: next_id(),
            ctx,
            module,
            name: CString::new(name).map_err(|_| CuResult::INVALID_VALUE)?,
            info,
            set_attributes: Mutex::new(Vec::new()),
            launch_limits: Mutex::new(None),
        });
        lock(&self.objects).insert(f.id, Object::Function(f.clone()));
        lock(&self.module_functions).insert(key, f.clone());
        Ok(f)
    }

    /// Forgets the functions of an unloaded module.
    /// Records what architecture module `module`'s code was compiled for.
    pub fn set_module_arch(&self, module: Handle, arch: Option<u32>) {
        if let Some(a) = arch {
            lock(&self.module_arch).insert(module, a);
        }
    }

    pub fn forget_module(&self, module: Handle) {
        lock(&self.module_arch).remove(&module);
        self.forget_kernel_functions(|f| f.module == module);
        lock(&self.module_functions).retain(|(m, _), _| *m != module);
        lock(&self.objects).retain(|_, o| !matches!(o, Object::Function(f) if f.module == module));
    }

    pub fn library_create(&self, image: Image) -> Arc<Library> {
        let l = Arc::new(Library {
            id: next_id(),
            image,
            modules: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
        });
        lock(&self.objects).insert(l.id, Object::Library(l.clone()));
        l
    }

    pub fn library(&self, id: u64) -> Result<Arc<Library>, CuResult> {
        match self.object(id) {
            Some(Object::Library(l)) => Ok(l),
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    /// `cuLibraryUnload`.
    pub fn library_unload(&self, id: u64) -> Result<(), CuResult> {
        let l = self.library(id)?;
        lock(&self.objects)
            .retain(|k, o| *k != id && !matches!(o, Object::Kernel(kern) if kern.library.id == id));
        self.transport.flush()?;
        let mut first_err = None;
        for m in l.take_modules() {
            self.forget_module(m);
            if let Err(e) = self.call(&Request::ModuleUnload { module: m }) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// `cuLibraryGetKernel`: one `CUkernel` per (library, name).
    pub fn kernel(&self, lib: &Arc<Library>, name: &str) -> Result<Arc<Kernel>, CuResult> {
        let mut ks = lock(&lib.kernels);
        if let Some(k) = ks.get(name) {
            return Ok(k.clone());
        }
        let k = Arc::new(Kernel {
            id: next_id(),
            library: lib.clone(),
            name: CString::new(name).map_err(|_| CuResult::INVALID_VALUE)?,
            functions: Mutex::new(Vec::new()),
        });
        ks.insert(name.to_string(), k.clone());
        lock(&self.objects).insert(k.id, Object::Kernel(k.clone()));
        Ok(k)
    }

    /// The function a `CUfunction` argument names in the current context: a function, or a
    /// kernel (loaded into the current context on first use).
    pub fn function(&self, id: u64) -> Result<Arc<Function>, CuResult> {
        match self.object(id) {
            Some(Object::Function(f)) => Ok(f),
            Some(Object::Kernel(k)) => self.kernel_function(&k),
            _ => Err(CuResult::INVALID_HANDLE),
        }
    }

    pub fn kernel_function(&self, k: &Kernel) -> Result<Arc<Function>, CuResult> {
        let ctx = current()?;
        if let Some((_, f)) = lock(&k.functions).iter().find(|(c, _)| *c == ctx) {
            return Ok(f.clone());
        }
        let module = k.library.module(self, ctx)?;
        let name = k.name.to_str().map_err(|_| CuResult::INVALID_VALUE)?;
        let f = self.module_function(ctx, module, name)?;
        lock(&k.functions).push((ctx, f.clone()));
        Ok(f)
    }

    /// Drops every kernel's cached functions that `gone` says are gone.
    fn forget_kernel_functions(&self, gone: impl Fn(&Function) -> bool) {
        for o in lock(&self.objects).values() {
            if let Object::Kernel(k) = o {
                lock(&k.functions).retain(|(_, f)| !gone(f));
            }
        }
    }

    /// Logs the first use of a call this library does not implement.
    pub fn unsupported(&self, name: &'static str) -> CuResult {
        unsupported(name)
    }
}

static UNSUPPORTED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();

/// Logs (once per name) that a call is not supported; returns `CUDA_ERROR_NOT_SUPPORTED`.
pub fn unsupported(name: &'static str) -> CuResult {
    let set = UNSUPPORTED.get_or_init(|| Mutex::new(HashSet::new()));
    if lock(set).insert(name) {
        crate::log(&format!(
            "{name} is not supported; returning CUDA_ERROR_NOT_SUPPORTED (see docs/libcuda.md)"
        ));
    }
    CuResult::NOT_SUPPORTED
}
