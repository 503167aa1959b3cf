//! Adapter between the CPU engine and the PTX interpreter (`netgpu-ptx`): choosing the PTX of
//! a module image, placing module globals in the session's device memory, function
//! attributes, and running launches against the session's memory.

use std::sync::Arc;

use netgpu_proto::cuda::{func_attr, CuResult};
use netgpu_proto::wire::ops::{DevPtr, Handle, ParamInfo};
use netgpu_ptx::{GlobalSpace, LaunchConfig, LoadErrorKind, Module};
use tracing::debug;

use super::memory::{Allocation, Heap};
use super::{COMPUTE_CAPABILITY, MAX_SHARED_PER_BLOCK, MAX_THREADS_PER_BLOCK};
use crate::executor::images::{classify, ImageKind};
use crate::executor::{ExecResult, LaunchDims};

/// A loaded module: the decoded PTX and where its globals live.
pub struct CpuModule {
    pub module: Arc<Module>,
    /// Name, device address and size of each module global, in `Module::globals` order.
    globals: Vec<(String, DevPtr, u64)>,
    addrs: Vec<u64>,
    /// Bytes of `.const` globals (`CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES`).
    const_bytes: u64,
    /// `.target sm_XY` as XY (0 when absent).
    target: u32,
}

/// `.version X.Y` and `.target sm_XY` of PTX text, from its header lines (netgpu-ptx's parser
/// accepts and skips them).
fn header(text: &str) -> (u32, u32) {
    let (mut version, mut target) = (0, 0);
    for line in text.lines().take(200) {
        let mut w = line.split_whitespace();
        match w.next() {
            Some(".version") => {
                if let Some((a, b)) = w.next().and_then(|v| v.split_once('.')) {
                    version = a.parse::<u32>().unwrap_or(0) * 10 + b.parse::<u32>().unwrap_or(0);
                }
            }
            Some(".target") => {
                if let Some(t) = w.next() {
                    let digits: String = t
                        .trim_end_matches(',')
                        .trim_start_matches("sm_")
                        .trim_start_matches("compute_")
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    target = digits.parse().unwrap_or(0);
                }
            }
            Some(s) if s.starts_with(".visible") || s.starts_with(".entry") => break,
            _ => {}
        }
    }
    (version, target)
}

impl CpuModule {
    /// Parses and decodes the PTX of the images (one image; several are linked once
    /// netgpu-ptx links) and places the module's globals in `ctx`'s memory.
    pub fn load(images: &[Vec<u8>], ctx: Handle, heap: &Heap) -> ExecResult<CpuModule> {
        let image = match images {
            [one] => one,
            [] => return Err(CuResult::INVALID_VALUE),
            _ => return Err(CuResult::NOT_SUPPORTED),
        };
        let text = match classify(image) {
            ImageKind::Ptx(t) => t,
            // The CPU executor runs PTX only; a SASS-only image has nothing for it.
            ImageKind::Elf | ImageKind::Fatbin | ImageKind::Archive => {
                return Err(CuResult::NO_BINARY_FOR_GPU)
            }
            ImageKind::Wrapper | ImageKind::Invalid => return Err(CuResult::INVALID_IMAGE),
        };
        let (_version, target) = header(text);
        let module = Module::load(text).map_err(|e| {
            debug!(error = %e, "PTX module refused");
            match e.kind {
                LoadErrorKind::InvalidPtx => CuResult::INVALID_PTX,
                LoadErrorKind::NotSupported => CuResult::NOT_SUPPORTED,
            }
        })?;
        let mut m = CpuModule {
            module: Arc::new(module),
            globals: Vec::new(),
            addrs: Vec::new(),
            const_bytes: 0,
            target,
        };
        let vars = m.module.globals().to_vec();
        let mut held: Vec<Arc<Allocation>> = Vec::new();
        for g in vars {
            let a = match heap.alloc_global(ctx, g.size.max(1)) {
                Ok(a) => a,
                Err(e) => {
                    for a in held {
                        heap.remove(a.base());
                    }
                    return Err(e);
                }
            };
            let init_len = (g.init.len() as u64).min(a.len());
            if let Some(p) = a.at(0, init_len) {
                // SAFETY: the allocation was just made and is not yet visible to any work;
                // `init_len` is within it.
                unsafe {
                    std::ptr::copy_nonoverlapping(g.init.as_ptr(), p.as_ptr(), init_len as usize)
                };
            }
            if g.space == GlobalSpace::Const {
                m.const_bytes = m.const_bytes.saturating_add(g.size);
            }
            m.globals.push((g.name.clone(), a.base(), g.size));
            m.addrs.push(a.base());
            held.push(a);
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
        let clamp = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        let cc = (COMPUTE_CAPABILITY.0 * 10 + COMPUTE_CAPABILITY.1) as i32;
        vec![
            (
                func_attr::MAX_THREADS_PER_BLOCK,
                MAX_THREADS_PER_BLOCK as i32,
            ),
            (func_attr::SHARED_SIZE_BYTES, clamp(k.shared_static.into())),
            (func_attr::CONST_SIZE_BYTES, clamp(self.const_bytes)),
            (func_attr::LOCAL_SIZE_BYTES, clamp(k.local_size.into())),
            (func_attr::NUM_REGS, register_estimate(k.nregs)),
            (
                func_attr::PTX_VERSION,
                if self.target == 0 {
                    cc
                } else {
                    self.target as i32
                },
            ),
            (func_attr::BINARY_VERSION, cc),
            (func_attr::CACHE_MODE_CA, 0),
            (
                func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES,
                max_dynamic_shared as i32,
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

    /// Runs a launch to completion against the session's memory, as work of `ctx` dispatched
    /// with sequence number `seq` (see `memory`).
    pub fn launch(
        &self,
        kernel: &str,
        dims: LaunchDims,
        params: &[u8],
        mem: LaunchMemory<'_>,
        threads: usize,
    ) -> ExecResult<()> {
        let k = self.module.kernel(kernel).ok_or(CuResult::INVALID_HANDLE)?;
        let cfg = LaunchConfig {
            grid: dims.grid,
            block: dims.block,
            shared_mem_bytes: dims.shared_mem_bytes,
            threads,
        };
        netgpu_ptx::launch(&self.module, k, &cfg, params, &self.addrs, &mem).map_err(|e| {
            debug!(error = %e, kernel, "launch failed");
            CuResult(e.cuda_error())
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

    #[test]
    fn the_ptx_header_gives_version_and_target() {
        let t = "//\n.version 8.8\n.target sm_75, debug\n.address_size 64\n.visible .entry k()\n";
        assert_eq!(header(t), (88, 75));
        assert_eq!(header(".version 9.5\n.target compute_90a\n"), (95, 90));
        assert_eq!(header("garbage"), (0, 0));
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
