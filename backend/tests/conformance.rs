//! Executor conformance: the same assertions against every executor this machine has. The
//! CPU executor always runs; the CUDA executor runs too when a GPU and driver are present
//! (set NETGPU_REQUIRE_CUDA=1 to make its absence a failure, as on a GPU test host).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use netgpu_backend::executor::blocking::Blocking;
use netgpu_backend::executor::cpu::CpuExecutor;
use netgpu_backend::executor::cuda::CudaExecutor;
use netgpu_backend::executor::Executor;
use netgpu_proto::cuda::CuResult;

fn executors() -> Vec<(&'static str, Arc<dyn Executor>)> {
    let mut v: Vec<(&'static str, Arc<dyn Executor>)> =
        vec![("cpu", Arc::new(CpuExecutor::new("conformance", 1 << 30, 2)))];
    match CudaExecutor::open(0) {
        Ok(e) => v.push(("cuda", Arc::new(e))),
        Err(e) => {
            if std::env::var("NETGPU_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("NETGPU_REQUIRE_CUDA=1 but the CUDA executor cannot open: {e}");
            }
            eprintln!("conformance: CUDA executor not available here ({e}); testing cpu only");
        }
    }
    v
}

fn each(test: impl Fn(&str, &mut Blocking)) {
    for (name, exec) in executors() {
        let mut engine = Blocking::open(exec.as_ref(), 256 << 20).unwrap();
        test(name, &mut engine);
    }
}

#[test]
fn memory_round_trips_through_every_copy_kind() {
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        let n = 1 << 16;
        let a = e.mem_alloc(ctx, n).unwrap();
        let b = e.mem_alloc(ctx, n).unwrap();
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        e.memcpy_htod(ctx, a, &data, 0).unwrap();
        e.memcpy_dtod(ctx, b, a, n, 0).unwrap();
        let mut out = vec![0u8; n as usize];
        e.memcpy_dtoh(ctx, &mut out, b, 0).unwrap();
        assert_eq!(out, data, "{name}");
        e.memset(ctx, b + 4, 0xa5a5_a5a5, 4, 3, 0).unwrap();
        e.memset(ctx, b, 0x0102, 2, 2, 0).unwrap();
        let mut head = [0u8; 20];
        e.memcpy_dtoh(ctx, &mut head, b, 0).unwrap();
        assert_eq!(&head[..4], &[2, 1, 2, 1], "{name}");
        assert_eq!(&head[4..16], &[0xa5; 12], "{name}");
        assert_eq!(&head[16..], &data[16..20], "{name}");
        e.mem_free(a).unwrap();
        e.mem_free(b).unwrap();
        e.ctx_destroy(ctx).unwrap();
    });
}

#[test]
fn invalid_ranges_handles_and_contexts_are_refused_alike() {
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        let other = e.ctx_create(0).unwrap();
        let p = e.mem_alloc(ctx, 4096).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            e.memcpy_dtoh(ctx, &mut buf, p + 4090, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}"
        );
        assert_eq!(
            e.memcpy_dtoh(other, &mut buf, p, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}: other context's memory"
        );
        assert_eq!(
            e.memset(ctx, p + 2, 0, 4, 1, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}: misaligned"
        );
        assert_eq!(
            e.mem_alloc(0xdead, 16),
            Err(CuResult::INVALID_CONTEXT),
            "{name}"
        );
        assert_eq!(
            e.stream_synchronize(0xbeef),
            Err(CuResult::INVALID_HANDLE),
            "{name}"
        );
        assert_eq!(
            e.event_query(0xbeef),
            Err(CuResult::INVALID_HANDLE),
            "{name}"
        );
        assert_eq!(
            e.mem_alloc(ctx, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}: zero-size alloc"
        );
        assert_eq!(
            e.mem_free(p + 16),
            Err(CuResult::INVALID_VALUE),
            "{name}: interior pointer"
        );
        assert_eq!(
            e.module_get_function(0x1234, "k").err(),
            Some(CuResult::INVALID_HANDLE),
            "{name}"
        );
    });
}

#[test]
fn quota_is_enforced_and_reported() {
    each(|name, e| {
        let (free, total) = e.mem_info();
        assert_eq!((free, total), (256 << 20, 256 << 20), "{name}");
        let ctx = e.ctx_create(0).unwrap();
        let p = e.mem_alloc(ctx, 200 << 20).unwrap();
        assert_eq!(e.mem_info().0, 56 << 20, "{name}");
        assert_eq!(
            e.mem_alloc(ctx, 100 << 20),
            Err(CuResult::OUT_OF_MEMORY),
            "{name}"
        );
        e.mem_free(p).unwrap();
        assert_eq!(e.mem_info().0, 256 << 20, "{name}");
    });
}

#[test]
fn streams_and_events_order_work() {
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        let s = e.stream_create(ctx, 0, 0).unwrap();
        let (e1, e2) = (
            e.event_create(ctx, 0).unwrap(),
            e.event_create(ctx, 0).unwrap(),
        );
        let p = e.mem_alloc(ctx, 16 << 20).unwrap();
        e.event_record(e1, s).unwrap();
        e.memset(ctx, p, 9, 1, 16 << 20, s).unwrap();
        e.event_record(e2, s).unwrap();
        e.event_synchronize(e2).unwrap();
        assert!(e.event_query(e2).unwrap(), "{name}");
        e.stream_synchronize(s).unwrap();
        assert!(e.stream_query(s).unwrap(), "{name}");
        let ms = e.event_elapsed_ms(e1, e2).unwrap();
        assert!(ms >= 0.0, "{name}: {ms}");
        let mut tail = [0u8; 4];
        e.memcpy_dtoh(ctx, &mut tail, p + (16 << 20) - 4, s)
            .unwrap();
        assert_eq!(tail, [9; 4], "{name}");
        e.event_destroy(e1).unwrap();
        e.stream_destroy(s).unwrap();
        assert_eq!(e.stream_query(s), Err(CuResult::INVALID_HANDLE), "{name}");
    });
}

#[test]
fn destroying_a_context_releases_its_memory() {
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        e.mem_alloc(ctx, 64 << 20).unwrap();
        e.mem_alloc(ctx, 64 << 20).unwrap();
        assert_eq!(e.mem_info().0, 128 << 20, "{name}");
        e.ctx_destroy(ctx).unwrap();
        assert_eq!(e.mem_info().0, 256 << 20, "{name}");
        assert_eq!(
            e.ctx_synchronize(ctx),
            Err(CuResult::INVALID_CONTEXT),
            "{name}"
        );
    });
}

const STORE: &str = ".version 7.0\n.target sm_50\n.address_size 64\n.visible .entry store(.param .u64 p, .param .u32 v)\n{\n.reg .u64 %a;\n.reg .u32 %x;\nld.param.u64 %a, [p];\nld.param.u32 %x, [v];\nst.global.u32 [%a], %x;\nret;\n}\n";

fn store_params(p: u64, v: u32) -> Vec<u8> {
    let mut b = p.to_le_bytes().to_vec();
    b.extend_from_slice(&v.to_le_bytes());
    b
}

#[test]
fn kernels_launch_with_attributes_and_opt_in_shared_memory() {
    use netgpu_backend::executor::LaunchDims;
    use netgpu_proto::cuda::func_attr;
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        let m = e.module_load(ctx, STORE.as_bytes()).unwrap();
        let f = e.module_get_function(m, "store").unwrap();
        assert_eq!(f.param_buffer_size, 12, "{name}");
        assert!(
            f.attribute(func_attr::MAX_THREADS_PER_BLOCK).unwrap_or(0) >= 256,
            "{name}"
        );
        let p = e.mem_alloc(ctx, 4).unwrap();
        let dims = |shared| LaunchDims {
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem_bytes: shared,
        };
        e.launch(f.handle, dims(0), &store_params(p, 7), 0, 0)
            .unwrap();
        e.ctx_synchronize(ctx).unwrap();
        let mut out = [0u8; 4];
        e.memcpy_dtoh(ctx, &mut out, p, 0).unwrap();
        assert_eq!(u32::from_le_bytes(out), 7, "{name}");
        // 60 KiB of dynamic shared memory needs the opt-in.
        assert_eq!(
            e.launch(f.handle, dims(60 << 10), &store_params(p, 8), 0, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}"
        );
        e.func_set_attribute(f.handle, func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES, 60 << 10)
            .unwrap();
        e.launch(f.handle, dims(60 << 10), &store_params(p, 8), 0, 0)
            .unwrap();
        e.ctx_synchronize(ctx).unwrap();
        e.memcpy_dtoh(ctx, &mut out, p, 0).unwrap();
        assert_eq!(u32::from_le_bytes(out), 8, "{name}");
        // Too few parameter bytes, a block beyond the limits.
        assert_eq!(
            e.launch(f.handle, dims(0), &[0; 4], 0, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}"
        );
        let big = LaunchDims {
            block: [2048, 1, 1],
            ..dims(0)
        };
        assert_eq!(
            e.launch(f.handle, big, &store_params(p, 1), 0, 0),
            Err(CuResult::INVALID_VALUE),
            "{name}"
        );
        e.module_unload(m).unwrap();
    });
}

#[test]
fn streams_wait_for_events_of_other_streams() {
    use netgpu_backend::executor::LaunchDims;
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        let m = e.module_load(ctx, STORE.as_bytes()).unwrap();
        let f = e.module_get_function(m, "store").unwrap().handle;
        let a = e.stream_create(ctx, 1, -1).unwrap();
        let b = e.stream_create(ctx, 1, 0).unwrap();
        let ev = e.event_create(ctx, 0).unwrap();
        let p = e.mem_alloc(ctx, 8).unwrap();
        let one = LaunchDims {
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem_bytes: 0,
        };
        e.memset(ctx, p, 0, 4, 2, a).unwrap();
        e.launch(f, one, &store_params(p, 5), a, 0).unwrap();
        e.event_record(ev, a).unwrap();
        e.stream_wait_event(b, ev).unwrap();
        e.memcpy_dtod(ctx, p + 4, p, 4, b).unwrap();
        e.stream_synchronize(b).unwrap();
        let mut out = [0u8; 8];
        e.memcpy_dtoh(ctx, &mut out, p, b).unwrap();
        assert_eq!(out, [5, 0, 0, 0, 5, 0, 0, 0], "{name}");
        e.mem_free_async(p, b).unwrap();
        e.ctx_synchronize(ctx).unwrap();
        e.stream_destroy(a).unwrap();
        e.stream_destroy(b).unwrap();
    });
}

#[test]
fn pitched_copies_round_trip() {
    use netgpu_proto::wire::ops::{Copy3D, MemLoc};
    each(|name, e| {
        let ctx = e.ctx_create(0).unwrap();
        let (w, h, d, pitch) = (24u64, 5u64, 3u64, 32u64);
        let a = e.mem_alloc(ctx, pitch * h * d).unwrap();
        let host: Vec<u8> = (0..w * h * d).map(|i| (i * 13 + 1) as u8).collect();
        let dev = MemLoc::Device {
            ptr: a,
            pitch,
            height: h,
        };
        let up = Copy3D {
            src: MemLoc::Host,
            dst: dev,
            width: w,
            height: h,
            depth: d,
        };
        e.memcpy_3d(ctx, up, Some(&host), 0).unwrap();
        let down = Copy3D {
            src: dev,
            dst: MemLoc::Host,
            ..up
        };
        assert_eq!(e.memcpy_3d(ctx, down, None, 0).unwrap(), host, "{name}");
        // The span is 2 slices + 4 rows + 24 bytes = 472 of the 480 bytes: 9 bytes in, the
        // last row ends one byte past the allocation.
        let past = Copy3D {
            src: MemLoc::Device {
                ptr: a + 9,
                pitch,
                height: h,
            },
            ..down
        };
        let inside = Copy3D {
            src: MemLoc::Device {
                ptr: a + 8,
                pitch,
                height: h,
            },
            ..down
        };
        assert!(e.memcpy_3d(ctx, inside, None, 0).is_ok(), "{name}");
        assert_eq!(
            e.memcpy_3d(ctx, past, None, 0).err(),
            Some(CuResult::INVALID_VALUE),
            "{name}: the last row ends past the allocation"
        );
    });
}
