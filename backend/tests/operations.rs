//! Protocol-2 operations over TCP on the CPU executor, each with hostile arguments: device and
//! function attributes, FuncSetAttribute and dynamic shared memory, launch limits with the
//! driver's error codes, cooperative launches, stream priorities, pitched copies, module
//! images and parts, session limits from the handshake.

#![allow(clippy::unwrap_used)]

mod common;

use common::kernels::{params, Arg};
use common::{pattern, TestBackend, TOKEN};
use netgpu_client::{Client, ClientOptions, CuResult};
use netgpu_proto::cuda::{attr, func_attr};
use netgpu_proto::wire::ops::{Copy3D, MemLoc, Request, SessionLimits, LAUNCH_COOPERATIVE};

const KERNELS: &str = r#"
.version 8.0
.target sm_75
.address_size 64
.const .align 4 .b8 table[256];
.extern .shared .align 4 .b8 dsm[];

.visible .entry statics(.param .u64 out)
{
    .shared .align 4 .b8 tile[1024];
    .local .align 4 .b8 scratch[64];
    .reg .u64 %o;
    .reg .u32 %x;
    ld.param.u64 %o, [out];
    st.shared.u32 [tile], 3;
    ld.shared.u32 %x, [tile];
    st.global.u32 [%o], %x;
    ret;
}

.visible .entry dyn_last(.param .u64 out)
{
    .reg .u64 %o;
    .reg .u32 %n, %base, %a, %x;
    ld.param.u64 %o, [out];
    mov.u32 %n, %dynamic_smem_size;
    mov.u32 %base, dsm;
    add.u32 %a, %base, %n;
    sub.u32 %a, %a, 4;
    st.shared.u32 [%a], %n;
    ld.shared.u32 %x, [%a];
    st.global.u32 [%o], %x;
    ret;
}

.visible .entry nothing()
{
    ret;
}
"#;

struct Setup {
    b: TestBackend,
    c: Client,
    ctx: u64,
    module: u64,
}

async fn setup() -> Setup {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let module = c.module_load(ctx, KERNELS.as_bytes()).await.unwrap();
    Setup { b, c, ctx, module }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_attribute_is_answered_consistently() {
    let s = setup().await;
    let d = s.c.device_query().await.unwrap();
    for (a, name) in attr::ALL {
        assert!(d.attribute(a).is_some(), "attribute {a} ({name}) missing");
    }
    let get = |a| d.attribute(a).unwrap();
    assert_eq!(get(attr::WARP_SIZE), 32);
    assert_eq!(get(attr::MAX_THREADS_PER_BLOCK), 1024);
    assert_eq!(get(attr::MAX_SHARED_MEMORY_PER_BLOCK), 48 * 1024);
    assert_eq!(get(attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), 64 * 1024);
    assert_eq!(get(attr::UNIFIED_ADDRESSING), 1);
    assert_eq!(get(attr::CAN_MAP_HOST_MEMORY), 0);
    assert_eq!(get(attr::MANAGED_MEMORY), 0);
    assert_eq!(get(attr::CONCURRENT_KERNELS), 1);
    assert_eq!(get(attr::COOPERATIVE_LAUNCH), 1);
    assert_eq!(
        get(attr::KERNEL_EXEC_TIMEOUT),
        0,
        "no time limit configured"
    );
    assert_eq!(get(attr::COMPUTE_CAPABILITY_MAJOR) as u32, d.cc_major);
    assert_eq!(get(attr::MULTIPROCESSOR_COUNT) as u32, d.multiprocessors);
    // Stable PCI location per backend.
    let d2 = s.b.client().await.device_query().await.unwrap();
    for a in [attr::PCI_BUS_ID, attr::PCI_DEVICE_ID, attr::PCI_DOMAIN_ID] {
        assert_eq!(d.attribute(a), d2.attribute(a));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_attributes_describe_the_kernel() {
    let s = setup().await;
    let f = s.c.module_get_function(s.module, "statics").await.unwrap();
    let a = |x| f.attribute(x).unwrap_or_else(|| panic!("attribute {x}"));
    assert_eq!(a(func_attr::MAX_THREADS_PER_BLOCK), 1024);
    assert!(a(func_attr::SHARED_SIZE_BYTES) >= 1024);
    assert_eq!(a(func_attr::CONST_SIZE_BYTES), 256);
    assert!(a(func_attr::LOCAL_SIZE_BYTES) >= 64);
    assert!((1..=64).contains(&a(func_attr::NUM_REGS)));
    assert_eq!(a(func_attr::PTX_VERSION), 75, "the module's .target");
    assert_eq!(
        a(func_attr::BINARY_VERSION),
        80,
        "the executor's compute capability"
    );
    assert_eq!(
        a(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES),
        48 * 1024 - a(func_attr::SHARED_SIZE_BYTES)
    );
    // The same kernel gives the same handle.
    let again = s.c.module_get_function(s.module, "statics").await.unwrap();
    assert_eq!(again.handle, f.handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn func_set_attribute_opens_dynamic_shared_memory_up_to_the_opt_in_limit() {
    let s = setup().await;
    let c = &s.c;
    let f = c.module_get_function(s.module, "dyn_last").await.unwrap();
    let out = c.mem_alloc(s.ctx, 4).await.unwrap();
    let p = params(&[Arg::U64(out)]);
    let big = 60 * 1024;
    assert_eq!(
        c.launch_kernel_checked(f.handle, [1, 1, 1], [1, 1, 1], big, 0, 0, &p)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE,
        "more than the default 48 KiB"
    );
    c.func_set_attribute(
        f.handle,
        func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES,
        big as i32,
    )
    .await
    .unwrap();
    let f2 = c.module_get_function(s.module, "dyn_last").await.unwrap();
    assert_eq!(
        f2.attribute(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES),
        Some(big as i32)
    );
    c.launch_kernel_checked(f.handle, [1, 1, 1], [1, 1, 1], big, 0, 0, &p)
        .await
        .unwrap();
    c.ctx_synchronize(s.ctx).await.unwrap();
    let v = c.memcpy_dtoh(s.ctx, out, 4, 0).await.unwrap();
    assert_eq!(
        u32::from_le_bytes(v.try_into().unwrap()),
        big,
        "the kernel used it all"
    );
    // Hostile values.
    let bad = |attr, value| {
        let c = c.clone();
        async move {
            c.func_set_attribute(f.handle, attr, value)
                .await
                .unwrap_err()
                .cuda_result()
        }
    };
    assert_eq!(
        bad(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES, 64 * 1024 + 1).await,
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        bad(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES, -1).await,
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        bad(func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT, 101).await,
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        bad(func_attr::REQUIRED_CLUSTER_WIDTH, 2).await,
        CuResult::NOT_SUPPORTED
    );
    assert_eq!(
        bad(func_attr::NUM_REGS, 4).await,
        CuResult::INVALID_VALUE,
        "read-only"
    );
    assert_eq!(bad(9999, 0).await, CuResult::INVALID_VALUE);
    c.func_set_attribute(f.handle, func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT, 50)
        .await
        .unwrap();
    assert_eq!(
        c.func_set_attribute(0xdead, func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT, 50)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_launch_configurations_fail_in_the_launch_with_the_drivers_codes() {
    let s = setup().await;
    let c = &s.c;
    let f = c
        .module_get_function(s.module, "nothing")
        .await
        .unwrap()
        .handle;
    let launch = |grid: [u32; 3], block: [u32; 3], shared: u32, flags: u32, p: Vec<u8>| {
        let c = c.clone();
        async move {
            c.launch_kernel_checked(f, grid, block, shared, 0, flags, &p)
                .await
                .map_err(|e| e.cuda_result())
        }
    };
    let iv = Err(CuResult::INVALID_VALUE);
    assert_eq!(launch([1, 1, 1], [1024, 1, 1], 0, 0, vec![]).await, Ok(()));
    assert_eq!(launch([0, 1, 1], [1, 1, 1], 0, 0, vec![]).await, iv);
    assert_eq!(launch([1, 65_536, 1], [1, 1, 1], 0, 0, vec![]).await, iv);
    assert_eq!(launch([1, 1, 65_536], [1, 1, 1], 0, 0, vec![]).await, iv);
    assert_eq!(
        launch([1u32 << 31, 1, 1], [1, 1, 1], 0, 0, vec![]).await,
        iv
    );
    assert_eq!(launch([1, 1, 1], [1025, 1, 1], 0, 0, vec![]).await, iv);
    assert_eq!(launch([1, 1, 1], [32, 32, 2], 0, 0, vec![]).await, iv);
    assert_eq!(launch([1, 1, 1], [1, 1, 65], 0, 0, vec![]).await, iv);
    assert_eq!(
        launch([1, 1, 1], [1, 1, 1], 48 * 1024 + 1, 0, vec![]).await,
        iv
    );
    assert_eq!(
        launch([1, 1, 1], [1, 1, 1], 0, 1 << 7, vec![]).await,
        iv,
        "unknown flag"
    );
    assert_eq!(
        launch([1, 1, 1], [1, 1, 1], 0, 0, vec![0; 32_765]).await,
        iv,
        "parameter space"
    );
    assert_eq!(
        launch([1, 1, 1], [1, 1, 1], 0, 0, vec![0; 1 << 20]).await,
        iv,
        "huge parameters"
    );
    // Too few parameter bytes for the kernel's layout.
    let st = c
        .module_get_function(s.module, "statics")
        .await
        .unwrap()
        .handle;
    assert_eq!(
        c.launch_kernel_checked(st, [1, 1, 1], [1, 1, 1], 0, 0, 0, &[0; 4])
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );
    // Sent without a reply, the same error comes back from the next synchronising call, and
    // the session goes on.
    c.launch_kernel(f, [1, 1, 1], [2048, 1, 1], 0, 0, &[])
        .await
        .unwrap();
    assert_eq!(
        c.ctx_synchronize(s.ctx).await.unwrap_err().cuda_result(),
        CuResult::INVALID_VALUE
    );
    c.ctx_synchronize(s.ctx).await.unwrap();
    assert_eq!(
        c.launch_kernel_checked(0xdead, [1, 1, 1], [1, 1, 1], 0, 0, 0, &[])
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
    assert_eq!(
        c.launch_kernel_checked(f, [1, 1, 1], [1, 1, 1], 0, 0xbad, 0, &[])
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_launches_are_limited_to_resident_blocks() {
    let s = setup().await;
    let c = &s.c;
    let d = c.device_query().await.unwrap();
    let get = |a| d.attribute(a).unwrap() as u32;
    // One-thread blocks: as many per multiprocessor as threads (by warps) and blocks allow.
    let per_sm = (get(attr::MAX_THREADS_PER_MULTIPROCESSOR) / 32)
        .min(get(attr::MAX_BLOCKS_PER_MULTIPROCESSOR));
    let max = per_sm * get(attr::MULTIPROCESSOR_COUNT);
    let f = c
        .module_get_function(s.module, "nothing")
        .await
        .unwrap()
        .handle;
    c.launch_kernel_checked(f, [max, 1, 1], [1, 1, 1], 0, 0, LAUNCH_COOPERATIVE, &[])
        .await
        .unwrap();
    assert_eq!(
        c.launch_kernel_checked(f, [max + 1, 1, 1], [1, 1, 1], 0, 0, LAUNCH_COOPERATIVE, &[])
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::COOPERATIVE_LAUNCH_TOO_LARGE
    );
    c.ctx_synchronize(s.ctx).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_priorities_are_clamped_and_flags_checked() {
    let s = setup().await;
    let c = &s.c;
    for p in [i32::MIN, -5, -1, 0, 7, i32::MAX] {
        let st = c.stream_create_with_priority(s.ctx, 0, p).await.unwrap();
        c.memset(s.ctx, c.mem_alloc(s.ctx, 4).await.unwrap(), 1, 4, 1, st)
            .await
            .unwrap();
        c.stream_destroy(st).await.unwrap();
    }
    assert_eq!(
        c.stream_create_with_priority(s.ctx, 0x80, 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        c.stream_create_with_priority(0xbad, 0, 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_CONTEXT
    );
}

fn dev(ptr: u64, pitch: u64, height: u64) -> MemLoc {
    MemLoc::Device { ptr, pitch, height }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitched_copies_move_rows_and_leave_padding_alone() {
    let s = setup().await;
    let (c, ctx) = (&s.c, s.ctx);
    // A 3D region of 2 slices x 4 rows, pitch 64, of which 40 bytes per row are copied.
    let (w, h, d, pitch) = (40u64, 3u64, 2u64, 64u64);
    let a = c.mem_alloc(ctx, pitch * 4 * d).await.unwrap();
    let b2 = c.mem_alloc(ctx, pitch * 4 * d).await.unwrap();
    c.memset(ctx, a, 0xee, 1, pitch * 4 * d, 0).await.unwrap();
    let host = pattern((w * h * d) as usize, 3);
    let up = Copy3D {
        src: MemLoc::Host,
        dst: dev(a, pitch, 4),
        width: w,
        height: h,
        depth: d,
    };
    assert!(c.memcpy_3d(ctx, up, &host, 0).await.unwrap().is_empty());
    let all = c.memcpy_dtoh(ctx, a, pitch * 4 * d, 0).await.unwrap();
    for z in 0..d {
        for y in 0..4 {
            let row = &all[((z * 4 + y) * pitch) as usize..][..pitch as usize];
            if y < h {
                let src = &host[((z * h + y) * w) as usize..][..w as usize];
                assert_eq!(&row[..w as usize], src, "row {y} slice {z}");
                assert!(row[w as usize..].iter().all(|&x| x == 0xee), "padding kept");
            } else {
                assert!(row.iter().all(|&x| x == 0xee), "rows beyond height kept");
            }
        }
    }
    // Device to device, then back to the host, packed.
    let dd = Copy3D {
        src: dev(a, pitch, 4),
        dst: dev(b2, pitch, 4),
        width: w,
        height: h,
        depth: d,
    };
    c.memcpy_3d(ctx, dd, &[], 0).await.unwrap();
    let down = Copy3D {
        src: dev(b2, pitch, 4),
        dst: MemLoc::Host,
        width: w,
        height: h,
        depth: d,
    };
    assert_eq!(c.memcpy_3d(ctx, down, &[], 0).await.unwrap(), host);
    // An empty copy does nothing and succeeds.
    let empty = Copy3D { width: 0, ..down };
    assert!(c.memcpy_3d(ctx, empty, &[], 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pitched_copies_are_refused_and_the_session_goes_on() {
    let s = setup().await;
    let (c, ctx) = (&s.c, s.ctx);
    let a = c.mem_alloc(ctx, 256).await.unwrap();
    let base = Copy3D {
        src: dev(a, 64, 4),
        dst: MemLoc::Host,
        width: 64,
        height: 4,
        depth: 1,
    };
    assert_eq!(c.memcpy_3d(ctx, base, &[], 0).await.unwrap().len(), 256);
    let refused = |copy: Copy3D, host: Vec<u8>| {
        let c = c.clone();
        async move {
            c.memcpy_3d(ctx, copy, &host, 0)
                .await
                .map(|_| ())
                .map_err(|e| e.cuda_result())
        }
    };
    let iv = Err(CuResult::INVALID_VALUE);
    // The last row ends one byte past the allocation.
    assert_eq!(
        refused(
            Copy3D {
                src: dev(a + 1, 64, 4),
                ..base
            },
            vec![]
        )
        .await,
        iv
    );
    assert_eq!(refused(Copy3D { height: 5, ..base }, vec![]).await, iv);
    assert_eq!(
        refused(Copy3D { width: 65, ..base }, vec![]).await,
        iv,
        "width beyond pitch"
    );
    assert_eq!(
        refused(
            Copy3D {
                src: dev(a, u64::MAX / 2, 4),
                width: 1,
                ..base
            },
            vec![]
        )
        .await,
        iv,
        "pitch beyond MAX_PITCH"
    );
    assert_eq!(
        refused(
            Copy3D {
                src: dev(a, 64, 1 << 62),
                depth: 3,
                ..base
            },
            vec![]
        )
        .await,
        iv,
        "slice arithmetic overflows"
    );
    assert_eq!(
        refused(
            Copy3D {
                src: dev(u64::MAX - 8, 64, 4),
                ..base
            },
            vec![]
        )
        .await,
        iv,
        "address wraps"
    );
    assert_eq!(
        refused(
            Copy3D {
                src: dev(a, 64, 2),
                depth: 2,
                height: 3,
                ..base
            },
            vec![]
        )
        .await,
        iv,
        "slice height below the copy's"
    );
    assert_eq!(
        refused(
            Copy3D {
                width: u64::MAX,
                height: 3,
                ..base
            },
            vec![]
        )
        .await,
        iv,
        "packed length overflows"
    );
    // Host data that does not match the copy's size, and host to host.
    let h2d = Copy3D {
        src: MemLoc::Host,
        dst: dev(a, 64, 4),
        width: 8,
        height: 2,
        depth: 1,
    };
    assert_eq!(refused(h2d, vec![0; 15]).await, iv);
    assert_eq!(
        refused(
            Copy3D {
                dst: MemLoc::Host,
                ..h2d
            },
            vec![]
        )
        .await,
        iv
    );
    // Another context's memory, an unknown stream.
    let other = c.ctx_create(0).await.unwrap();
    assert_eq!(
        c.memcpy_3d(other, base, &[], 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        c.memcpy_3d(ctx, base, &[], 0xbad)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
    // Still healthy.
    assert_eq!(c.memcpy_3d(ctx, base, &[], 0).await.unwrap().len(), 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_images_are_checked_by_kind_and_parts() {
    let s = setup().await;
    let (c, ctx) = (&s.c, s.ctx);
    use netgpu_image::testing::{cubin, fatbin, ptx_module, EntrySpec};
    use netgpu_image::Compression;
    let elf = cubin(75, "k", &[(0, 8)], 0, 16);
    assert_eq!(
        c.module_load(ctx, &elf).await.unwrap_err().cuda_result(),
        CuResult::NO_BINARY_FOR_GPU,
        "a cubin has no PTX for the CPU executor"
    );
    assert_eq!(
        c.module_load(ctx, &fatbin(&[EntrySpec::elf(75, &elf)]))
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::NO_BINARY_FOR_GPU,
        "nor has a SASS-only fatbin"
    );
    // A fatbin as nvcc makes it (SASS plus compressed PTX): the PTX runs.
    let ptx = ptx_module("8.0", 75, "from_fatbin");
    let both = fatbin(&[
        EntrySpec::elf(75, &elf),
        EntrySpec::ptx(75, &ptx).compressed(Compression::Zstd),
    ]);
    let m = c.module_load(ctx, &both).await.unwrap();
    let f = c.module_get_function(m, "from_fatbin").await.unwrap();
    c.launch_kernel_checked(f.handle, [1, 1, 1], [1, 1, 1], 0, 0, 0, &[])
        .await
        .unwrap();
    c.ctx_synchronize(ctx).await.unwrap();
    // PTX for a newer GPU than the executor's compute capability 8.0.
    let newer = ptx_module("8.0", 90, "k");
    assert_eq!(
        c.module_load(ctx, newer.as_bytes())
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::NO_BINARY_FOR_GPU
    );
    let wrapper = 0x4662_43B1u32.to_le_bytes();
    assert_eq!(
        c.module_load(ctx, &wrapper)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_IMAGE,
        "a fatbin wrapper's pointers are the guest's"
    );
    assert_eq!(
        c.module_load(ctx, b"").await.unwrap_err().cuda_result(),
        CuResult::INVALID_IMAGE
    );
    // Parts that do not add up to the data.
    let bad = c
        .raw_call(
            &Request::ModuleLoad {
                ctx,
                parts: vec![10, 10],
            },
            &[b'x'; 25],
            false,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bad.0, CuResult::INVALID_VALUE);
    let bad = c
        .raw_call(
            &Request::ModuleLoad {
                ctx,
                parts: vec![u32::MAX, u32::MAX, 2],
            },
            &[b'x'; 0],
            false,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bad.0, CuResult::INVALID_VALUE);
    assert_eq!(
        c.module_load(0xbad, KERNELS.as_bytes())
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_CONTEXT
    );
    // The session goes on.
    c.module_load(ctx, KERNELS.as_bytes()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_from_the_handshake_apply_when_stricter() {
    let b = TestBackend::start().await;
    let connect = |limits| {
        let addr = b.addr();
        async move {
            Client::connect_with(
                &addr,
                TOKEN,
                ClientOptions {
                    limits,
                    ..ClientOptions::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let small = connect(SessionLimits {
        memory_quota: Some(1 << 20),
        kernel_time_limit_ms: Some(500),
    })
    .await;
    assert_eq!(small.mem_get_info().await.unwrap().1, 1 << 20);
    let d = small.device_query().await.unwrap();
    assert_eq!(d.total_mem, 1 << 20);
    assert_eq!(d.attribute(attr::KERNEL_EXEC_TIMEOUT), Some(1));
    let ctx = small.ctx_create(0).await.unwrap();
    assert_eq!(
        small
            .mem_alloc(ctx, 2 << 20)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::OUT_OF_MEMORY
    );
    // Asking for more than the backend allows gets the backend's limit.
    let big = connect(SessionLimits {
        memory_quota: Some(1 << 40),
        kernel_time_limit_ms: None,
    })
    .await;
    assert_eq!(big.mem_get_info().await.unwrap().1, 64 << 20);
}

fn nvcc_ptx(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/kernels/nvcc/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_printf_output_is_flagged_on_the_sync_reply_and_read_with_console_read() {
    use netgpu_proto::wire::frame::FrameHeader;
    use netgpu_proto::wire::ops::{self, Reply};
    use netgpu_proto::wire::{HEADER_LEN, PROTOCOL_VERSION};
    use std::io::{Read, Write};
    let b = TestBackend::start().await;
    let addr = b.addr;
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut id = 0u64;
        let mut call = |s: &mut std::net::TcpStream, req: &Request, data: &[u8]| {
            id += 1;
            let body = ops::encode(req).unwrap();
            s.write_all(
                &FrameHeader::request(id, 0, body.len() as u32, data.len() as u32).encode(),
            )
            .unwrap();
            s.write_all(&body).unwrap();
            s.write_all(data).unwrap();
            let mut hdr = [0u8; HEADER_LEN];
            s.read_exact(&mut hdr).unwrap();
            let h = FrameHeader::decode(&hdr, 1 << 16, 1 << 30).unwrap();
            let mut ctrl = vec![0u8; h.ctrl_len as usize];
            s.read_exact(&mut ctrl).unwrap();
            let mut out = vec![0u8; h.data_len as usize];
            s.read_exact(&mut out).unwrap();
            assert_eq!(h.request_id, id);
            let reply: Option<Reply> = (!ctrl.is_empty()).then(|| ops::decode(&ctrl).unwrap());
            (h, reply, out)
        };
        let hello = Request::Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            token: TOKEN.into(),
            client: "console".into(),
            limits: Default::default(),
        };
        call(&mut s, &hello, &[]);
        let Some(Reply::Handle(ctx)) = call(&mut s, &Request::CtxCreate { flags: 0 }, &[]).1 else {
            panic!()
        };
        let Some(Reply::Handle(m)) = call(
            &mut s,
            &Request::ModuleLoad { ctx, parts: vec![] },
            &nvcc_ptx("printf.ptx"),
        )
        .1
        else {
            panic!("printf.ptx loads")
        };
        let Some(Reply::Function(f)) = call(
            &mut s,
            &Request::ModuleGetFunction {
                module: m,
                name: "print_basic".into(),
            },
            &[],
        )
        .1
        else {
            panic!()
        };
        let launch = Request::LaunchKernel {
            func: f.handle,
            grid: [2, 1, 1],
            block: [2, 1, 1],
            shared_mem_bytes: 0,
            stream: 0,
            flags: 0,
        };
        let (h, _, _) = call(&mut s, &launch, &100i32.to_le_bytes());
        assert!(h.status.is_success());
        let (h, _, _) = call(&mut s, &Request::CtxSynchronize { ctx }, &[]);
        assert!(h.status.is_success());
        assert!(h.console_pending(), "the sync's reply says output waits");
        let (h, _, first) = call(&mut s, &Request::ConsoleRead { max: 10 }, &[]);
        assert_eq!(first.len(), 10);
        assert!(h.console_pending(), "more waits");
        let (h, _, rest) = call(&mut s, &Request::ConsoleRead { max: 1 << 20 }, &[]);
        assert!(!h.console_pending());
        let text = String::from_utf8([first, rest].concat()).unwrap();
        for line in [
            "block 0 thread 0 value 100\n",
            "block 0 thread 1 value 101\n",
            "block 1 thread 0 value 100\n",
            "block 1 thread 1 value 101\n",
        ] {
            assert!(text.contains(line), "{text:?}");
        }
        let (h, _, none) = call(&mut s, &Request::ConsoleRead { max: 100 }, &[]);
        assert!(none.is_empty() && !h.console_pending());
    })
    .await
    .unwrap();
}

const LINK_A: &str = ".version 8.0\n.target sm_80\n.address_size 64\n.extern .func (.param .b32 ret) twice(.param .b32 x);\n.visible .entry use_twice(.param .u64 out)\n{\n.reg .u64 %o;\n.reg .b32 %r<3>;\nld.param.u64 %o, [out];\nmov.b32 %r1, 21;\n{\n.param .b32 p0;\n.param .b32 r0;\nst.param.b32 [p0], %r1;\ncall.uni (r0), twice, (p0);\nld.param.b32 %r2, [r0];\n}\nst.global.u32 [%o], %r2;\nret;\n}\n";
const LINK_B: &str = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .func (.param .b32 ret) twice(.param .b32 x)\n{\n.reg .b32 %a;\nld.param.b32 %a, [x];\nadd.s32 %a, %a, %a;\nst.param.b32 [ret], %a;\nret;\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_parts_link_into_one_module() {
    let s = setup().await;
    let (c, ctx) = (&s.c, s.ctx);
    let m = c
        .module_link(ctx, &[LINK_A.as_bytes(), LINK_B.as_bytes()])
        .await
        .unwrap();
    let f = c.module_get_function(m, "use_twice").await.unwrap();
    let out = c.mem_alloc(ctx, 4).await.unwrap();
    c.launch_kernel_checked(f.handle, [1, 1, 1], [1, 1, 1], 0, 0, 0, &out.to_le_bytes())
        .await
        .unwrap();
    c.ctx_synchronize(ctx).await.unwrap();
    let v = c.memcpy_dtoh(ctx, out, 4, 0).await.unwrap();
    assert_eq!(
        u32::from_le_bytes(v.try_into().unwrap()),
        42,
        "the call crossed modules"
    );
    // A part alone does not resolve its extern function; two definitions clash.
    assert!(c.module_link(ctx, &[LINK_A.as_bytes()]).await.is_err());
    assert!(c
        .module_link(
            ctx,
            &[LINK_A.as_bytes(), LINK_B.as_bytes(), LINK_B.as_bytes()]
        )
        .await
        .is_err());
}
