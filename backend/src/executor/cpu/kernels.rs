//! Adapter between the CPU engine and the PTX interpreter (`netgpu-ptx`): module loading,
//! placement of module globals in the session's device memory, and launches.

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{DevPtr, Handle, ParamInfo};

use super::memory::DeviceHeap;
use crate::executor::{ExecResult, LaunchDims};

pub struct CpuModule {
    globals: Vec<(String, DevPtr, u64)>,
}

impl CpuModule {
    pub fn load(_image: &[u8], _ctx: Handle, _heap: &mut DeviceHeap) -> ExecResult<CpuModule> {
        Err(CuResult::NOT_SUPPORTED)
    }

    pub fn free_globals(&self, heap: &mut DeviceHeap) {
        for (_, ptr, _) in &self.globals {
            let _ = heap.free(*ptr);
        }
    }

    pub fn kernel_params(&self, _name: &str) -> Option<Vec<ParamInfo>> {
        None
    }

    pub fn global(&self, name: &str) -> Option<(DevPtr, u64)> {
        self.globals
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, p, s)| (*p, *s))
    }

    pub fn launch(
        &self,
        _kernel: &str,
        _dims: LaunchDims,
        _params: &[u8],
        _heap: &DeviceHeap,
        _threads: usize,
    ) -> ExecResult<()> {
        Err(CuResult::NOT_SUPPORTED)
    }
}
