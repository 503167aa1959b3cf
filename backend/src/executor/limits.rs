//! The validation rules of the driver API that both executors apply before work is queued, so
//! an invalid request fails in the call that made it, with the driver's error code.
//!
//! - launches: grid and block against the device's limits (`INVALID_VALUE`), the block against
//!   the function's own limit (`LAUNCH_OUT_OF_RESOURCES`), dynamic shared memory against the
//!   function's `MAX_DYNAMIC_SHARED_SIZE_BYTES` (`INVALID_VALUE`), the parameter buffer against
//!   the kernel's layout and CUDA's 32 764-byte parameter space (`INVALID_VALUE`);
//! - pitched copies: every row of every slice inside one allocation (checked on the whole span,
//!   with overflow-checked arithmetic), width within the pitch, pitch within `MAX_PITCH`.

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Copy3D, DevPtr, MemLoc, ParamInfo};

use super::ExecResult;

/// CUDA's kernel parameter space: at most 32 764 bytes of parameters (CUDA 12.1+, Volta+).
pub const MAX_PARAM_BYTES: u32 = 32_764;
/// Grid limits of every CUDA device since compute capability 3.0.
pub const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65_535, 65_535];
/// Block limits of every CUDA device since compute capability 2.0.
pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
/// Largest pitch of a pitched copy both executors accept (`CU_DEVICE_ATTRIBUTE_MAX_PITCH`).
pub const MAX_PITCH: u64 = i32::MAX as u64;

/// Geometry of a kernel launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

impl LaunchDims {
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&d| u64::from(d)).product()
    }

    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&d| u64::from(d)).product()
    }
}

/// What one function allows (from its attributes).
#[derive(Clone, Copy, Debug)]
pub struct FunctionLimits {
    /// `MAX_THREADS_PER_BLOCK` of the function.
    pub max_threads: u32,
    /// `MAX_DYNAMIC_SHARED_SIZE_BYTES` of the function.
    pub max_dynamic_shared: u32,
}

/// Checks a launch's geometry and shared memory.
pub fn check_launch(
    dims: &LaunchDims,
    device_max_threads: u32,
    f: &FunctionLimits,
) -> ExecResult<()> {
    for i in 0..3 {
        if dims.grid[i] == 0
            || dims.block[i] == 0
            || dims.grid[i] > MAX_GRID[i]
            || dims.block[i] > MAX_BLOCK[i]
        {
            return Err(CuResult::INVALID_VALUE);
        }
    }
    let threads = dims.threads_per_block();
    if threads > u64::from(device_max_threads) {
        return Err(CuResult::INVALID_VALUE);
    }
    if threads > u64::from(f.max_threads) {
        return Err(CuResult::LAUNCH_OUT_OF_RESOURCES);
    }
    if dims.shared_mem_bytes > f.max_dynamic_shared {
        return Err(CuResult::INVALID_VALUE);
    }
    Ok(())
}

/// Bytes the kernel's parameters span (`offset + size` of the last one), overflow-checked.
pub fn param_span(params: &[ParamInfo]) -> ExecResult<u32> {
    params.iter().try_fold(0u32, |acc, p| {
        p.offset
            .checked_add(p.size)
            .map(|end| acc.max(end))
            .ok_or(CuResult::INVALID_VALUE)
    })
}

/// Checks a parameter buffer against the kernel's layout and the parameter space.
pub fn check_params(buffer_len: usize, span: u32) -> ExecResult<()> {
    if buffer_len > MAX_PARAM_BYTES as usize || span > MAX_PARAM_BYTES {
        return Err(CuResult::INVALID_VALUE);
    }
    if buffer_len < span as usize {
        return Err(CuResult::INVALID_VALUE);
    }
    Ok(())
}

/// The device side of a pitched copy, validated: rows of `width` bytes at
/// `base + z * slice + y * pitch`, all inside `[base, base + span)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pitched {
    pub base: DevPtr,
    pub pitch: u64,
    pub slice: u64,
    /// From `base` to one past the last byte of the last row.
    pub span: u64,
}

impl Pitched {
    /// Offset from `base` of row `y` of slice `z`.
    pub fn row(&self, y: u64, z: u64) -> u64 {
        z * self.slice + y * self.pitch
    }
}

/// The validated geometry of a 3D copy: its shape and the device side(s).
#[derive(Clone, Copy, Debug)]
pub struct Copy3DPlan {
    pub width: u64,
    pub height: u64,
    pub depth: u64,
    pub src: Option<Pitched>,
    pub dst: Option<Pitched>,
}

impl Copy3DPlan {
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0 || self.depth == 0
    }

    /// Bytes of packed host data.
    pub fn packed_len(&self) -> u64 {
        self.width * self.height * self.depth
    }
}

fn pitched(loc: MemLoc, width: u64, height: u64, depth: u64) -> ExecResult<Option<Pitched>> {
    let MemLoc::Device {
        ptr,
        pitch,
        height: loc_height,
    } = loc
    else {
        return Ok(None);
    };
    if pitch < width || pitch > MAX_PITCH || (depth > 1 && loc_height < height) {
        return Err(CuResult::INVALID_VALUE);
    }
    let bad = CuResult::INVALID_VALUE;
    let slice = pitch.checked_mul(loc_height).ok_or(bad)?;
    // Last row: slice depth-1, row height-1; the span ends `width` bytes into it.
    let last = (depth - 1)
        .checked_mul(slice)
        .and_then(|a| {
            (height - 1)
                .checked_mul(pitch)
                .and_then(|b| a.checked_add(b))
        })
        .ok_or(bad)?;
    let span = last.checked_add(width).ok_or(bad)?;
    ptr.checked_add(span).ok_or(bad)?;
    Ok(Some(Pitched {
        base: ptr,
        pitch,
        slice,
        span,
    }))
}

/// Validates a 3D copy's geometry (not yet against memory: each side's `[base, base+span)`
/// must then lie in one allocation). An empty copy (a zero dimension) is valid and does
/// nothing; a host-to-host copy is the client's business (`INVALID_VALUE`).
pub fn plan_copy_3d(c: &Copy3D) -> ExecResult<Copy3DPlan> {
    if matches!((c.src, c.dst), (MemLoc::Host, MemLoc::Host)) {
        return Err(CuResult::INVALID_VALUE);
    }
    let packed = c.packed_len().ok_or(CuResult::INVALID_VALUE)?;
    if c.width == 0 || c.height == 0 || c.depth == 0 {
        return Ok(Copy3DPlan {
            width: c.width,
            height: c.height,
            depth: c.depth,
            src: None,
            dst: None,
        });
    }
    let _ = packed;
    Ok(Copy3DPlan {
        width: c.width,
        height: c.height,
        depth: c.depth,
        src: pitched(c.src, c.width, c.height, c.depth)?,
        dst: pitched(c.dst, c.width, c.height, c.depth)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FunctionLimits = FunctionLimits {
        max_threads: 1024,
        max_dynamic_shared: 48 * 1024,
    };

    fn dims(grid: [u32; 3], block: [u32; 3], shared: u32) -> LaunchDims {
        LaunchDims {
            grid,
            block,
            shared_mem_bytes: shared,
        }
    }

    #[test]
    fn launch_limits_use_the_drivers_codes() {
        assert_eq!(
            check_launch(&dims([1, 1, 1], [1024, 1, 1], 0), 1024, &F),
            Ok(())
        );
        let e = Err(CuResult::INVALID_VALUE);
        assert_eq!(check_launch(&dims([0, 1, 1], [1, 1, 1], 0), 1024, &F), e);
        assert_eq!(
            check_launch(&dims([1, 65_536, 1], [1, 1, 1], 0), 1024, &F),
            e
        );
        assert_eq!(check_launch(&dims([1, 1, 1], [1, 1, 65], 0), 1024, &F), e);
        assert_eq!(check_launch(&dims([1, 1, 1], [32, 33, 1], 0), 1024, &F), e);
        assert_eq!(
            check_launch(&dims([1, 1, 1], [1, 1, 1], 48 * 1024 + 1), 1024, &F),
            e
        );
        let small = FunctionLimits {
            max_threads: 256,
            ..F
        };
        assert_eq!(
            check_launch(&dims([1, 1, 1], [512, 1, 1], 0), 1024, &small),
            Err(CuResult::LAUNCH_OUT_OF_RESOURCES)
        );
        assert_eq!(
            check_launch(&dims([u32::MAX, 1, 1], [1, 1, 1], 0), 1024, &F),
            e,
            "grid x beyond 2^31-1"
        );
    }

    #[test]
    fn parameter_layouts_never_overflow() {
        let p = |offset, size| ParamInfo { offset, size };
        assert_eq!(param_span(&[p(0, 8), p(8, 4)]), Ok(12));
        assert_eq!(
            param_span(&[p(u32::MAX - 2, 8)]),
            Err(CuResult::INVALID_VALUE)
        );
        assert_eq!(check_params(12, 12), Ok(()));
        assert_eq!(check_params(8, 12), Err(CuResult::INVALID_VALUE));
        assert_eq!(
            check_params(MAX_PARAM_BYTES as usize + 1, 0),
            Err(CuResult::INVALID_VALUE)
        );
        assert_eq!(check_params(0, 40_000), Err(CuResult::INVALID_VALUE));
    }

    fn dev(ptr: u64, pitch: u64, height: u64) -> MemLoc {
        MemLoc::Device { ptr, pitch, height }
    }

    #[test]
    fn pitched_spans_cover_every_row_and_overflow_is_refused() {
        let c = Copy3D {
            src: MemLoc::Host,
            dst: dev(0x1000, 64, 4),
            width: 10,
            height: 3,
            depth: 2,
        };
        let p = plan_copy_3d(&c).unwrap();
        let d = p.dst.unwrap();
        assert_eq!(d.slice, 256);
        assert_eq!(d.span, 256 + 2 * 64 + 10);
        assert_eq!(d.row(2, 1), 256 + 128);
        assert_eq!(p.packed_len(), 60);
        let wide = Copy3D { width: 65, ..c };
        assert!(plan_copy_3d(&wide).is_err(), "width beyond pitch");
        let huge = Copy3D {
            dst: dev(0x1000, MAX_PITCH, u64::MAX / 2),
            depth: 3,
            ..c
        };
        assert!(plan_copy_3d(&huge).is_err(), "slice arithmetic overflows");
        let wrap = Copy3D {
            dst: dev(u64::MAX - 16, 64, 4),
            ..c
        };
        assert!(plan_copy_3d(&wrap).is_err(), "span wraps the address space");
        let short = Copy3D {
            dst: dev(0x1000, 64, 2),
            ..c
        };
        assert!(
            plan_copy_3d(&short).is_err(),
            "slice height below the copy's"
        );
        let h2h = Copy3D {
            dst: MemLoc::Host,
            ..c
        };
        assert!(plan_copy_3d(&h2h).is_err());
        let empty = Copy3D { width: 0, ..c };
        assert!(plan_copy_3d(&empty).unwrap().is_empty());
        let overflow = Copy3D {
            width: u64::MAX,
            height: 2,
            ..c
        };
        assert!(plan_copy_3d(&overflow).is_err());
    }
}
