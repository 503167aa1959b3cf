//! Adapter between the CPU engine and the PTX interpreter (`netgpu-ptx`): choosing the PTX of
//! a module image (`netgpu-image`), placing module globals in the session's device memory,
//! function attributes, and running launches against the session's memory.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use netgpu_image::{Fatbin, ImageError, ImageKind, Limits, PtxVersion, Target};
use netgpu_proto::cuda::{func_attr, CuResult};
use netgpu_proto::wire::ops::{DevPtr, Handle, ParamInfo};
use netgpu_ptx::{GlobalSpace, LaunchConfig, LaunchError, LaunchOptions, LoadErrorKind, Module};
use tracing::debug;

use super::memory::{Allocation, Heap};
use super::{COMPUTE_CAPABILITY, MAX_SHARED_PER_BLOCK};
use crate::executor::limits::MAX_PARAM_BYTES;
use crate::executor::{Console, ExecResult, LaunchDims};

/// What the CPU executor runs: PTX for compute capability 8.0 up to ISA 9.5 (CUDA 13.5's).
pub const TARGET: Target = Target {
    sm: COMPUTE_CAPABILITY.0 * 10 + COMPUTE_CAPABILITY.1,
    max_ptx: PtxVersion::new(9, 5),
};

/// For a module image that is one fatbin whose PTX is all for newer architectures than
/// [`TARGET`] (CuPy's CUB kernels carry PTX for compute_100 only; `nvcc -arch=sm_90` embeds
/// compute_90): the interpreter is not bound by an architecture, so the oldest such PTX that
/// it decodes runs (the fewest newer-architecture features), trying each of
/// `Fatbin::ptx_candidates` in turn. `Ok(None)`: not such an image, or no candidate;
/// a refusal of every candidate answers the first candidate's load error.
fn newer_ptx(parts: &[&[u8]]) -> ExecResult<Option<Module>> {
    let limits = Limits::default();
    let [one] = parts else { return Ok(None) };
    if netgpu_image::detect(one) != Some(ImageKind::Fatbin) {
        return Ok(None);
    }
    let Ok(fatbin) = Fatbin::parse(one, &limits) else {
        return Ok(None);
    };
    let mut candidates: Vec<_> = fatbin
        .ptx_candidates(u32::MAX, TARGET.max_ptx)
        .into_iter()
        .filter(|e| e.arch.sm > TARGET.sm && !e.is_relocatable_ptx())
        .collect();
    // Oldest architecture first; within one, as ptx_candidates ranks them.
    candidates.sort_by_key(|e| e.arch.sm);
    let mut first_error = None;
    for e in candidates {
        let text = match e.contents(&limits) {
            Ok(bytes) => match netgpu_image::ptx::text(&bytes) {
                Ok(t) => t.to_string(),
                Err(err) => {
                    debug!(error = %err, arch = %e.arch, "fatbin PTX entry unreadable");
                    continue;
                }
            },
            Err(err) => {
                first_error.get_or_insert(err.cu_result());
                continue;
            }
        };
        match Module::load(&text) {
            Ok(m) => {
                debug!(arch = %e.arch, "the fatbin has PTX only for newer architectures; running this one");
                return Ok(Some(m));
            }
            Err(err) => {
                first_error.get_or_insert_with(|| load_error(err));
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}

/// A loaded module: the decoded PTX and where its globals live.
pub struct CpuModule {
    pub module: Arc<Module>,
    /// Name, device address and size of each module global, in `Module::globals` order.
    globals: Vec<(String, DevPtr, u64)>,
    addrs: Vec<u64>,
    /// Bytes of `.const` globals (`CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES`).
    const_bytes: u64,
}

/// How one launch is controlled.
pub struct LaunchControl<'a> {
    pub cooperative: bool,
    pub cancel: &'a AtomicBool,
    pub deadline: Option<Instant>,
    /// Multiprocessors the device reports (cooperative residency).
    pub sm_count: u32,
    pub console: &'a Console,
}

fn load_error(e: netgpu_ptx::LoadError) -> CuResult {
    debug!(error = %e, "PTX module refused");
    match e.kind {
        LoadErrorKind::InvalidPtx => CuResult::INVALID_PTX,
        LoadErrorKind::NotSupported => CuResult::NOT_SUPPORTED,
    }
}

impl CpuModule {
    /// Takes the PTX of the images (the best PTX of each fatbin, a link container's inputs),
    /// decodes it and places the module's globals in `ctx`'s memory. An image without PTX
    /// answers `NO_BINARY_FOR_GPU`, as a driver answers for a GPU it has no code for.
    pub fn load(images: &[Vec<u8>], ctx: Handle, heap: &Heap) -> ExecResult<CpuModule> {
        let parts: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        let selected = match netgpu_image::select_ptx(&parts, &TARGET, &Limits::default()) {
            Ok(v) => v,
            Err(ImageError::NoBinaryForGpu(why)) => match newer_ptx(&parts)? {
                Some(module) => return CpuModule::place(module, ctx, heap),
                None => {
                    debug!(error = %why, "module image refused");
                    return Err(CuResult::NO_BINARY_FOR_GPU);
                }
            },
            Err(e) => {
                debug!(error = %e, "module image refused");
                return Err(e.cu_result());
            }
        };
        let module = match selected.as_slice() {
            [one] => Module::load(&one.text).map_err(load_error)?,
            [] => return Err(CuResult::NO_BINARY_FOR_GPU),
            // Several modules (-rdc=true, the JIT linker): one program.
            many => {
                let texts: Vec<&str> = many.iter().map(|p| p.text.as_str()).collect();
                Module::link(&texts).map_err(load_error)?
            }
        };
        CpuModule::place(module, ctx, heap)
    }

    /// Checks a decoded module's kernels and places its globals in `ctx`'s memory.
    fn place(module: Module, ctx: Handle, heap: &Heap) -> ExecResult<CpuModule> {
        // CUDA's parameter space: a kernel whose parameters need more (or whose layout
        // overflows) is refused at load, as ptxas refuses it.
        for name in module.kernel_names() {
            let params = module
                .kernel(name)
                .map(|k| k.params().to_vec())
                .unwrap_or_default();
            let span = params.iter().try_fold(0u32, |acc, p| {
                p.offset.checked_add(p.size).map(|end| acc.max(end))
            });
            if span.is_none_or(|s| s > MAX_PARAM_BYTES) {
                debug!(
                    kernel = name,
                    "kernel parameters exceed the 32 764-byte parameter space"
                );
                return Err(CuResult::INVALID_PTX);
            }
        }
        let mut m = CpuModule {
            module: Arc::new(module),
            globals: Vec::new(),
            addrs: Vec::new(),
            const_bytes: 0,
        };
        let vars = m.module.globals().to_vec();
        let mut held: Vec<Arc<Allocation>> = Vec::new();
        for g in &vars {
            let a = match heap.alloc_global(ctx, g.size.max(1)) {
                Ok(a) => a,
                Err(e) => {
                    for a in held {
                        heap.remove(a.base());
                    }
                    return Err(e);
                }
            };
            if g.space == GlobalSpace::Const {
                m.const_bytes = m.const_bytes.saturating_add(g.size);
            }
            m.globals.push((g.name.clone(), a.base(), g.size));
            m.addrs.push(a.base());
            held.push(a);
        }
        // Initial values, with the addresses of other globals they name filled in.
        for (i, a) in held.iter().enumerate() {
            let Some(init) = m.module.init_image(i, &m.addrs) else {
                continue;
            };
            let n = (init.len() as u64).min(a.len());
            if let Some(p) = a.at(0, n) {
                // SAFETY: the allocation was just made and is not yet visible to any work; `n`
                // is within it.
                unsafe { std::ptr::copy_nonoverlapping(init.as_ptr(), p.as_ptr(), n as usize) };
            }
        }
        Ok(m)
    }

    /// Device addresses of the module's globals (freed with the module).
    pub fn global_bases(&self) -> impl Iterator<Item = DevPtr> + '_ {
        self.addrs.iter().copied()
    }

    pub fn kernel_params(&self, name: &str) -> Option<Vec<ParamInfo>> {
        let k = self.module.kernel(name)?;
        Some(
            k.params()
                .iter()
                .map(|p| ParamInfo {
                    offset: p.offset,
                    size: p.size,
                })
                .collect(),
        )
    }

    pub fn global(&self, name: &str) -> Option<(DevPtr, u64)> {
        self.globals
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, p, s)| (*p, *s))
    }

    /// Most threads per block `kernel` takes (1024, or less under `.maxntid`/`.reqntid`),
    /// and the only block shape it takes under `.reqntid`.
    pub fn block_limits(&self, kernel: &str) -> (u32, Option<[u32; 3]>) {
        match self.module.kernel(kernel) {
            Some(k) => (k.attributes().max_threads_per_block, k.attributes().reqntid),
            None => (0, None),
        }
    }

    /// The attributes `cuFuncGetAttribute` reports for `kernel` (see `docs/backend.md`).
    pub fn attributes(
        &self,
        kernel: &str,
        max_dynamic_shared: u32,
        carveout: i32,
    ) -> Vec<(u32, i32)> {
        let Some(k) = self.module.kernel(kernel) else {
            return Vec::new();
        };
        let a = k.attributes();
        let clamp = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        let cc = (COMPUTE_CAPABILITY.0 * 10 + COMPUTE_CAPABILITY.1) as i32;
        vec![
            (
                func_attr::MAX_THREADS_PER_BLOCK,
                clamp(a.max_threads_per_block.into()),
            ),
            (func_attr::SHARED_SIZE_BYTES, clamp(k.shared_static.into())),
            (func_attr::CONST_SIZE_BYTES, clamp(self.const_bytes)),
            (func_attr::LOCAL_SIZE_BYTES, clamp(a.local_bytes.into())),
            (func_attr::NUM_REGS, register_estimate(k.nregs)),
            (
                func_attr::PTX_VERSION,
                if a.target == 0 {
                    cc
                } else {
                    clamp(a.target.into())
                },
            ),
            (func_attr::BINARY_VERSION, cc),
            (func_attr::CACHE_MODE_CA, 0),
            (
                func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES,
                clamp(max_dynamic_shared.into()),
            ),
            (func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT, carveout),
            (func_attr::CLUSTER_SIZE_MUST_BE_SET, 0),
            (func_attr::REQUIRED_CLUSTER_WIDTH, 0),
            (func_attr::REQUIRED_CLUSTER_HEIGHT, 0),
            (func_attr::REQUIRED_CLUSTER_DEPTH, 0),
            (func_attr::NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 0),
            (func_attr::CLUSTER_SCHEDULING_POLICY_PREFERENCE, 0),
        ]
    }

    /// Static shared memory of `kernel`.
    pub fn shared_static(&self, kernel: &str) -> u32 {
        self.module
            .kernel(kernel)
            .map(|k| k.shared_static)
            .unwrap_or(0)
    }

    /// Largest grid a cooperative launch of `kernel` may use.
    pub fn max_cooperative_blocks(&self, kernel: &str, dims: &LaunchDims, sm_count: u32) -> u64 {
        match self.module.kernel(kernel) {
            Some(k) => {
                netgpu_ptx::max_cooperative_blocks(k, dims.block, dims.shared_mem_bytes, sm_count)
            }
            None => 0,
        }
    }

    /// Runs a launch to completion against the session's memory, as work of `ctx` dispatched
    /// with sequence number `seq` (see `memory`); its `printf` output goes to the console.
    pub fn launch(
        &self,
        kernel: netgpu_ptx::KernelId,
        dims: LaunchDims,
        params: &[u8],
        mem: LaunchMemory<'_>,
        threads: usize,
        control: &LaunchControl<'_>,
    ) -> ExecResult<()> {
        let k = self
            .module
            .kernel_by_id(kernel)
            .ok_or(CuResult::INVALID_HANDLE)?;
        let cfg = LaunchConfig {
            grid: dims.grid,
            block: dims.block,
            shared_mem_bytes: dims.shared_mem_bytes,
            threads,
        };
        let opts = LaunchOptions {
            cooperative: control.cooperative,
            cancel: Some(control.cancel),
            deadline: control.deadline,
            sm_count: control.sm_count,
            ..LaunchOptions::default()
        };
        let out = netgpu_ptx::launch_with(&self.module, k, &cfg, params, &self.addrs, &mem, &opts);
        control.console.push(&out.console);
        control.console.dropped(out.console_dropped);
        out.result.map_err(|e| {
            debug!(error = %e, kernel = %k.name, "launch failed");
            match e {
                // The session is ending: nobody sees it; not a fault of the context.
                LaunchError::Cancelled => crate::executor::streams::CANCELLED,
                e => CuResult(e.cuda_error()),
            }
        })
    }
}

/// The CPU executor's register estimate for `CU_FUNC_ATTRIBUTE_NUM_REGS`: the interpreter has
/// no register file, so this is the kernel's count of virtual registers, capped at 64 so that
/// 1024 threads of any kernel fit the 65 536 registers per block the device reports (the
/// executor never refuses a launch for registers).
pub fn register_estimate(virtual_regs: u32) -> i32 {
    virtual_regs.clamp(1, 64) as i32
}

/// The default `MAX_DYNAMIC_SHARED_SIZE_BYTES` of a kernel: what is left of the 48 KiB
/// per block after its static shared memory.
pub fn default_dynamic_shared(shared_static: u32) -> u32 {
    MAX_SHARED_PER_BLOCK.saturating_sub(shared_static)
}

/// The session's memory as one launch of `ctx` sees it.
pub struct LaunchMemory<'a> {
    pub heap: &'a Heap,
    pub ctx: Handle,
    pub seq: u64,
}

impl netgpu_ptx::DeviceMemory for LaunchMemory<'_> {
    fn resolve(&self, addr: u64, len: usize) -> Option<std::ptr::NonNull<u8>> {
        self.heap.resolve_for(self.ctx, self.seq, addr, len as u64)
    }

    fn region(&self, addr: u64) -> Option<(u64, usize, std::ptr::NonNull<u8>)> {
        self.heap.region_for(self.ctx, self.seq, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::executor::budget::MemoryPool;
    use netgpu_image::testing::{fatbin, ptx_module, EntrySpec};
    use netgpu_image::Compression;

    fn heap() -> Heap {
        Heap::new(MemoryPool::new(1 << 20), None, 1 << 20)
    }

    #[test]
    fn a_fatbin_with_ptx_only_for_newer_architectures_runs_its_oldest_decodable_ptx() {
        // CuPy's CUB fatbin: SASS for many architectures and PTX for compute_100 only.
        let p100 = ptx_module("8.8", 100, "from_100");
        let p90 = ptx_module("8.0", 90, "from_90");
        let broken = ".version 8.0\n.target sm_86\n.address_size 64\n.visible .entry k()\n{\n\tfrobnicate;\n}\n";
        let fb = fatbin(&[
            EntrySpec::ptx(100, &p100).compressed(Compression::Lz4),
            EntrySpec::ptx(90, &p90),
            EntrySpec::ptx(86, broken),
        ]);
        let m = CpuModule::load(&[fb], 1, &heap()).expect("a newer architecture's PTX runs");
        assert_eq!(m.module.kernel_names().collect::<Vec<_>>(), ["from_90"]);
        // Only newer PTX, none of which decodes: the decoder's refusal (an unknown
        // instruction is a construct it does not support), not NO_BINARY_FOR_GPU.
        let fb = fatbin(&[EntrySpec::ptx(86, broken)]);
        assert_eq!(
            CpuModule::load(&[fb], 1, &heap()).err(),
            Some(CuResult::NOT_SUPPORTED)
        );
        // PTX for the executor's own architecture is still preferred.
        let p80 = ptx_module("8.0", 80, "from_80");
        let fb = fatbin(&[EntrySpec::ptx(90, &p90), EntrySpec::ptx(80, &p80)]);
        let m = CpuModule::load(&[fb], 1, &heap()).unwrap();
        assert_eq!(m.module.kernel_names().collect::<Vec<_>>(), ["from_80"]);
        // SASS only: still no binary for the GPU.
        let fb = fatbin(&[]);
        assert_eq!(
            CpuModule::load(&[fb], 1, &heap()).err(),
            Some(CuResult::NO_BINARY_FOR_GPU)
        );
    }

    #[test]
    fn register_estimates_fit_a_full_block() {
        assert_eq!(register_estimate(0), 1);
        assert_eq!(register_estimate(20), 20);
        assert_eq!(register_estimate(500), 64);
        assert_eq!(default_dynamic_shared(1024), 47 * 1024);
        assert_eq!(default_dynamic_shared(100_000), 0);
    }
}
