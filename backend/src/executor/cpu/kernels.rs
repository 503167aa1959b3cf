//! Adapter between the CPU engine and the PTX interpreter (`netgpu-ptx`): module loading,
//! placement of module globals in the session's device memory, and launches.

use std::ptr::NonNull;
use std::sync::Arc;

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DevPtr, Handle, ParamInfo};
use netgpu_ptx::{LaunchConfig, LoadErrorKind, Module};
use tracing::debug;

use super::memory::DeviceHeap;
use crate::executor::{ExecResult, LaunchDims};

pub struct CpuModule {
    module: Arc<Module>,
    /// Name, device address and size of each module global, in `Module::globals` order.
    globals: Vec<(String, DevPtr, u64)>,
    addrs: Vec<u64>,
}

impl netgpu_ptx::DeviceMemory for DeviceHeap {
    fn resolve(&self, addr: u64, len: usize) -> Option<NonNull<u8>> {
        DeviceHeap::resolve(self, addr, len as u64).map(|(p, _)| p)
    }

    fn region(&self, addr: u64) -> Option<(u64, usize, NonNull<u8>)> {
        self.allocation(addr)
    }
}

impl CpuModule {
    /// Parses and decodes a PTX image and places its globals in `ctx`'s memory.
    pub fn load(image: &[u8], ctx: Handle, heap: &mut DeviceHeap) -> ExecResult<CpuModule> {
        let end = image.iter().position(|&b| b == 0).unwrap_or(image.len());
        let text = std::str::from_utf8(&image[..end]).map_err(|_| CuResult::INVALID_IMAGE)?;
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
        };
        let vars = m.module.globals().to_vec();
        for g in vars {
            let ptr = match heap.alloc(ctx, g.size.max(1)) {
                Ok(p) => p,
                Err(e) => {
                    m.free_globals(heap);
                    return Err(e);
                }
            };
            if let Some(view) = heap.slice_mut(ptr, g.init.len() as u64) {
                view.copy_from_slice(&g.init);
            }
            m.globals.push((g.name.clone(), ptr, g.size));
            m.addrs.push(ptr);
        }
        Ok(m)
    }

    pub fn free_globals(&self, heap: &mut DeviceHeap) {
        for (_, ptr, _) in &self.globals {
            let _ = heap.free(*ptr);
        }
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

    pub fn launch(
        &self,
        kernel: &str,
        dims: LaunchDims,
        params: &[u8],
        heap: &DeviceHeap,
        threads: usize,
    ) -> ExecResult<()> {
        let k = self.module.kernel(kernel).ok_or(CuResult::INVALID_HANDLE)?;
        let cfg = LaunchConfig {
            grid: dims.grid,
            block: dims.block,
            shared_mem_bytes: dims.shared_mem_bytes,
            threads,
        };
        netgpu_ptx::launch(&self.module, k, &cfg, params, &self.addrs, heap).map_err(|e| {
            debug!(error = %e, kernel, "launch failed");
            CuResult(e.cuda_error())
        })
    }
}
