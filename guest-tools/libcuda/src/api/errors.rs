//! `cuGetErrorName` / `cuGetErrorString`: static NUL-terminated strings for every code.

use std::ffi::{c_char, CStr};

use netgpu_proto::cuda::CuResult;

use super::{guard, put, CUresult};

fn name(code: u32) -> Option<&'static CStr> {
    Some(match code {
        0 => c"CUDA_SUCCESS",
        1 => c"CUDA_ERROR_INVALID_VALUE",
        2 => c"CUDA_ERROR_OUT_OF_MEMORY",
        3 => c"CUDA_ERROR_NOT_INITIALIZED",
        4 => c"CUDA_ERROR_DEINITIALIZED",
        34 => c"CUDA_ERROR_STUB_LIBRARY",
        46 => c"CUDA_ERROR_DEVICE_UNAVAILABLE",
        100 => c"CUDA_ERROR_NO_DEVICE",
        101 => c"CUDA_ERROR_INVALID_DEVICE",
        200 => c"CUDA_ERROR_INVALID_IMAGE",
        201 => c"CUDA_ERROR_INVALID_CONTEXT",
        209 => c"CUDA_ERROR_NO_BINARY_FOR_GPU",
        218 => c"CUDA_ERROR_INVALID_PTX",
        222 => c"CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        300 => c"CUDA_ERROR_INVALID_SOURCE",
        301 => c"CUDA_ERROR_FILE_NOT_FOUND",
        304 => c"CUDA_ERROR_OPERATING_SYSTEM",
        400 => c"CUDA_ERROR_INVALID_HANDLE",
        401 => c"CUDA_ERROR_ILLEGAL_STATE",
        500 => c"CUDA_ERROR_NOT_FOUND",
        600 => c"CUDA_ERROR_NOT_READY",
        700 => c"CUDA_ERROR_ILLEGAL_ADDRESS",
        701 => c"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        702 => c"CUDA_ERROR_LAUNCH_TIMEOUT",
        709 => c"CUDA_ERROR_CONTEXT_IS_DESTROYED",
        710 => c"CUDA_ERROR_ASSERT",
        714 => c"CUDA_ERROR_HARDWARE_STACK_ERROR",
        715 => c"CUDA_ERROR_ILLEGAL_INSTRUCTION",
        716 => c"CUDA_ERROR_MISALIGNED_ADDRESS",
        717 => c"CUDA_ERROR_INVALID_ADDRESS_SPACE",
        718 => c"CUDA_ERROR_INVALID_PC",
        719 => c"CUDA_ERROR_LAUNCH_FAILED",
        800 => c"CUDA_ERROR_NOT_PERMITTED",
        801 => c"CUDA_ERROR_NOT_SUPPORTED",
        900 => c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        901 => c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        902 => c"CUDA_ERROR_STREAM_CAPTURE_MERGE",
        903 => c"CUDA_ERROR_STREAM_CAPTURE_UNMATCHED",
        904 => c"CUDA_ERROR_STREAM_CAPTURE_UNJOINED",
        905 => c"CUDA_ERROR_STREAM_CAPTURE_ISOLATION",
        906 => c"CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
        907 => c"CUDA_ERROR_CAPTURED_EVENT",
        908 => c"CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
        910 => c"CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE",
        999 => c"CUDA_ERROR_UNKNOWN",
        _ => return None,
    })
}

fn description(code: u32) -> Option<&'static CStr> {
    Some(match code {
        0 => c"no error",
        1 => c"invalid argument",
        2 => c"out of memory",
        3 => c"initialization error",
        46 => {
            c"CUDA-capable device(s) is/are busy or unavailable (netgpu: backend connection lost)"
        }
        100 => c"no CUDA-capable device is detected (netgpu: no device node or backend)",
        101 => c"invalid device ordinal",
        200 => c"device kernel image is invalid",
        201 => c"invalid device context",
        218 => c"a PTX JIT compilation failed",
        400 => c"invalid resource handle",
        500 => c"named symbol not found",
        600 => c"device not ready",
        700 => c"an illegal memory access was encountered",
        716 => c"misaligned address",
        719 => c"unspecified launch failure",
        801 => c"operation not supported",
        900 => c"operation not permitted when stream is capturing",
        901 => c"operation failed due to a previous error during capture",
        904 => c"capture was not joined into the origin stream before it ended",
        907 => c"operation not permitted on an event last recorded in a capturing stream",
        908 => c"attempt to terminate a thread-local capture sequence from another thread",
        _ => return name(code),
    })
}

/// # Safety
/// `p_str` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, p_str: *mut *const c_char) -> CUresult {
    guard(|| {
        let s = name(error).ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: the caller's out-pointer, checked for NULL by `put`.
        unsafe { put(p_str, s.as_ptr()) }
    })
}

/// # Safety
/// `p_str` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, p_str: *mut *const c_char) -> CUresult {
    guard(|| {
        let s = description(error).ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: as above.
        unsafe { put(p_str, s.as_ptr()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_the_protocol_crate() {
        for code in [
            0u32, 1, 2, 3, 46, 100, 201, 218, 400, 500, 600, 700, 716, 719, 801, 999,
        ] {
            let ours = name(code).unwrap().to_str().unwrap();
            assert_eq!(ours, CuResult(code).name(), "code {code}");
        }
        assert!(name(123_456).is_none());
    }
}
