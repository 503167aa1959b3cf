//! Test helpers: fixture modules, packed kernel arguments, launches, random inputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use netgpu_ptx::{
    launch_with, HostMemory, LaunchConfig, LaunchError, LaunchOptions, LaunchOutput, Module,
};

pub fn ptx(name: &str) -> String {
    let path = format!(
        "{}/../../tests/kernels/nvcc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture module, loaded once per test binary (the thrust and CUB programs are large).
pub fn module(name: &str) -> Arc<Module> {
    static CACHE: Mutex<Option<HashMap<String, Arc<Module>>>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let map = c.get_or_insert_with(HashMap::new);
    map.entry(name.to_string())
        .or_insert_with(|| {
            Arc::new(Module::load(&ptx(name)).unwrap_or_else(|e| panic!("{name}: {e}")))
        })
        .clone()
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
    /// In `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u32) as i32
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() % 2000) as f32 / 100.0 - 10.0
    }
}

pub fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    let n = std::mem::size_of_val(v);
    // SAFETY: T is a plain value type (integers, floats); reading its bytes is sound.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), n) }.to_vec()
}

pub fn from_bytes<T: Copy + Default>(b: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    b.chunks_exact(size)
        .map(|c| {
            let mut v = T::default();
            // SAFETY: `c` holds exactly size_of::<T>() bytes; T is a plain value type.
            unsafe { std::ptr::copy_nonoverlapping(c.as_ptr(), (&mut v as *mut T).cast(), size) };
            v
        })
        .collect()
}

/// Device memory plus the usual upload/download.
pub struct Gpu {
    pub mem: HostMemory,
}

impl Gpu {
    pub fn new() -> Gpu {
        Gpu {
            mem: HostMemory::new(),
        }
    }
    pub fn upload<T: Copy>(&self, v: &[T]) -> u64 {
        let b = bytes(v);
        let a = self.mem.alloc(b.len().max(1));
        assert!(self.mem.write(a, &b));
        a
    }
    pub fn zeros(&self, len: usize) -> u64 {
        self.mem.alloc(len.max(1))
    }
    pub fn download<T: Copy + Default>(&self, addr: u64, n: usize) -> Vec<T> {
        from_bytes(&self.mem.read(addr, n * std::mem::size_of::<T>()).unwrap())
    }
}

/// Packs kernel arguments at the offsets the kernel's parameters have.
pub fn params(m: &Module, kernel: &str, args: &[&[u8]]) -> Vec<u8> {
    let k = m
        .kernel(kernel)
        .unwrap_or_else(|| panic!("no kernel {kernel}"));
    assert_eq!(k.params().len(), args.len(), "{kernel} parameter count");
    let size = k
        .params()
        .iter()
        .map(|p| p.offset + p.size)
        .max()
        .unwrap_or(0) as usize;
    let mut buf = vec![0u8; size];
    for (p, a) in k.params().iter().zip(args) {
        assert_eq!(p.size as usize, a.len(), "{kernel} parameter size");
        buf[p.offset as usize..p.offset as usize + a.len()].copy_from_slice(a);
    }
    buf
}

pub struct Launch<'a> {
    pub m: &'a Module,
    pub kernel: &'a str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared: u32,
    pub threads: usize,
    pub opts: LaunchOptions<'a>,
    /// Device addresses of the module's globals; allocated and initialised per launch if
    /// `None`.
    pub globals: Option<Vec<u64>>,
}

/// Allocates and initialises a module's globals, as the backend does at load.
pub fn place_globals(gpu: &Gpu, m: &Module) -> Vec<u64> {
    let addrs: Vec<u64> = m
        .globals()
        .iter()
        .map(|g| gpu.zeros(g.size as usize))
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        let img = m.init_image(i, &addrs).unwrap();
        assert!(gpu.mem.write(*a, &img));
    }
    addrs
}

impl<'a> Launch<'a> {
    pub fn new(m: &'a Module, kernel: &'a str, grid: u32, block: u32) -> Launch<'a> {
        Launch {
            m,
            kernel,
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared: 0,
            threads: 2,
            opts: LaunchOptions::default(),
            globals: None,
        }
    }

    pub fn output(&self, gpu: &Gpu, args: &[&[u8]]) -> LaunchOutput {
        let p = params(self.m, self.kernel, args);
        let cfg = LaunchConfig {
            grid: self.grid,
            block: self.block,
            shared_mem_bytes: self.shared,
            threads: self.threads,
        };
        let addrs = match &self.globals {
            Some(g) => g.clone(),
            None => place_globals(gpu, self.m),
        };
        launch_with(
            self.m,
            self.m.kernel(self.kernel).unwrap(),
            &cfg,
            &p,
            &addrs,
            &gpu.mem,
            &self.opts,
        )
    }

    pub fn run(&self, gpu: &Gpu, args: &[&[u8]]) -> Result<(), LaunchError> {
        self.output(gpu, args).result
    }
}

pub fn u64b(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

pub fn i32b(v: i32) -> [u8; 4] {
    v.to_le_bytes()
}
