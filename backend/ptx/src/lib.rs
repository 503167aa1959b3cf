//! netgpu's PTX executor: runs CUDA kernels, as PTX that nvcc and nvrtc emit, on the CPU.
//!
//! - [`lexer`], [`parse`], [`ast`]: PTX text to a syntax tree (hand-written; see
//!   docs/ptx-executor.md).
//! - [`decode`], [`ir`]: the tree to a flat, fully resolved instruction list per kernel, with
//!   device functions inlined; every unsupported construct is refused here with its line.
//! - [`exec`]: the interpreter: blocks in parallel (all resident in a cooperative launch),
//!   threads of a block cooperatively scheduled and time-sliced around barriers and warp
//!   collectives; every memory access checked; cancellation, deadlines, console output.
//! - [`num`]: typed arithmetic; [`printf`]: device-side `printf` formatting.
//! - [`link`]: several modules into one program (`-rdc=true`, `cuLink*`).
//!
//! ```ignore
//! let m = Module::load(ptx_text)?;
//! let k = m.kernel("vector_add").unwrap();
//! let cfg = LaunchConfig { grid: [n / 256, 1, 1], block: [256, 1, 1], shared_mem_bytes: 0, threads: 0 };
//! launch(&m, k, &cfg, &params, &[], &device_memory)?;
//! // With launch control and the kernel's printf output:
//! let out = launch_with(&m, k, &cfg, &params, &[], &device_memory, &LaunchOptions {
//!     cancel: Some(&flag), deadline: Some(deadline), ..LaunchOptions::default() });
//! print!("{}", String::from_utf8_lossy(&out.console));
//! out.result?;
//! ```

pub mod ast;
pub mod decode;
pub mod error;
pub mod exec;
pub mod ir;
pub mod lexer;
pub mod link;
pub mod num;
pub mod parse;
pub mod printf;

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;

pub use decode::{GlobalSpace, GlobalVar, Kernel, KernelAttrs, ParamInfo, Reloc};
pub use error::{LaunchError, LoadError, LoadErrorKind, CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE};
pub use exec::{
    blocks_per_sm, launch, launch_counted, launch_with, max_cooperative_blocks, DeviceMemory,
    LaunchConfig, LaunchOptions, LaunchOutput, WorkerPool, DEFAULT_CONSOLE_LIMIT, MAX_POOL_THREADS,
};

/// Largest PTX image accepted.
pub const MAX_PTX_LEN: usize = 64 << 20;

/// A loaded, decoded PTX module: immutable, shareable between threads.
#[derive(Debug)]
pub struct Module {
    kernels: Vec<Kernel>,
    /// Kernel name -> index in `kernels`.
    names: HashMap<String, usize>,
    globals: Vec<GlobalVar>,
}

/// A kernel of one [`Module`], found once by name ([`Module::kernel_id`]) so that each
/// launch can take it without a name lookup ([`Module::kernel_by_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelId(usize);

impl Module {
    /// Parses and decodes a PTX module (text, optionally NUL-terminated).
    pub fn load(ptx: &str) -> Result<Module, LoadError> {
        let ptx = ptx.trim_end_matches('\0');
        if ptx.len() > MAX_PTX_LEN {
            return Err(LoadError::invalid(0, "PTX image larger than 64 MiB"));
        }
        let ast = parse::parse(ptx)?;
        let (kernels, globals) = decode::decode(&ast)?;
        Ok(Module::new(kernels, globals))
    }

    /// Links several PTX modules into one program (`nvcc -rdc=true` device code, the JIT
    /// linker `cuLink*`): `.extern` functions and variables resolve across modules, `.weak`
    /// and `.common` definitions yield to strong ones, and two strong definitions of a name
    /// are refused with the name (and errors name the module: [`LoadError::module`]).
    pub fn link(ptx: &[&str]) -> Result<Module, LoadError> {
        if ptx.is_empty() {
            return Err(LoadError::invalid(0, "no modules to link"));
        }
        let total = ptx
            .iter()
            .map(|p| p.len())
            .fold(0usize, usize::saturating_add);
        if total > MAX_PTX_LEN {
            return Err(LoadError::invalid(
                0,
                "PTX images larger than 64 MiB together",
            ));
        }
        let n = ptx.len();
        let ast = link::link_ast(ptx).map_err(|e| link::locate(e, n))?;
        let (kernels, globals) = decode::decode(&ast).map_err(|e| link::locate(e, n))?;
        Ok(Module::new(kernels, globals))
    }

    fn new(kernels: Vec<Kernel>, globals: Vec<GlobalVar>) -> Module {
        // A later kernel of the same name wins (as the map this replaced kept it).
        let names = kernels
            .iter()
            .enumerate()
            .map(|(i, k)| (k.name.clone(), i))
            .collect();
        Module {
            kernels,
            names,
            globals,
        }
    }

    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernel_by_id(self.kernel_id(name)?)
    }

    /// The id of kernel `name`, for [`Module::kernel_by_id`].
    pub fn kernel_id(&self, name: &str) -> Option<KernelId> {
        self.names.get(name).copied().map(KernelId)
    }

    /// The kernel `id` names (`None` for an id of another module that this one lacks).
    pub fn kernel_by_id(&self, id: KernelId) -> Option<&Kernel> {
        self.kernels.get(id.0)
    }

    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Module-scope `.global`/`.const` variables, which the executor allocates.
    pub fn globals(&self) -> &[GlobalVar] {
        &self.globals
    }

    /// The initial bytes of global `index` once every global is placed (`addrs[i]` is the
    /// device address of global `i`): its initializer with the addresses it names filled in
    /// ([`GlobalVar::relocs`]); the rest of the variable is zero. `None` if `index` or
    /// `addrs` do not match the module.
    pub fn init_image(&self, index: usize, addrs: &[u64]) -> Option<Vec<u8>> {
        let g = self.globals.get(index)?;
        if addrs.len() != self.globals.len() {
            return None;
        }
        let mut img = g.init.clone();
        for r in &g.relocs {
            let at = usize::try_from(r.offset).ok()?;
            let v = addrs
                .get(r.target as usize)?
                .wrapping_add(r.addend as u64)
                .to_le_bytes();
            if img.len() < at + 8 {
                img.resize(at + 8, 0);
            }
            img[at..at + 8].copy_from_slice(&v);
        }
        Some(img)
    }
}

/// Device memory in plain host allocations at made-up device addresses: for tests,
/// benchmarks and tools that run kernels without a backend.
/// One allocation: device address, backing words (8-byte aligned), length in bytes.
type HostAlloc = (u64, Box<[u64]>, usize);

pub struct HostMemory {
    allocs: Mutex<Vec<HostAlloc>>,
    next: Mutex<u64>,
}

impl Default for HostMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMemory {
    pub fn new() -> Self {
        HostMemory {
            allocs: Mutex::new(Vec::new()),
            next: Mutex::new(0x1_0000_0000),
        }
    }

    /// Allocates `len` zeroed bytes (256-byte aligned device address); returns the address.
    pub fn alloc(&self, len: usize) -> u64 {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let addr = *next;
        *next += (len as u64).div_ceil(256) * 256 + 4096;
        let words = vec![0u64; len.div_ceil(8).max(1)].into_boxed_slice();
        self.allocs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((addr, words, len));
        addr
    }

    /// Copies `data` to device address `addr`; false if out of bounds.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some(p) => {
                // SAFETY: `resolve` checked the range lies inside one live allocation; no
                // launch runs concurrently with this host-side copy.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.as_ptr(), data.len()) };
                true
            }
            None => false,
        }
    }

    /// Reads `len` bytes at device address `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let p = self.resolve(addr, len)?;
        let mut v = vec![0u8; len];
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), v.as_mut_ptr(), len) };
        Some(v)
    }
}

impl DeviceMemory for HostMemory {
    fn resolve(&self, addr: u64, len: usize) -> Option<NonNull<u8>> {
        let (base, l, p) = self.region(addr)?;
        if addr.checked_add(len as u64)? > base + l as u64 {
            return None;
        }
        // SAFETY: addr - base < l, so the pointer stays inside the allocation.
        NonNull::new(unsafe { p.as_ptr().add((addr - base) as usize) })
    }

    fn region(&self, addr: u64) -> Option<(u64, usize, NonNull<u8>)> {
        let allocs = self.allocs.lock().unwrap_or_else(|p| p.into_inner());
        allocs
            .iter()
            .find(|(b, _, l)| addr >= *b && addr < b + *l as u64)
            .and_then(|(b, w, l)| {
                // The boxed slice never moves while it is in the list; the pointer stays valid.
                NonNull::new(w.as_ptr() as *mut u8).map(|p| (*b, *l, p))
            })
    }
}
