//! The backend over real TCP on loopback with the CPU executor: every operation, errors,
//! isolation, quotas, cleanup, authentication and hostile input.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{pattern, TestBackend, TOKEN};
use netgpu_client::{Client, ClientError, CuResult};
use netgpu_proto::wire::frame::{FrameHeader, FrameKind, FLAG_NO_REPLY};
use netgpu_proto::wire::ops::{self, Reply, Request};
use netgpu_proto::wire::{HEADER_LEN, PROTOCOL_VERSION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_device_query_and_null() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    c.null().await.unwrap();
    let d = c.device_query().await.unwrap();
    assert_eq!(d.executor, "cpu");
    assert_eq!(d.name, "test cpu");
    assert_eq!(
        d.total_mem,
        64 << 20,
        "a session sees its quota as the device memory"
    );
    assert_eq!(d.attribute(netgpu_proto::cuda::attr::WARP_SIZE), Some(32));
    assert_eq!((d.cc_major, d.cc_minor), (8, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_refused_before_any_work() {
    let b = TestBackend::start().await;
    let err = Client::connect(&b.addr(), "wrong")
        .await
        .err()
        .expect("must be refused");
    match err {
        ClientError::Refused { status, reason } => {
            assert_eq!(status, CuResult::NOT_PERMITTED);
            assert!(reason.contains("token"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(b.executor.memory_used(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_copies_memsets_and_info() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let (free0, total) = c.mem_get_info().await.unwrap();
    assert_eq!((free0, total), (64 << 20, 64 << 20));
    let n = 300_000u64;
    let a = c.mem_alloc(ctx, n).await.unwrap();
    let bb = c.mem_alloc(ctx, n).await.unwrap();
    assert_eq!(c.mem_get_info().await.unwrap().0, free0 - 2 * n);

    let data = pattern(n as usize, 1);
    c.memcpy_htod(ctx, a, &data, 0).await.unwrap();
    assert_eq!(c.memcpy_dtoh(ctx, a, n, 0).await.unwrap(), data);

    c.memcpy_dtod(ctx, bb, a, n, 0).await.unwrap();
    assert_eq!(c.memcpy_dtoh(ctx, bb, n, 0).await.unwrap(), data);
    // Partial ranges inside an allocation.
    assert_eq!(
        c.memcpy_dtoh(ctx, bb + 1000, 10, 0).await.unwrap(),
        &data[1000..1010]
    );

    c.memset(ctx, a, 0xab, 1, 10, 0).await.unwrap();
    c.memset(ctx, a + 10, 0x1234, 2, 3, 0).await.unwrap();
    c.memset(ctx, a + 16, 0xdead_beef, 4, 2, 0).await.unwrap();
    let got = c.memcpy_dtoh(ctx, a, 24, 0).await.unwrap();
    let mut want = vec![0xab; 10];
    want.extend_from_slice(&[0x34, 0x12, 0x34, 0x12, 0x34, 0x12]);
    want.extend_from_slice(&[0xef, 0xbe, 0xad, 0xde, 0xef, 0xbe, 0xad, 0xde]);
    assert_eq!(got, want);
    // Misaligned 32-bit memset and a bad element size are refused.
    assert_eq!(
        c.memset(ctx, a + 1, 0, 4, 1, 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        c.memset(ctx, a, 0, 3, 1, 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );

    c.mem_free(a).await.unwrap();
    c.mem_free(bb).await.unwrap();
    assert_eq!(c.mem_get_info().await.unwrap().0, free0);
    assert_eq!(
        c.mem_free(a).await.unwrap_err().cuda_result(),
        CuResult::INVALID_VALUE,
        "double free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_copies_are_refused() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let a = c.mem_alloc(ctx, 1024).await.unwrap();
    let e = c
        .memcpy_htod(ctx, a + 1000, &[0u8; 100], 0)
        .await
        .unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::INVALID_VALUE);
    let e = c.memcpy_dtoh(ctx, a, 1025, 0).await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::INVALID_VALUE);
    let e = c.memcpy_dtod(ctx, a, a + 512, 1024, 0).await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::INVALID_VALUE);
    let e = c.memcpy_dtoh(ctx, 0x1234, 4, 0).await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::INVALID_VALUE);
    // The session is still healthy.
    c.memcpy_htod(ctx, a, &[7u8; 1024], 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_copies_are_split_into_frames_and_reassembled() {
    let b = TestBackend::start_with(|c| c.max_frame_data = bytesize::ByteSize::kib(4)).await;
    let c = b.client().await;
    assert_eq!(c.max_data(), 4096);
    let ctx = c.ctx_create(0).await.unwrap();
    let n = 100_003usize;
    let p = c.mem_alloc(ctx, n as u64).await.unwrap();
    let data = pattern(n, 7);
    c.memcpy_htod(ctx, p, &data, 0).await.unwrap();
    assert_eq!(c.memcpy_dtoh(ctx, p, n as u64, 0).await.unwrap(), data);
    let more = pattern(n, 8);
    c.memcpy_htod_async(ctx, p, &more, 0).await.unwrap();
    c.ctx_synchronize(ctx).await.unwrap();
    assert_eq!(c.memcpy_dtoh(ctx, p, n as u64, 0).await.unwrap(), more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refuses_allocations_beyond_it() {
    let b = TestBackend::start_with(|c| c.session_memory_quota = bytesize::ByteSize::mib(1)).await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let a = c.mem_alloc(ctx, 768 << 10).await.unwrap();
    let e = c.mem_alloc(ctx, 512 << 10).await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::OUT_OF_MEMORY);
    c.mem_alloc(ctx, 256 << 10).await.unwrap();
    c.mem_free(a).await.unwrap();
    c.mem_alloc(ctx, 512 << 10).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_isolated() {
    let b = TestBackend::start().await;
    let a = b.client().await;
    let c = b.client().await;
    assert_ne!(a.session_id(), c.session_id());
    let actx = a.ctx_create(0).await.unwrap();
    let aptr = a.mem_alloc(actx, 4096).await.unwrap();
    a.memcpy_htod(actx, aptr, &[0x5a; 4096], 0).await.unwrap();
    let astream = a.stream_create(actx, 0).await.unwrap();

    let cctx = c.ctx_create(0).await.unwrap();
    // A's context handle means nothing in C's session.
    assert_eq!(
        c.mem_alloc(actx, 16).await.unwrap_err().cuda_result(),
        CuResult::INVALID_CONTEXT
    );
    // A's device pointer is not memory of C.
    assert_eq!(
        c.memcpy_dtoh(cctx, aptr, 16, 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        c.memcpy_htod(cctx, aptr, &[0; 16], 0)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        c.mem_free(aptr).await.unwrap_err().cuda_result(),
        CuResult::INVALID_VALUE
    );
    assert_eq!(
        c.stream_synchronize(astream)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
    // A's memory is untouched.
    assert_eq!(
        a.memcpy_dtoh(actx, aptr, 4096, 0).await.unwrap(),
        vec![0x5a; 4096]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_own_their_objects() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let c1 = c.ctx_create(0).await.unwrap();
    let c2 = c.ctx_create(0).await.unwrap();
    let p1 = c.mem_alloc(c1, 1 << 20).await.unwrap();
    let p2 = c.mem_alloc(c2, 1 << 20).await.unwrap();
    // Memory of one context is not addressable through another.
    assert_eq!(
        c.memcpy_dtoh(c2, p1, 4, 0).await.unwrap_err().cuda_result(),
        CuResult::INVALID_VALUE
    );
    let s1 = c.stream_create(c1, 0).await.unwrap();
    c.ctx_destroy(c1).await.unwrap();
    assert_eq!(
        c.mem_get_info().await.unwrap().0,
        (64 << 20) - (1 << 20),
        "ctx destroy frees its memory"
    );
    assert_eq!(
        c.stream_synchronize(s1).await.unwrap_err().cuda_result(),
        CuResult::INVALID_HANDLE
    );
    assert_eq!(
        c.mem_alloc(c1, 1).await.unwrap_err().cuda_result(),
        CuResult::INVALID_CONTEXT
    );
    c.memcpy_dtoh(c2, p2, 4, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnect_frees_everything() {
    let b = TestBackend::start().await;
    {
        let c = b.client().await;
        let ctx = c.ctx_create(0).await.unwrap();
        for _ in 0..8 {
            c.mem_alloc(ctx, 1 << 20).await.unwrap();
        }
        c.memset_async(ctx, 0, 0, 1, 1, 0).await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(b.executor.memory_used(), 8 << 20);
    } // dropped without any teardown
    assert_eq!(b.wait_memory_freed().await, 0);
    // A raw socket that vanishes mid-frame frees its session too.
    let mut s = raw_session(&b).await;
    let ctx = raw_handle(&mut s, &Request::CtxCreate { flags: 0 });
    raw_handle(&mut s, &Request::MemAlloc { ctx, size: 1 << 20 });
    let body = ops::encode(&Request::MemcpyHtoD {
        ctx,
        dst: 0,
        stream: 0,
    })
    .unwrap();
    s.write_all(&FrameHeader::request(99, 0, body.len() as u32, 1 << 20).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    s.write_all(&[0u8; 1000]).unwrap();
    drop(s);
    assert_eq!(b.wait_memory_freed().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_errors_surface_at_the_next_synchronising_call() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let s = c.stream_create(ctx, 0).await.unwrap();
    let p = c.mem_alloc(ctx, 64).await.unwrap();
    // Stream-ordered calls return at once, even when they will fail.
    c.memset_async(ctx, p + 60, 1, 4, 100, s).await.unwrap();
    c.memcpy_htod_async(ctx, p, &[1u8; 64], s).await.unwrap();
    // Non-synchronising calls are not affected.
    c.mem_get_info().await.unwrap();
    let e = c.stream_synchronize(s).await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::INVALID_VALUE);
    // Reported once; the later valid copy did run.
    c.stream_synchronize(s).await.unwrap();
    assert_eq!(c.memcpy_dtoh(ctx, p, 64, s).await.unwrap(), vec![1u8; 64]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_events() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let s = c.stream_create(ctx, 0).await.unwrap();
    let e1 = c.event_create(ctx, 0).await.unwrap();
    let e2 = c.event_create(ctx, 0).await.unwrap();
    let p = c.mem_alloc(ctx, 8 << 20).await.unwrap();
    c.event_record(e1, s).await.unwrap();
    c.memset_async(ctx, p, 3, 1, 8 << 20, s).await.unwrap();
    c.event_record(e2, s).await.unwrap();
    c.event_synchronize(e2).await.unwrap();
    assert!(c.event_query(e2).await.unwrap());
    assert!(c.stream_query(s).await.unwrap());
    let ms = c.event_elapsed_time(e1, e2).await.unwrap();
    assert!((0.0..10_000.0).contains(&ms), "{ms}");
    // An event that was never recorded cannot be timed.
    let e3 = c.event_create(ctx, 0).await.unwrap();
    assert_eq!(
        c.event_elapsed_time(e1, e3)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
    c.event_destroy(e1).await.unwrap();
    assert_eq!(
        c.event_query(e1).await.unwrap_err().cuda_result(),
        CuResult::INVALID_HANDLE
    );
    c.stream_destroy(s).await.unwrap();
    assert_eq!(
        c.stream_query(s).await.unwrap_err().cuda_result(),
        CuResult::INVALID_HANDLE
    );
    // A stream of another context is refused.
    let ctx2 = c.ctx_create(0).await.unwrap();
    let s2 = c.stream_create(ctx2, 0).await.unwrap();
    assert_eq!(
        c.memset(ctx, p, 0, 1, 1, s2)
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_get_a_goodbye_and_the_backend_keeps_serving() {
    let b = TestBackend::start().await;
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (h, reply) = read_raw(&mut s).expect("goodbye frame");
    assert_eq!(h.kind, FrameKind::Goodbye);
    assert!(matches!(reply, Some(Reply::Error(_))));
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "then the connection closes"
    );
    b.client().await.null().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_truncated_frames_are_survived() {
    let b = TestBackend::start().await;
    // A frame whose data section exceeds the limit.
    let mut s = raw_session(&b).await;
    let body = ops::encode(&Request::Null).unwrap();
    s.write_all(&FrameHeader::request(5, 0, body.len() as u32, u32::MAX).encode())
        .unwrap();
    let (h, _) = read_raw(&mut s).unwrap();
    assert_eq!(h.kind, FrameKind::Goodbye);
    // A truncated header, then close.
    let mut s = raw_session(&b).await;
    s.write_all(&FrameHeader::request(5, 0, 1, 0).encode()[..10])
        .unwrap();
    drop(s);
    b.client().await.null().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_opcodes_and_misused_flags_get_error_replies_and_the_session_goes_on() {
    let b = TestBackend::start().await;
    let mut s = raw_session(&b).await;
    // Unknown operation number.
    s.write_all(&FrameHeader::request(7, 0, 1, 0).encode())
        .unwrap();
    s.write_all(&[250]).unwrap();
    let (h, _) = read_raw(&mut s).unwrap();
    assert_eq!(
        (h.kind, h.request_id, h.status),
        (FrameKind::Reply, 7, CuResult::INVALID_VALUE)
    );
    // Data attached to an operation that takes none.
    let body = ops::encode(&Request::Null).unwrap();
    s.write_all(&FrameHeader::request(8, 0, body.len() as u32, 3).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    s.write_all(&[1, 2, 3]).unwrap();
    let (h, _) = read_raw(&mut s).unwrap();
    assert_eq!((h.request_id, h.status), (8, CuResult::INVALID_VALUE));
    // A second Hello.
    let body = ops::encode(&Request::Hello {
        version_min: PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        token: TOKEN.into(),
        client: "x".into(),
        limits: Default::default(),
    })
    .unwrap();
    s.write_all(&FrameHeader::request(9, 0, body.len() as u32, 0).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    let (h, _) = read_raw(&mut s).unwrap();
    assert_eq!((h.request_id, h.status), (9, CuResult::INVALID_VALUE));
    // A no-reply flag on a call that must answer is remembered, then reported by a sync.
    let body = ops::encode(&Request::MemGetInfo).unwrap();
    s.write_all(&FrameHeader::request(10, FLAG_NO_REPLY, body.len() as u32, 0).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    let ctx = raw_handle(&mut s, &Request::CtxCreate { flags: 0 });
    let body = ops::encode(&Request::CtxSynchronize { ctx }).unwrap();
    s.write_all(&FrameHeader::request(11, 0, body.len() as u32, 0).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    let (h, _) = read_raw(&mut s).unwrap();
    assert_eq!((h.request_id, h.status), (11, CuResult::INVALID_VALUE));
    // Still a working session.
    raw_handle(&mut s, &Request::CtxCreate { flags: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_without_overlap_is_refused() {
    let b = TestBackend::start().await;
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = ops::encode(&Request::Hello {
        version_min: 50,
        version_max: 60,
        token: TOKEN.into(),
        client: "future".into(),
        limits: Default::default(),
    })
    .unwrap();
    s.write_all(&FrameHeader::request(1, 0, body.len() as u32, 0).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    let (h, reply) = read_raw(&mut s).unwrap();
    assert_eq!(
        (h.kind, h.status),
        (FrameKind::Goodbye, CuResult::NOT_PERMITTED)
    );
    match reply {
        Some(Reply::Error(why)) => assert!(why.contains("version"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_fails_clients_cleanly_and_frees_memory() {
    let mut b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    c.mem_alloc(ctx, 4 << 20).await.unwrap();
    b.shutdown().await;
    let e = c.null().await.unwrap_err();
    assert_eq!(e.cuda_result(), CuResult::DEVICE_UNAVAILABLE);
    assert!(e.to_string().contains("shutting down"), "{e}");
    assert_eq!(b.executor.memory_used(), 0);
    assert!(
        std::net::TcpStream::connect(b.addr).is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_refuses_extra_connections() {
    let b = TestBackend::start_with(|c| c.max_sessions = 1).await;
    let _first = b.client().await;
    let e = Client::connect(&b.addr(), TOKEN)
        .await
        .err()
        .expect("second session refused");
    match e {
        ClientError::Refused { reason, .. } => {
            assert!(reason.contains("session limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

// ---- raw protocol helpers ----

async fn raw_session(b: &TestBackend) -> std::net::TcpStream {
    let addr = b.addr;
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = ops::encode(&Request::Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            token: TOKEN.into(),
            client: "raw".into(),
            limits: Default::default(),
        })
        .unwrap();
        s.write_all(&FrameHeader::request(1, 0, body.len() as u32, 0).encode())
            .unwrap();
        s.write_all(&body).unwrap();
        let (h, r) = read_raw(&mut s).unwrap();
        assert_eq!(h.status, CuResult::SUCCESS);
        assert!(matches!(r, Some(Reply::Welcome { .. })));
        s
    })
    .await
    .unwrap()
}

fn raw_handle(s: &mut std::net::TcpStream, req: &Request) -> u64 {
    let body = ops::encode(req).unwrap();
    s.write_all(&FrameHeader::request(1000, 0, body.len() as u32, 0).encode())
        .unwrap();
    s.write_all(&body).unwrap();
    let (h, r) = read_raw(s).unwrap();
    assert_eq!(h.status, CuResult::SUCCESS, "{req:?}");
    match r {
        Some(Reply::Handle(x)) | Some(Reply::DevPtr(x)) => x,
        other => panic!("{other:?}"),
    }
}

fn read_raw(s: &mut std::net::TcpStream) -> Option<(FrameHeader, Option<Reply>)> {
    let mut hdr = [0u8; HEADER_LEN];
    s.read_exact(&mut hdr).ok()?;
    let h = FrameHeader::decode(&hdr, 1 << 16, 1 << 30).ok()?;
    let mut ctrl = vec![0u8; h.ctrl_len as usize];
    s.read_exact(&mut ctrl).ok()?;
    let mut data = vec![0u8; h.data_len as usize];
    s.read_exact(&mut data).ok()?;
    let reply = if ctrl.is_empty() {
        None
    } else {
        ops::decode(&ctrl).ok()
    };
    Some((h, reply))
}

// ---- kernels (the PTX CPU executor behind the wire protocol) ----

fn kernel_ptx(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/kernels/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn pack(f: &netgpu_client::FunctionInfo, args: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0u8; f.param_buffer_size as usize];
    for (p, a) in f.params.iter().zip(args) {
        buf[p.offset as usize..p.offset as usize + a.len()].copy_from_slice(a);
    }
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_functions_and_pipelined_launches() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let m = c
        .module_load(ctx, &kernel_ptx("vector_add.ptx"))
        .await
        .unwrap();
    let f = c.module_get_function(m, "vector_add").await.unwrap();
    assert_eq!(f.params.len(), 4);
    assert_eq!(f.param_buffer_size, 28, "three pointers and an int");
    assert_eq!(
        c.module_get_function(m, "nope")
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::NOT_FOUND
    );
    let n = 4096usize;
    let xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (da, db, dc) = (
        c.mem_alloc(ctx, (n * 4) as u64).await.unwrap(),
        c.mem_alloc(ctx, (n * 4) as u64).await.unwrap(),
        c.mem_alloc(ctx, (n * 4) as u64).await.unwrap(),
    );
    c.memcpy_htod(ctx, da, &bytes, 0).await.unwrap();
    c.memcpy_htod(ctx, db, &bytes, 0).await.unwrap();
    // Many stream-ordered launches, no round trip each: out = a + b, then out = a + out ...
    let first = pack(
        &f,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
    );
    c.launch_kernel(
        f.handle,
        [(n / 256) as u32, 1, 1],
        [256, 1, 1],
        0,
        0,
        &first,
    )
    .await
    .unwrap();
    let again = pack(
        &f,
        &[
            &da.to_le_bytes(),
            &dc.to_le_bytes(),
            &dc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
    );
    for _ in 0..9 {
        c.launch_kernel(
            f.handle,
            [(n / 256) as u32, 1, 1],
            [256, 1, 1],
            0,
            0,
            &again,
        )
        .await
        .unwrap();
    }
    c.ctx_synchronize(ctx).await.unwrap();
    let out = c.memcpy_dtoh(ctx, dc, (n * 4) as u64, 0).await.unwrap();
    for (i, ch) in out.chunks_exact(4).enumerate() {
        assert_eq!(
            f32::from_le_bytes(ch.try_into().unwrap()),
            xs[i] * 11.0,
            "element {i}"
        );
    }
    c.module_unload(m).await.unwrap();
    assert_eq!(
        c.module_get_function(m, "vector_add")
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_HANDLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_kernel_poisons_its_context_like_cuda() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    let other = c.ctx_create(0).await.unwrap();
    let m = c
        .module_load(ctx, &kernel_ptx("vector_add.ptx"))
        .await
        .unwrap();
    let f = c.module_get_function(m, "vector_add").await.unwrap();
    let small = c.mem_alloc(ctx, 64).await.unwrap();
    let params = pack(
        &f,
        &[
            &small.to_le_bytes(),
            &small.to_le_bytes(),
            &small.to_le_bytes(),
            &1024i32.to_le_bytes(),
        ],
    );
    c.launch_kernel(f.handle, [4, 1, 1], [256, 1, 1], 0, 0, &params)
        .await
        .unwrap();
    assert_eq!(
        c.ctx_synchronize(ctx).await.unwrap_err().cuda_result(),
        CuResult::ILLEGAL_ADDRESS
    );
    // Sticky: the context stays unusable; another context is unaffected.
    assert_eq!(
        c.mem_alloc(ctx, 16).await.unwrap_err().cuda_result(),
        CuResult::ILLEGAL_ADDRESS
    );
    c.mem_alloc(other, 16).await.unwrap();
    // Another session's pointer is not memory of this one, even inside a kernel.
    let c2 = b.client().await;
    let ctx2 = c2.ctx_create(0).await.unwrap();
    let m2 = c2
        .module_load(ctx2, &kernel_ptx("vector_add.ptx"))
        .await
        .unwrap();
    let f2 = c2.module_get_function(m2, "vector_add").await.unwrap();
    let mine = c2.mem_alloc(ctx2, 1024).await.unwrap();
    let victim = c.mem_alloc(other, 1024).await.unwrap();
    let p2 = pack(
        &f2,
        &[
            &mine.to_le_bytes(),
            &mine.to_le_bytes(),
            &victim.to_le_bytes(),
            &4i32.to_le_bytes(),
        ],
    );
    c2.launch_kernel(f2.handle, [1, 1, 1], [4, 1, 1], 0, 0, &p2)
        .await
        .unwrap();
    assert_eq!(
        c2.ctx_synchronize(ctx2).await.unwrap_err().cuda_result(),
        CuResult::ILLEGAL_ADDRESS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ptx_is_refused_and_globals_are_session_memory() {
    let b = TestBackend::start().await;
    let c = b.client().await;
    let ctx = c.ctx_create(0).await.unwrap();
    assert_eq!(
        c.module_load(ctx, b".version 8.8\n.visible .entry k( {")
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_PTX
    );
    assert_eq!(
        c.module_load(ctx, &[0xff, 0xfe, 0])
            .await
            .unwrap_err()
            .cuda_result(),
        CuResult::INVALID_IMAGE
    );
    let ptx = b".version 8.8\n.target sm_80\n.address_size 64\n.global .align 4 .u32 counter = 41;\n.visible .entry bump()\n{\n.reg .b32 %r<2>;\natom.global.add.u32 %r1, [counter], 1;\nret;\n}\n";
    let m = c.module_load(ctx, ptx).await.unwrap();
    let (g, size) = c.module_get_global(m, "counter").await.unwrap();
    assert_eq!(size, 4);
    let f = c.module_get_function(m, "bump").await.unwrap();
    c.launch_kernel(f.handle, [2, 1, 1], [64, 1, 1], 0, 0, &[])
        .await
        .unwrap();
    let v = c.memcpy_dtoh(ctx, g, 4, 0).await.unwrap();
    assert_eq!(u32::from_le_bytes(v.try_into().unwrap()), 41 + 128);
    let used = c.mem_get_info().await.unwrap();
    c.module_unload(m).await.unwrap();
    assert_eq!(
        c.mem_get_info().await.unwrap().0,
        used.0 + 4,
        "unloading frees module globals"
    );
}
