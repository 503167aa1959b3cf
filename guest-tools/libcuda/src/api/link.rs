//! The JIT linker (`cuLink*`) and the JIT options of `cuModuleLoadDataEx`.
//!
//! A link session collects its inputs (PTX, cubins, fatbins) in the guest; `cuLinkComplete`
//! makes the image the program then passes to `cuModuleLoadData[Ex]`, which sends it to the
//! backend like any other image. The backend's executor does the real linking (the CUDA
//! executor with the GPU driver's own linker, the CPU executor with the PTX executor's), so
//! nothing is compiled here and linking costs no round trip. A session with one input (what
//! Numba makes for a kernel) completes to that input as it is; several become one netgpu link
//! container (`netgpu_image::link`).
//!
//! Option values (`CU_JIT_*_LOG_BUFFER*`, `CU_JIT_WALL_TIME`) are written back as the driver
//! API defines: the option arrays of `cuLinkCreate` stay valid for the life of the session.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use netgpu_proto::cuda::CuResult;

use super::{guard, put, CUresult, Opaque, R};
use netgpu_image::link::LinkPart;
use netgpu_image::{PartKind, Role};

use crate::state::lock;

/// `CUjit_option` values this library reads or writes.
mod opt {
    pub const WALL_TIME: i32 = 2;
    pub const INFO_LOG_BUFFER: i32 = 3;
    pub const INFO_LOG_BUFFER_SIZE_BYTES: i32 = 4;
    pub const ERROR_LOG_BUFFER: i32 = 5;
    pub const ERROR_LOG_BUFFER_SIZE_BYTES: i32 = 6;
    /// One past the last `CUjit_option` of CUDA 13.5 (`CU_JIT_NUM_OPTIONS`).
    pub const NUM_OPTIONS: i32 = 35;
}

/// A `CUjitInputType` as the kind of a link part; NVVM IR (5, link-time optimisation) has no
/// executor here.
pub fn input_kind(t: c_int) -> Result<PartKind, CuResult> {
    match t {
        5 => Err(CuResult::NOT_SUPPORTED),
        t => u32::try_from(t)
            .ok()
            .and_then(PartKind::from_jit_input_type)
            .ok_or(CuResult::INVALID_VALUE),
    }
}

/// One input of a link session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub kind: PartKind,
    pub name: String,
    /// PTX without its terminating NUL; binary images whole.
    pub data: Vec<u8>,
}

/// A log buffer the caller passed: where to write, its capacity, and the option value slot
/// that receives the length written.
#[derive(Clone, Copy, Debug)]
struct LogSink {
    buf: usize,
    cap: usize,
    size_slot: usize,
}

impl LogSink {
    /// Writes `text` (cut to the capacity, NUL-terminated) and its length.
    fn write(&self, text: &str) {
        let n = text.len().min(self.cap.saturating_sub(1));
        // SAFETY: `buf` holds `cap` bytes and `size_slot` is the caller's option value slot,
        // both valid for the life of the report (the driver API's contract); `n < cap`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), self.buf as *mut u8, n);
            *(self.buf as *mut u8).add(n) = 0;
            *(self.size_slot as *mut usize) = n;
        }
    }
}

/// Where a session (or a `cuModuleLoadDataEx` call) reports back: the caller's option
/// value slots.
#[derive(Debug, Default)]
pub struct JitReport {
    info: Option<LogSink>,
    error: Option<LogSink>,
    wall_time: Option<usize>,
}

// SAFETY: a report only holds addresses of the caller's option values and log buffers, which
// the driver API requires to stay valid (for a link session: until `cuLinkDestroy`); the
// library writes through them only inside the API calls that own them.
unsafe impl Send for JitReport {}

impl JitReport {
    /// Reads the JIT options a caller passed. Options other than the logs and the wall time
    /// (targets, optimisation levels, caching, ...) steer a compiler that runs on the
    /// backend, for its own GPU, and are accepted.
    ///
    /// # Safety
    /// `options` and `values` must be NULL or hold `n` entries each, valid for the life of the
    /// report (the driver API's contract).
    pub unsafe fn new(
        n: c_uint,
        options: *const c_int,
        values: *mut *mut c_void,
    ) -> Result<Self, CuResult> {
        let mut r = JitReport::default();
        if n == 0 {
            return Ok(r);
        }
        if options.is_null() || values.is_null() || n > 1024 {
            return Err(CuResult::INVALID_VALUE);
        }
        let (mut info, mut info_len, mut err, mut err_len) = (0, None, 0, None);
        for i in 0..n as usize {
            // SAFETY: `n` entries each (the caller's guarantee).
            let (o, slot) = unsafe { (*options.add(i), values.add(i)) };
            if !(0..opt::NUM_OPTIONS).contains(&o) {
                return Err(CuResult::INVALID_VALUE);
            }
            // SAFETY: as above.
            let v = unsafe { *slot } as usize;
            match o {
                opt::WALL_TIME => r.wall_time = Some(slot as usize),
                opt::INFO_LOG_BUFFER => info = v,
                opt::INFO_LOG_BUFFER_SIZE_BYTES => info_len = Some((slot as usize, v as u32)),
                opt::ERROR_LOG_BUFFER => err = v,
                opt::ERROR_LOG_BUFFER_SIZE_BYTES => err_len = Some((slot as usize, v as u32)),
                _ => {}
            }
        }
        let sink = |buf: usize, len: Option<(usize, u32)>| {
            let (size_slot, cap) = len?;
            if buf == 0 || cap == 0 {
                // No buffer to fill: nothing is written.
                // SAFETY: the caller's option value slot.
                unsafe { *(size_slot as *mut usize) = 0 };
                return None;
            }
            Some(LogSink {
                buf,
                cap: cap as usize,
                size_slot,
            })
        };
        r.info = sink(info, info_len);
        r.error = sink(err, err_len);
        Ok(r)
    }

    /// Reports a finished step: its info log (the error log is emptied) and its time.
    pub fn done(&self, info: &str, since: Instant) {
        if let Some(s) = self.info {
            s.write(info);
        }
        if let Some(s) = self.error {
            s.write("");
        }
        self.time(since);
    }

    /// Reports a failed step: `error` in the error log (also on stderr, where a program that
    /// reads no log still shows it).
    pub fn failed(&self, error: &str, since: Instant) {
        crate::log(error);
        if let Some(s) = self.error {
            s.write(error);
        }
        self.time(since);
    }

    fn time(&self, since: Instant) {
        if let Some(slot) = self.wall_time {
            let ms = since.elapsed().as_secs_f32() * 1000.0;
            // SAFETY: the caller's option value slot; CU_JIT_WALL_TIME's value is a float
            // stored in the slot's first bytes.
            unsafe { (slot as *mut f32).write_unaligned(ms) };
        }
    }
}

/// A link session: its inputs, its report, and its output once complete (kept until
/// `cuLinkDestroy`, as the driver API promises the program).
#[derive(Debug)]
struct Session {
    report: JitReport,
    inputs: Vec<Input>,
    output: Option<Vec<u8>>,
}

static SESSIONS: Mutex<Option<HashMap<u64, Session>>> = Mutex::new(None);
static NEXT: AtomicU64 = AtomicU64::new(1);

fn with_session<T>(
    state: Opaque,
    f: impl FnOnce(&mut Session) -> Result<T, CuResult>,
) -> Result<T, CuResult> {
    let mut all = lock(&SESSIONS);
    let s = all
        .as_mut()
        .and_then(|m| m.get_mut(&(state as usize as u64)))
        .ok_or(CuResult::INVALID_HANDLE)?;
    f(s)
}

/// The image a link of `inputs` makes, or why there is none. One PTX, cubin, fatbin or link
/// container is its own result; anything else becomes a netgpu link container of the inputs
/// (`netgpu_image::link`), which the backend's executor links when the program loads it.
pub fn link(inputs: &[Input]) -> Result<Vec<u8>, (CuResult, String)> {
    match inputs {
        [] => Err((
            CuResult::INVALID_VALUE,
            "cuLinkComplete: nothing was added to the link".into(),
        )),
        [one] if one.kind == PartKind::Ptx => {
            let mut text = one.data.clone();
            text.push(0);
            Ok(text)
        }
        [one]
            if matches!(
                one.kind,
                PartKind::Cubin | PartKind::Fatbin | PartKind::Link
            ) =>
        {
            Ok(one.data.clone())
        }
        many => {
            let parts: Vec<LinkPart<'_>> = many
                .iter()
                .map(|i| LinkPart {
                    kind: i.kind,
                    role: Role::Input,
                    name: &i.name,
                    data: &i.data,
                })
                .collect();
            netgpu_image::link::encode(&parts)
                .map_err(|e| (e.cu_result(), format!("cuLinkComplete: {e}")))
        }
    }
}

/// An input as the session keeps it: PTX up to its NUL (or its size), binary images by the
/// size given. A PTX, cubin, fatbin or link container is recognised by its contents
/// (`netgpu_image::detect`), so the output of an earlier link (PTX, or a link container) can
/// be added back as a "cubin"; host objects and libraries are taken as declared.
fn input(kind: PartKind, data: &[u8], name: String) -> Result<Input, (CuResult, String)> {
    use netgpu_image::ImageKind;
    let text = data.split(|b| *b == 0).next().unwrap_or(&[]);
    let kind = match (kind, netgpu_image::detect(data)) {
        (PartKind::Object, Some(ImageKind::HostObject)) => PartKind::Object,
        (PartKind::Library, Some(ImageKind::Library)) => PartKind::Library,
        (PartKind::Object | PartKind::Library, _) => {
            return Err((
                CuResult::INVALID_IMAGE,
                format!("{name}: not a host object or library"),
            ))
        }
        (_, Some(ImageKind::Cubin)) => PartKind::Cubin,
        (_, Some(ImageKind::Fatbin)) => PartKind::Fatbin,
        (_, Some(ImageKind::LinkContainer)) => PartKind::Link,
        (_, Some(ImageKind::Ptx)) if !text.is_empty() => PartKind::Ptx,
        _ => {
            return Err((
                CuResult::INVALID_IMAGE,
                format!("{name}: neither PTX text nor a cubin, fatbin or link container"),
            ))
        }
    };
    let data = if kind == PartKind::Ptx {
        text.to_vec()
    } else {
        data.to_vec()
    };
    Ok(Input { kind, name, data })
}

fn c_str(p: *const c_char) -> Option<String> {
    // SAFETY: NULL or a NUL-terminated string (the API contract).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// # Safety
/// The option arrays must hold `num_options` entries and stay valid until `cuLinkDestroy`;
/// `state_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuLinkCreate_v2(
    num_options: c_uint,
    options: *mut c_int,
    values: *mut *mut c_void,
    state_out: *mut Opaque,
) -> CUresult {
    guard(|| {
        if state_out.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        crate::state::current()?;
        // SAFETY: the caller's option arrays (contract above).
        let report = unsafe { JitReport::new(num_options, options, values) }?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        lock(&SESSIONS).get_or_insert_with(HashMap::new).insert(
            id,
            Session {
                report,
                inputs: Vec::new(),
                output: None,
            },
        );
        // SAFETY: checked above.
        unsafe { put(state_out, id as usize as Opaque) }
    })
}

/// # Safety
/// As [`cuLinkCreate_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuLinkCreate(
    num_options: c_uint,
    options: *mut c_int,
    values: *mut *mut c_void,
    state_out: *mut Opaque,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLinkCreate_v2(num_options, options, values, state_out) }
}

fn add(state: Opaque, kind: c_int, data: &[u8], name: String) -> R {
    let started = Instant::now();
    with_session(state, |s| {
        let kind = input_kind(kind).inspect_err(|e| {
            if *e == CuResult::NOT_SUPPORTED {
                s.report.failed(&format!("{name}: NVVM IR (link-time optimisation) is not supported; link PTX instead"), started);
            }
        })?;
        match input(kind, data, name) {
            Ok(i) => {
                s.report.done("", started);
                s.inputs.push(i);
                Ok(())
            }
            Err((e, msg)) => {
                s.report.failed(&msg, started);
                Err(e)
            }
        }
    })
}

/// Per-input JIT options are accepted (they steer the backend's compiler).
///
/// # Safety
/// `data` must hold `size` bytes; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuLinkAddData_v2(
    state: Opaque,
    kind: c_int,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    _num_options: c_uint,
    _options: *mut c_int,
    _values: *mut *mut c_void,
) -> CUresult {
    guard(|| {
        if data.is_null() || size == 0 || size > 1 << 31 {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: `size` bytes at `data` (the caller's guarantee).
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
        add(
            state,
            kind,
            bytes,
            c_str(name).unwrap_or_else(|| "<data>".into()),
        )
    })
}

/// # Safety
/// As [`cuLinkAddData_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuLinkAddData(
    state: Opaque,
    kind: c_int,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    num_options: c_uint,
    options: *mut c_int,
    values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLinkAddData_v2(state, kind, data, size, name, num_options, options, values) }
}

/// # Safety
/// `path` must be NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuLinkAddFile_v2(
    state: Opaque,
    kind: c_int,
    path: *const c_char,
    _num_options: c_uint,
    _options: *mut c_int,
    _values: *mut *mut c_void,
) -> CUresult {
    guard(|| {
        let path = c_str(path).ok_or(CuResult::INVALID_VALUE)?;
        let bytes = std::fs::read(&path).map_err(|_| CuResult::FILE_NOT_FOUND)?;
        add(state, kind, &bytes, path)
    })
}

/// # Safety
/// As [`cuLinkAddFile_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuLinkAddFile(
    state: Opaque,
    kind: c_int,
    path: *const c_char,
    num_options: c_uint,
    options: *mut c_int,
    values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuLinkAddFile_v2(state, kind, path, num_options, options, values) }
}

/// # Safety
/// `image_out` and `size_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuLinkComplete(
    state: Opaque,
    image_out: *mut *mut c_void,
    size_out: *mut usize,
) -> CUresult {
    guard(|| {
        if image_out.is_null() || size_out.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let started = Instant::now();
        with_session(state, |s| {
            let out = match link(&s.inputs) {
                Ok(out) => out,
                Err((e, msg)) => {
                    s.report.failed(&msg, started);
                    return Err(e);
                }
            };
            s.report.done(
                &format!("netgpu: {} input(s) linked; the backend compiles the image for its GPU at load", s.inputs.len()),
                started,
            );
            let out = s.output.insert(out);
            // SAFETY: the caller's out-pointers, checked above; the image lives in the
            // session until cuLinkDestroy.
            unsafe {
                put(image_out, out.as_mut_ptr().cast())?;
                put(size_out, out.len())
            }
        })
    })
}

#[no_mangle]
pub extern "C" fn cuLinkDestroy(state: Opaque) -> CUresult {
    guard(|| {
        lock(&SESSIONS)
            .as_mut()
            .and_then(|m| m.remove(&(state as usize as u64)))
            .map(drop)
            .ok_or(CuResult::INVALID_HANDLE)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptx(name: &str) -> Input {
        input(
            PartKind::Ptx,
            b".version 8.0\n.target sm_75\n\0",
            name.into(),
        )
        .unwrap()
    }

    #[test]
    fn one_input_links_to_itself_and_several_to_a_link_container() {
        assert_eq!(ptx("a").data, b".version 8.0\n.target sm_75\n");
        assert_eq!(
            link(&[ptx("a")]).unwrap(),
            b".version 8.0\n.target sm_75\n\0".to_vec()
        );
        assert_eq!(link(&[]).unwrap_err().0, CuResult::INVALID_VALUE);
        let both = link(&[ptx("a"), ptx("b")]).unwrap();
        let parts = netgpu_image::link::decode(&both, &netgpu_image::Limits::default()).unwrap();
        let names: Vec<_> = parts.iter().map(|p| (p.name, p.kind, p.role)).collect();
        assert_eq!(
            names,
            vec![
                ("a", PartKind::Ptx, Role::Input),
                ("b", PartKind::Ptx, Role::Input)
            ]
        );
        // The container added back (as Numba re-adds cached code) is a link part.
        let again = input(PartKind::Cubin, &both, "cached".into()).unwrap();
        assert_eq!(again.kind, PartKind::Link);
        assert_eq!(link(&[again]).unwrap(), both);
    }

    #[test]
    fn inputs_are_recognised_by_their_contents() {
        // A linked PTX image added back as a "cubin" is PTX.
        let again = input(PartKind::Cubin, b".version 8.0\0", "cached".into()).unwrap();
        assert_eq!(again.kind, PartKind::Ptx);
        let fb = netgpu_image::testing::fatbin(&[]);
        assert_eq!(
            input(PartKind::Cubin, &fb, "f".into()).unwrap().kind,
            PartKind::Fatbin
        );
        let (e, msg) = input(PartKind::Ptx, &[0xfe; 8], "junk".into()).unwrap_err();
        assert_eq!(e, CuResult::INVALID_IMAGE);
        assert!(msg.starts_with("junk:"));
        let (e, _) = input(PartKind::Object, b".version 8.0", "o".into()).unwrap_err();
        assert_eq!(e, CuResult::INVALID_IMAGE);
        assert_eq!(input_kind(5), Err(CuResult::NOT_SUPPORTED));
        assert_eq!(input_kind(9), Err(CuResult::INVALID_VALUE));
        assert_eq!(input_kind(-1), Err(CuResult::INVALID_VALUE));
    }
    #[test]
    fn reports_write_logs_cut_to_their_buffers_and_the_lengths_back() {
        let mut info = [b'x'; 8];
        let mut err = [b'x'; 64];
        let opts = [
            opt::INFO_LOG_BUFFER,
            opt::INFO_LOG_BUFFER_SIZE_BYTES,
            opt::ERROR_LOG_BUFFER,
            opt::ERROR_LOG_BUFFER_SIZE_BYTES,
            opt::WALL_TIME,
        ];
        let mut vals: [*mut c_void; 5] = [
            info.as_mut_ptr().cast(),
            8 as *mut c_void,
            err.as_mut_ptr().cast(),
            64 as *mut c_void,
            std::ptr::null_mut(),
        ];
        // SAFETY: five options and values, alive for the report's life.
        let r = unsafe { JitReport::new(5, opts.as_ptr(), vals.as_mut_ptr()) }.unwrap();
        r.done("a long info message", Instant::now());
        assert_eq!(&info, b"a long \0", "cut to the buffer, NUL-terminated");
        assert_eq!(vals[1] as usize, 7);
        assert_eq!((err[0], vals[3] as usize), (0, 0));
        let ms = f32::from_bits(vals[4] as usize as u32);
        assert!(ms >= 0.0);
        // SAFETY: as above.
        let bad = unsafe { JitReport::new(1, [99].as_ptr(), vals.as_mut_ptr()) };
        assert_eq!(bad.unwrap_err(), CuResult::INVALID_VALUE);
    }
}
