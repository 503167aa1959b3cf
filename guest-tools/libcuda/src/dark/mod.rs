//! `cuGetExportTable`: the undocumented tables NVIDIA's runtime asks its driver for, each
//! named by a UUID. Which tables and slots cudart 12.9 and 13.5 use, and what they must do, was
//! measured against the real runtimes (see `docs/libcuda.md`); the layouts follow ZLUDA's
//! dark-API notes. A slot this library does not know answers `CUDA_ERROR_NOT_SUPPORTED`
//! (logged), never NULL: cudart calls through slots without checking them.

pub mod integrity;

use std::ffi::{c_int, c_uint, c_void};

use netgpu_proto::cuda::{attr, CuResult};

use crate::api::{self, guard, handle_of, opaque, put, CUresult, Opaque};
use crate::state;

type Uuid = [u8; 16];

const CUDART_INTERFACE: Uuid = uuid(
    0x6BD5FB6C,
    0x5BF4,
    0xE74A,
    [0x89, 0x87, 0xD9, 0x39, 0x12, 0xFD, 0x9D, 0xF9],
);
const TOOLS_RUNTIME_CALLBACK_HOOKS: Uuid = uuid(
    0xA094798C,
    0x2E74,
    0x2E74,
    [0x93, 0xF2, 0x08, 0x00, 0x20, 0x0C, 0x0A, 0x66],
);
const TOOLS_TLS: Uuid = uuid(
    0x42D85A81,
    0x23F6,
    0xCB47,
    [0x82, 0x98, 0xF6, 0xE7, 0x8A, 0x3A, 0xEC, 0xDC],
);
const TOOLS_TLS_2: Uuid = uuid(
    0x21318C60,
    0x9714,
    0x3248,
    [0x8C, 0xA6, 0x41, 0xFF, 0x73, 0x24, 0xC8, 0xF2],
);
const CONTEXT_LOCAL_STORAGE: Uuid = uuid(
    0xC693336E,
    0x1121,
    0xDF11,
    [0xA8, 0xC3, 0x68, 0xF3, 0x55, 0xD8, 0x95, 0x93],
);
const CONTEXT_CHECKS: Uuid = uuid(
    0x263E8860,
    0x7CD2,
    0x6143,
    [0x92, 0xF6, 0xBB, 0xD5, 0x00, 0x6D, 0xFA, 0x7E],
);
const INTEGRITY_CHECK: Uuid = uuid(
    0xD4082055,
    0xBDE6,
    0x704B,
    [0x8D, 0x34, 0xBA, 0x12, 0x3C, 0x66, 0xE1, 0xF2],
);

/// A UUID as the `CUuuid` bytes cudart passes: the first three fields in the order the
/// textual form `{AAAAAAAA-BBBB-CCCC-...}` prints them, i.e. big-endian.
const fn uuid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Uuid {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[repr(C)]
struct Table<const N: usize>([*const c_void; N]);
// SAFETY: the tables are immutable arrays of function pointers and sizes.
unsafe impl<const N: usize> Sync for Table<N> {}

const fn size_of_table<const N: usize>() -> *const c_void {
    (N * std::mem::size_of::<usize>()) as *const c_void
}

/// Slots no measured runtime calls.
extern "C" fn unknown_slot() -> CUresult {
    state::unsupported("an export-table function").0
}
const UNKNOWN: *const c_void = unknown_slot as *const c_void;

static CUDART: Table<13> = Table([
    size_of_table::<13>(),
    module_from_wrapper as *const c_void,
    primary_context as *const c_void,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    module_from_wrapper_ext as *const c_void,
    UNKNOWN,
    module_from_fatbin_ext as *const c_void,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    load_compilers as *const c_void,
]);

static HOOKS: Table<7> = Table([
    size_of_table::<7>(),
    UNKNOWN,
    hooks_buffer_1 as *const c_void,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    hooks_buffer_2 as *const c_void,
]);

static TLS: Table<4> = Table([size_of_table::<4>(), UNKNOWN, UNKNOWN, UNKNOWN]);
static TLS_2: Table<8> = Table([
    size_of_table::<8>(),
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
    UNKNOWN,
]);

/// No size slot in this one.
static CLS: Table<4> = Table([
    cls_put as *const c_void,
    cls_delete as *const c_void,
    cls_get as *const c_void,
    UNKNOWN,
]);

static CHECKS: Table<4> = Table([
    size_of_table::<4>(),
    UNKNOWN,
    context_check as *const c_void,
    check_flags as *const c_void,
]);

static INTEGRITY: Table<3> = Table([
    size_of_table::<3>(),
    integrity_check as *const c_void,
    UNKNOWN,
]);

fn table(id: &Uuid) -> Option<*const c_void> {
    Some(match *id {
        CUDART_INTERFACE => CUDART.0.as_ptr().cast(),
        TOOLS_RUNTIME_CALLBACK_HOOKS => HOOKS.0.as_ptr().cast(),
        TOOLS_TLS => TLS.0.as_ptr().cast(),
        TOOLS_TLS_2 => TLS_2.0.as_ptr().cast(),
        CONTEXT_LOCAL_STORAGE => CLS.0.as_ptr().cast(),
        CONTEXT_CHECKS => CHECKS.0.as_ptr().cast(),
        INTEGRITY_CHECK => INTEGRITY.0.as_ptr().cast(),
        _ => return None,
    })
}

/// # Safety
/// `table` must be NULL or writable; `id` NULL or a 16-byte UUID.
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(out: *mut *const c_void, id: *const Uuid) -> CUresult {
    guard(|| {
        if id.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: a 16-byte CUuuid (API contract).
        let id = unsafe { id.read_unaligned() };
        let t = table(&id).ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(out, t) }
    })
}

// ---- CUDART_INTERFACE ----

/// [1]: loads a fatbin wrapper as a module into the current context.
unsafe extern "C" fn module_from_wrapper(module: *mut Opaque, wrapper: *const c_void) -> CUresult {
    // SAFETY: the wrapper is an image as cuModuleLoadData takes it.
    unsafe { api::module::cuModuleLoadData(module, wrapper) }
}

/// [6]: as [1], with arguments this library has never seen used (refused when set).
unsafe extern "C" fn module_from_wrapper_ext(
    module: *mut Opaque,
    wrapper: *const c_void,
    a: *mut c_void,
    b: *mut c_void,
    c: c_uint,
) -> CUresult {
    if !a.is_null() || !b.is_null() || c != 0 {
        return state::unsupported("CUDART_INTERFACE module load with options").0;
    }
    // SAFETY: as [1].
    unsafe { module_from_wrapper(module, wrapper) }
}

/// [8]: loads a fatbin (not a wrapper).
unsafe extern "C" fn module_from_fatbin_ext(
    fatbin: *const c_void,
    module: *mut Opaque,
    a: *mut c_void,
    b: *mut c_void,
    c: c_uint,
) -> CUresult {
    if !a.is_null() || !b.is_null() || c != 0 {
        return state::unsupported("CUDART_INTERFACE module load with options").0;
    }
    // SAFETY: a fatbin is an image as cuModuleLoadData takes it.
    unsafe { api::module::cuModuleLoadData(module, fatbin) }
}

/// [2]: the device's primary context, without retaining it (the same handle
/// `cuDevicePrimaryCtxRetain` returns).
unsafe extern "C" fn primary_context(pctx: *mut Opaque, dev: c_int) -> CUresult {
    guard(|| {
        let drv = state::driver()?;
        if dev != 0 {
            return Err(CuResult::INVALID_DEVICE);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(pctx, opaque(drv.primary.id)) }
    })
}

/// [12]: the driver would load its PTX compiler and NVVM here; the backend compiles, so
/// there is nothing to load.
extern "C" fn load_compilers() -> CUresult {
    0
}

// ---- TOOLS_RUNTIME_CALLBACK_HOOKS ----

/// Buffers the runtime hands to profiling tools; no tool is attached, so they stay zero. They
/// are larger than the counts reported, whatever unit the runtime counts in.
struct HookBuffer<const N: usize>(std::cell::UnsafeCell<[u64; N]>);
// SAFETY: only cudart writes these, and only as opaque storage of its own.
unsafe impl<const N: usize> Sync for HookBuffer<N> {}
static HOOK_BUFFER_1: HookBuffer<1024> = HookBuffer(std::cell::UnsafeCell::new([0; 1024]));
static HOOK_BUFFER_2: HookBuffer<64> = HookBuffer(std::cell::UnsafeCell::new([0; 64]));

unsafe extern "C" fn hooks_buffer_1(buf: *mut *mut c_void, n: *mut usize) {
    // SAFETY: the caller's out-pointers (cudart always passes both).
    unsafe {
        if !buf.is_null() && !n.is_null() {
            *buf = HOOK_BUFFER_1.0.get().cast();
            *n = 1024;
        }
    }
}

unsafe extern "C" fn hooks_buffer_2(buf: *mut *mut c_void, n: *mut usize) {
    // SAFETY: as above.
    unsafe {
        if !buf.is_null() && !n.is_null() {
            *buf = HOOK_BUFFER_2.0.get().cast();
            *n = 14;
        }
    }
}

// ---- CONTEXT_LOCAL_STORAGE ----

fn cls_ctx(ctx: Opaque) -> Result<std::sync::Arc<state::Context>, CuResult> {
    let drv = state::driver()?;
    if ctx.is_null() {
        state::current_context()
    } else {
        drv.context(handle_of(ctx))
    }
}

extern "C" fn cls_put(
    ctx: Opaque,
    key: *mut c_void,
    value: *mut c_void,
    dtor: Option<state::ClsDtor>,
) -> CUresult {
    guard(|| {
        cls_ctx(ctx)?.cls_put(key as usize, value as usize, dtor);
        Ok(())
    })
}

extern "C" fn cls_delete(ctx: Opaque, key: *mut c_void) -> CUresult {
    guard(|| {
        if cls_ctx(ctx)?.cls_delete(key as usize) {
            Ok(())
        } else {
            Err(CuResult::INVALID_HANDLE)
        }
    })
}

unsafe extern "C" fn cls_get(value: *mut *mut c_void, ctx: Opaque, key: *mut c_void) -> CUresult {
    guard(|| {
        let v = cls_ctx(ctx)?
            .cls_get(key as usize)
            .ok_or(CuResult::INVALID_HANDLE)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(value, v as *mut c_void) }
    })
}

// ---- CONTEXT_CHECKS ----

/// [2]: flags this library never sets (all zero), as the driver reports for an ordinary
/// context.
unsafe extern "C" fn context_check(
    _ctx: Opaque,
    flags: *mut c_uint,
    extra: *mut *const c_void,
) -> CUresult {
    // SAFETY: the caller's out-pointers, each optional.
    unsafe {
        if !flags.is_null() {
            *flags = 0;
        }
        if !extra.is_null() {
            *extra = std::ptr::null();
        }
    }
    0
}

/// [3]: no checks are requested.
extern "C" fn check_flags() -> c_uint {
    0
}

// ---- INTEGRITY_CHECK ----

extern "C" {
    fn pthread_self() -> libc::pthread_t;
}

/// The facts as this process reports them through the API.
fn facts(version: u32, unix_seconds: u64) -> Result<integrity::Facts, CuResult> {
    let drv = state::driver()?;
    let a = |n: u32| api::device::attribute(&drv.info, n as c_int);
    let device = integrity::DeviceFacts {
        uuid: drv.info.uuid,
        pci_domain: a(api::device::PCI_DOMAIN_ID)?,
        pci_bus: a(attr::PCI_BUS_ID)?,
        pci_device: a(attr::PCI_DEVICE_ID)?,
    };
    Ok(integrity::Facts {
        driver_version: api::device::DRIVER_VERSION as u32,
        version,
        pid: std::process::id(),
        // SAFETY: pthread_self has no preconditions.
        thread: unsafe { pthread_self() } as u32,
        cudart_table: CUDART.0.as_ptr() as u64,
        integrity_table: INTEGRITY.0.as_ptr() as u64,
        function: INTEGRITY.0[1] as u64,
        unix_seconds,
        devices: vec![device],
    })
}

unsafe extern "C" fn integrity_check(
    version: c_uint,
    unix_seconds: u64,
    out: *mut [u64; 2],
) -> CUresult {
    guard(|| {
        let h = integrity::hash(&facts(version, unix_seconds)?);
        // SAFETY: the caller's out-pointer.
        unsafe { put(out, h) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_the_bytes_cudart_passes() {
        assert_eq!(
            CUDART_INTERFACE,
            [
                0x6B, 0xD5, 0xFB, 0x6C, 0x5B, 0xF4, 0xE7, 0x4A, 0x89, 0x87, 0xD9, 0x39, 0x12, 0xFD,
                0x9D, 0xF9
            ]
        );
        assert_eq!(INTEGRITY_CHECK[..4], [0xD4, 0x08, 0x20, 0x55]);
    }

    #[test]
    fn every_table_cudart_requests_is_there_and_has_no_null_slot() {
        for id in [
            CUDART_INTERFACE,
            TOOLS_RUNTIME_CALLBACK_HOOKS,
            TOOLS_TLS,
            TOOLS_TLS_2,
            CONTEXT_LOCAL_STORAGE,
            CONTEXT_CHECKS,
            INTEGRITY_CHECK,
        ] {
            let mut t = std::ptr::null();
            // SAFETY: valid out-pointer and UUID.
            assert_eq!(unsafe { cuGetExportTable(&mut t, &id) }, 0);
            assert!(!t.is_null());
        }
        for slots in [
            &CUDART.0[..],
            &HOOKS.0,
            &TLS.0,
            &TLS_2.0,
            &CLS.0,
            &CHECKS.0,
            &INTEGRITY.0,
        ] {
            assert!(slots.iter().all(|s| !s.is_null()));
        }
        // The sizes cudart reads.
        assert!(HOOKS.0[0] as usize >= 56);
        assert_eq!(CUDART.0[0] as usize, 13 * 8);
        let mut t = std::ptr::null();
        let unknown = [0u8; 16];
        // SAFETY: valid out-pointer and UUID.
        let r = unsafe { cuGetExportTable(&mut t, &unknown) };
        assert_eq!(r, CuResult::INVALID_VALUE.0);
    }

    #[test]
    fn the_hook_buffers_are_large_enough_for_both_runtimes() {
        let (mut b, mut n) = (std::ptr::null_mut(), 0usize);
        // SAFETY: valid out-pointers.
        unsafe { hooks_buffer_1(&mut b, &mut n) };
        assert!(n >= 567 && !b.is_null());
        // SAFETY: as above.
        unsafe { hooks_buffer_2(&mut b, &mut n) };
        assert!(n >= 14);
    }
}
