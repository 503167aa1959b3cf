//! CUDA graphs made by stream capture, replayed as one pipelined batch.
//!
//! `cuStreamBeginCapture` turns a stream's stream-ordered work into recorded nodes instead of
//! sending it: kernel launches (with their parameters, copied at capture as CUDA does),
//! memsets, copies, event records, waits on events recorded outside the capture and host
//! functions. A stream that waits on an event recorded in a capture joins that capture (the
//! fork/join pattern of multi-stream capture). Nodes are kept in capture order, which is
//! always a topological order of the graph CUDA would build (a node only ever depends on nodes
//! captured before it). `cuGraphLaunch` posts every node onto the launch stream in that order:
//! a whole graph costs no round trip (a host-function node waits for the stream first, as it
//! must). Host memory named by copy nodes is read or written at launch, as CUDA's memcpy nodes
//! are.
//!
//! Not captured, with `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED` (and the capture invalidated, as
//! CUDA does): synchronising a capturing stream, stream-ordered allocation in a capture
//! (memory nodes), capturing the legacy NULL stream. The explicit graph-building
//! API (`cuGraphAdd*Node`), graph updates and cloning are not supported.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{Handle, Request};

use super::{guard, handle_of, opaque, put, stream_of, CUresult, Opaque, R};
use crate::state::{self, lock};

/// `CUstreamCaptureStatus`.
pub const STATUS_NONE: c_int = 0;
pub const STATUS_ACTIVE: c_int = 1;
pub const STATUS_INVALIDATED: c_int = 2;

/// `CUstreamCaptureMode` (THREAD_LOCAL = 1 lies between these two).
const MODE_GLOBAL: c_int = 0;
const MODE_RELAXED: c_int = 2;

/// `CUgraphNodeType`.
mod node_type {
    pub const KERNEL: i32 = 0;
    pub const MEMCPY: i32 = 1;
    pub const MEMSET: i32 = 2;
    pub const HOST: i32 = 3;
    pub const WAIT_EVENT: i32 = 5;
    pub const EVENT_RECORD: i32 = 6;
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub enum Node {
    /// A request posted as it is, on the launch stream: a kernel launch with its packed
    /// parameters, a memset, a device-to-device copy.
    Post {
        req: Request,
        data: Vec<u8>,
    },
    /// Host to device: the host bytes are read when the graph is launched.
    HtoD {
        dst: u64,
        src: usize,
        len: usize,
    },
    /// Device to host: the bytes land in host memory once the stream reaches the node.
    DtoH {
        dst: usize,
        src: u64,
        len: usize,
    },
    EventRecord {
        event: Handle,
    },
    /// A wait on an event recorded outside the capture.
    WaitEvent {
        event: Handle,
    },
    Host {
        f: extern "C" fn(*mut c_void),
        data: usize,
    },
}

impl Node {
    fn kind(&self) -> i32 {
        match self {
            Node::Post {
                req: Request::LaunchKernel { .. },
                ..
            } => node_type::KERNEL,
            Node::Post {
                req: Request::Memset { .. },
                ..
            } => node_type::MEMSET,
            Node::Post { .. } | Node::HtoD { .. } | Node::DtoH { .. } => node_type::MEMCPY,
            Node::EventRecord { .. } => node_type::EVENT_RECORD,
            Node::WaitEvent { .. } => node_type::WAIT_EVENT,
            Node::Host { .. } => node_type::HOST,
        }
    }
}

/// A capture in progress, shared by every stream that joined it.
#[derive(Debug)]
struct Capture {
    id: u64,
    mode: c_int,
    thread: std::thread::ThreadId,
    /// The graph it is building (its handle is known while capturing, as in CUDA).
    graph: Handle,
    origin: Handle,
    nodes: Vec<Node>,
    /// Why the capture is invalid, once something illegal was done in it.
    invalid: Option<CuResult>,
}

/// A graph: its nodes in a topological order.
#[derive(Debug, Default)]
struct Graph {
    nodes: Vec<Node>,
}

#[derive(Default)]
struct Registry {
    /// Capturing streams (backend handles) -> their capture.
    streams: HashMap<Handle, Arc<Mutex<Capture>>>,
    /// Events last recorded in a capture -> that capture.
    events: HashMap<Handle, Arc<Mutex<Capture>>>,
    graphs: HashMap<Handle, Arc<Graph>>,
    execs: HashMap<Handle, Arc<Graph>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
/// Streams capturing now: 0 lets every stream-ordered call skip the registry.
static CAPTURING: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(lock(&REGISTRY).get_or_insert_with(Registry::default))
}

/// A graph or graph-exec handle: odd numbers never collide with the backend's pointers.
fn new_handle() -> Handle {
    NEXT_ID.fetch_add(1, Ordering::Relaxed) * 16 + 0x6_0000_0001
}

fn capture_of(stream: Handle) -> Option<Arc<Mutex<Capture>>> {
    if CAPTURING.load(Ordering::Acquire) == 0 {
        return None;
    }
    registry(|r| r.streams.get(&stream).cloned())
}

/// Whether `stream` is capturing.
pub fn is_capturing(stream: Handle) -> bool {
    capture_of(stream).is_some()
}

/// Records `node()` when `stream` is capturing (and then says so); otherwise does nothing
/// and returns `false`, and the caller sends the work. A capture that was invalidated
/// answers `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`.
pub fn record(stream: Handle, node: impl FnOnce() -> Node) -> Result<bool, CuResult> {
    let Some(c) = capture_of(stream) else {
        return Ok(false);
    };
    let mut c = lock(&c);
    if c.invalid.is_some() {
        return Err(CuResult::STREAM_CAPTURE_INVALIDATED);
    }
    c.nodes.push(node());
    Ok(true)
}

/// Refuses an operation a capturing stream cannot take (synchronising it, allocating in
/// it), invalidating the capture as CUDA does.
pub fn refuse_if_capturing(stream: Handle) -> R {
    match capture_of(stream) {
        Some(c) => {
            lock(&c)
                .invalid
                .get_or_insert(CuResult::STREAM_CAPTURE_UNSUPPORTED);
            Err(CuResult::STREAM_CAPTURE_UNSUPPORTED)
        }
        None => Ok(()),
    }
}

/// `cuEventRecord` on `stream`: recorded when capturing (the event then marks a point of the
/// capture other streams can join at).
pub fn record_event(event: Handle, stream: Handle) -> Result<bool, CuResult> {
    let Some(c) = capture_of(stream) else {
        if CAPTURING.load(Ordering::Acquire) > 0 {
            registry(|r| r.events.remove(&event));
        }
        return Ok(false);
    };
    record(stream, || Node::EventRecord { event })?;
    registry(|r| r.events.insert(event, c));
    Ok(true)
}

/// `cuStreamWaitEvent(stream, event)`: a stream waiting on an event of a capture joins it; a
/// capturing stream waiting on any other event records the wait. `false`: not a capture
/// matter, the caller waits.
pub fn wait_event(stream: Handle, event: Handle) -> Result<bool, CuResult> {
    if CAPTURING.load(Ordering::Acquire) == 0 {
        return Ok(false);
    }
    let (own, joined) = registry(|r| {
        (
            r.streams.get(&stream).cloned(),
            r.events.get(&event).cloned(),
        )
    });
    match (own, joined) {
        (Some(own), Some(cap)) if Arc::ptr_eq(&own, &cap) => Ok(true),
        (Some(_), Some(_)) => Err(CuResult::STREAM_CAPTURE_MERGE),
        (Some(_), None) => record(stream, || Node::WaitEvent { event }),
        (None, Some(cap)) => {
            if stream == 0 {
                return Err(CuResult::STREAM_CAPTURE_IMPLICIT);
            }
            registry(|r| r.streams.insert(stream, cap));
            CAPTURING.fetch_add(1, Ordering::AcqRel);
            Ok(true)
        }
        (None, None) => Ok(false),
    }
}

/// The capture status of `stream`: `(status, id, graph)`.
pub fn status(stream: Handle) -> (c_int, u64, Handle) {
    match capture_of(stream) {
        Some(c) => {
            let c = lock(&c);
            let s = if c.invalid.is_some() {
                STATUS_INVALIDATED
            } else {
                STATUS_ACTIVE
            };
            (s, c.id, c.graph)
        }
        None => (STATUS_NONE, 0, 0),
    }
}

fn begin(s: Opaque, mode: c_int) -> R {
    super::ctx()?;
    if !(MODE_GLOBAL..=MODE_RELAXED).contains(&mode) {
        return Err(CuResult::INVALID_VALUE);
    }
    let stream = stream_of(s);
    if stream == 0 {
        // The legacy NULL stream cannot be captured.
        return Err(CuResult::STREAM_CAPTURE_UNSUPPORTED);
    }
    registry(|r| {
        if r.streams.contains_key(&stream) {
            return Err(CuResult::ILLEGAL_STATE);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let graph = new_handle();
        r.streams.insert(
            stream,
            Arc::new(Mutex::new(Capture {
                id,
                mode,
                thread: std::thread::current().id(),
                graph,
                origin: stream,
                nodes: Vec::new(),
                invalid: None,
            })),
        );
        CAPTURING.fetch_add(1, Ordering::AcqRel);
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture(s: Opaque) -> CUresult {
    guard(|| begin(s, MODE_GLOBAL))
}

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(s: Opaque, mode: c_int) -> CUresult {
    guard(|| begin(s, mode))
}

/// Ends the capture begun on `s` (every stream that joined it stops capturing) and gives its
/// graph; an invalidated capture ends with no graph.
///
/// # Safety
/// `graph` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(s: Opaque, graph: *mut Opaque) -> CUresult {
    guard(|| {
        if graph.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        let stream = stream_of(s);
        let done = registry(|r| {
            let cap = r
                .streams
                .get(&stream)
                .cloned()
                .ok_or(CuResult::ILLEGAL_STATE)?;
            let (origin, mode, thread) = {
                let c = lock(&cap);
                (c.origin, c.mode, c.thread)
            };
            if origin != stream {
                return Err(CuResult::STREAM_CAPTURE_UNMATCHED);
            }
            if mode != MODE_RELAXED && thread != std::thread::current().id() {
                return Err(CuResult::STREAM_CAPTURE_WRONG_THREAD);
            }
            let before = r.streams.len();
            r.streams.retain(|_, c| !Arc::ptr_eq(c, &cap));
            CAPTURING.fetch_sub(before - r.streams.len(), Ordering::AcqRel);
            r.events.retain(|_, c| !Arc::ptr_eq(c, &cap));
            let mut c = lock(&cap);
            if c.invalid.is_some() {
                return Err(CuResult::STREAM_CAPTURE_INVALIDATED);
            }
            let g = Arc::new(Graph {
                nodes: std::mem::take(&mut c.nodes),
            });
            r.graphs.insert(c.graph, g);
            Ok(c.graph)
        });
        let h = match done {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: the caller's out-pointer, checked above.
                unsafe { *graph = std::ptr::null_mut() };
                return Err(e);
            }
        };
        // SAFETY: as above.
        unsafe { put(graph, opaque(h)) }
    })
}

/// An empty graph (the explicit node-adding API is not supported, so it stays empty).
///
/// # Safety
/// `graph` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGraphCreate(graph: *mut Opaque, flags: c_uint) -> CUresult {
    guard(|| {
        if flags != 0 {
            return Err(CuResult::INVALID_VALUE);
        }
        let h = new_handle();
        registry(|r| r.graphs.insert(h, Arc::new(Graph::default())));
        // SAFETY: the caller's out-pointer.
        unsafe { put(graph, opaque(h)) }
    })
}

#[no_mangle]
pub extern "C" fn cuGraphDestroy(graph: Opaque) -> CUresult {
    guard(|| {
        registry(|r| r.graphs.remove(&handle_of(graph)))
            .map(drop)
            .ok_or(CuResult::INVALID_VALUE)
    })
}

fn graph(h: Opaque) -> Result<Arc<Graph>, CuResult> {
    registry(|r| r.graphs.get(&handle_of(h)).cloned()).ok_or(CuResult::INVALID_VALUE)
}

/// A node handle: the graph's handle and the node's index.
fn node_handle(graph: Handle, i: usize) -> Handle {
    ((i as u64 + 1) << 40) | graph
}

/// # Safety
/// `nodes` NULL or valid for `*num` handles; `num` valid.
#[no_mangle]
pub unsafe extern "C" fn cuGraphGetNodes(
    g: Opaque,
    nodes: *mut Opaque,
    num: *mut usize,
) -> CUresult {
    guard(|| {
        let gr = graph(g)?;
        if num.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        if !nodes.is_null() {
            // SAFETY: the caller's in/out count and its array of that many handles.
            let room = unsafe { *num };
            for i in 0..room.min(gr.nodes.len()) {
                // SAFETY: `i < room`.
                unsafe { *nodes.add(i) = opaque(node_handle(handle_of(g), i)) };
            }
            for i in gr.nodes.len()..room {
                // SAFETY: as above; CUDA fills the rest with NULL.
                unsafe { *nodes.add(i) = std::ptr::null_mut() };
            }
        }
        // SAFETY: the caller's count.
        unsafe { put(num, gr.nodes.len()) }
    })
}

/// # Safety
/// `kind` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGraphNodeGetType(node: Opaque, kind: *mut c_int) -> CUresult {
    guard(|| {
        let h = handle_of(node);
        let (g, i) = (h & ((1 << 40) - 1), (h >> 40) as usize);
        let gr = registry(|r| r.graphs.get(&g).cloned()).ok_or(CuResult::INVALID_VALUE)?;
        let n = i
            .checked_sub(1)
            .and_then(|i| gr.nodes.get(i))
            .ok_or(CuResult::INVALID_VALUE)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(kind, n.kind()) }
    })
}

fn instantiate(exec: *mut Opaque, g: Opaque) -> R {
    if exec.is_null() {
        return Err(CuResult::INVALID_VALUE);
    }
    let gr = graph(g)?;
    let h = new_handle();
    // The executable graph is a snapshot: later changes to the graph do not reach it.
    registry(|r| {
        r.execs.insert(
            h,
            Arc::new(Graph {
                nodes: gr.nodes.clone(),
            }),
        )
    });
    // SAFETY: the caller's out-pointer, checked above.
    unsafe { put(exec, opaque(h)) }
}

/// CUDA 10 / 11 form, with an error node and a log buffer (which stay untouched: a graph
/// made by capture always instantiates).
///
/// # Safety
/// `exec` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiate_v2(
    exec: *mut Opaque,
    g: Opaque,
    error_node: *mut Opaque,
    log: *mut c_char,
    log_size: usize,
) -> CUresult {
    guard(|| {
        instantiate(exec, g)?;
        // SAFETY: optional outputs of the caller.
        unsafe {
            if !error_node.is_null() {
                *error_node = std::ptr::null_mut();
            }
            if !log.is_null() && log_size > 0 {
                *log = 0;
            }
        }
        Ok(())
    })
}

/// Flags (`AUTO_FREE_ON_LAUNCH`, `UPLOAD`, `DEVICE_LAUNCH`, `USE_NODE_PRIORITY`) change
/// nothing for graphs without memory nodes launched from the host; device launch is not
/// supported.
///
/// # Safety
/// `exec` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut Opaque,
    g: Opaque,
    flags: u64,
) -> CUresult {
    guard(|| {
        if flags & 4 != 0 {
            // CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH
            return Err(CuResult::NOT_SUPPORTED);
        }
        instantiate(exec, g)
    })
}

/// `CUDA_GRAPH_INSTANTIATE_PARAMS`.
#[repr(C)]
pub struct InstantiateParams {
    flags: u64,
    upload_stream: Opaque,
    error_node_out: Opaque,
    result_out: c_int,
}

/// # Safety
/// `exec` NULL or writable; `params` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithParams(
    exec: *mut Opaque,
    g: Opaque,
    params: *mut InstantiateParams,
) -> CUresult {
    guard(|| {
        if params.is_null() {
            return Err(CuResult::INVALID_VALUE);
        }
        // SAFETY: the caller's parameter block.
        let flags = unsafe { (*params).flags };
        // SAFETY: same contract.
        let r = CuResult(unsafe { cuGraphInstantiateWithFlags(exec, g, flags) });
        // SAFETY: the caller's parameter block (CUDA_GRAPH_INSTANTIATE_SUCCESS = 0, ERROR = 1).
        unsafe {
            (*params).error_node_out = std::ptr::null_mut();
            (*params).result_out = if r.is_success() { 0 } else { 1 };
        }
        r.ok()
    })
}

#[no_mangle]
pub extern "C" fn cuGraphExecDestroy(exec: Opaque) -> CUresult {
    guard(|| {
        registry(|r| r.execs.remove(&handle_of(exec)))
            .map(drop)
            .ok_or(CuResult::INVALID_VALUE)
    })
}

/// Nothing to upload ahead: the nodes travel with each launch.
#[no_mangle]
pub extern "C" fn cuGraphUpload(exec: Opaque, _s: Opaque) -> CUresult {
    guard(|| {
        registry(|r| r.execs.contains_key(&handle_of(exec)))
            .then_some(())
            .ok_or(CuResult::INVALID_VALUE)
    })
}

/// The request with its stream replaced by `stream`.
fn on_stream(req: &Request, stream: Handle) -> Request {
    let mut req = req.clone();
    match &mut req {
        Request::LaunchKernel { stream: s, .. }
        | Request::Memset { stream: s, .. }
        | Request::MemcpyDtoD { stream: s, .. }
        | Request::MemcpyHtoD { stream: s, .. }
        | Request::MemcpyDtoH { stream: s, .. }
        | Request::Memcpy3D { stream: s, .. }
        | Request::EventRecord { stream: s, .. } => *s = stream,
        _ => {}
    }
    req
}

/// Posts every node of `exec` onto stream `s`, in order.
///
/// # Safety
/// Host memory named by the graph's copy nodes must be valid (the CUDA contract for memcpy
/// nodes), and a device-to-host destination untouched until the program synchronises.
unsafe fn replay(nodes: &[Node], s: Opaque) -> R {
    let ctx = super::ctx()?;
    let stream = stream_of(s);
    let drv = state::driver()?;
    let max = drv.transport.max_transfer().max(1);
    for n in nodes {
        match n {
            Node::Post { req, data } => drv.transport.post(&on_stream(req, stream), data)?,
            Node::HtoD { dst, src, len } => {
                // SAFETY: the program's host buffer (this function's contract).
                let src = unsafe { std::slice::from_raw_parts(*src as *const u8, *len) };
                for (i, chunk) in src.chunks(max).enumerate() {
                    let req = Request::MemcpyHtoD {
                        ctx,
                        dst: dst.wrapping_add((i * max) as u64),
                        stream,
                    };
                    drv.transport.post(&req, chunk)?;
                }
            }
            Node::DtoH { dst, src, len } => {
                let mut off = 0;
                while off < *len {
                    let n = (*len - off).min(max);
                    let req = Request::MemcpyDtoH {
                        ctx,
                        src: src.wrapping_add(off as u64),
                        len: n as u64,
                        stream,
                    };
                    // SAFETY: the program's host buffer, untouched until it synchronises.
                    unsafe { drv.transport.post_read(&req, (*dst + off) as *mut u8, n) }?;
                    off += n;
                }
            }
            Node::EventRecord { event } => drv.transport.post(
                &Request::EventRecord {
                    event: *event,
                    stream,
                },
                &[],
            )?,
            Node::WaitEvent { event } => {
                super::stream::wait_event_now(stream, *event)?;
            }
            Node::Host { f, data } => {
                let f = *f;
                let data = *data;
                super::stream::after_stream(s, |r| {
                    if r.is_success() {
                        f(data as *mut c_void)
                    }
                })?;
            }
        }
    }
    Ok(())
}

/// Launches an executable graph on `s`: its nodes are posted as one batch.
///
/// # Safety
/// The host buffers the graph's copy nodes name must be valid (CUDA's contract).
#[no_mangle]
pub unsafe extern "C" fn cuGraphLaunch(exec: Opaque, s: Opaque) -> CUresult {
    guard(|| {
        let g =
            registry(|r| r.execs.get(&handle_of(exec)).cloned()).ok_or(CuResult::INVALID_VALUE)?;
        // A graph launched into a capturing stream becomes part of that capture.
        let stream = stream_of(s);
        if capture_of(stream).is_some() {
            for n in &g.nodes {
                record(stream, || n.clone())?;
            }
            return Ok(());
        }
        // SAFETY: the graph's host buffers are the program's, valid by the CUDA contract.
        unsafe { replay(&g.nodes, s) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_requests_run_on_the_launch_stream() {
        let req = Request::LaunchKernel {
            func: 1,
            grid: [1; 3],
            block: [1; 3],
            shared_mem_bytes: 0,
            stream: 7,
            flags: 0,
        };
        match on_stream(&req, 9) {
            Request::LaunchKernel { stream, func, .. } => assert_eq!((stream, func), (9, 1)),
            _ => unreachable!(),
        }
        let set = Request::Memset {
            ctx: 1,
            dst: 0x1000,
            value: 0,
            elem_size: 4,
            count: 8,
            stream: 7,
        };
        assert!(matches!(
            on_stream(&set, 0),
            Request::Memset { stream: 0, .. }
        ));
    }

    #[test]
    fn node_kinds_are_cudas() {
        let k = Node::Post {
            req: Request::LaunchKernel {
                func: 1,
                grid: [1; 3],
                block: [1; 3],
                shared_mem_bytes: 0,
                stream: 0,
                flags: 0,
            },
            data: vec![],
        };
        assert_eq!(k.kind(), node_type::KERNEL);
        assert_eq!(
            Node::HtoD {
                dst: 0,
                src: 0,
                len: 0
            }
            .kind(),
            node_type::MEMCPY
        );
        assert_eq!(
            Node::EventRecord { event: 1 }.kind(),
            node_type::EVENT_RECORD
        );
        let h = node_handle(0x6_0000_0011, 2);
        assert_eq!(h & ((1 << 40) - 1), 0x6_0000_0011);
        assert_eq!(h >> 40, 3);
    }
}
