//! Sample traffic: every request a guest can send, each with its data, the caller's output
//! size and a reply a backend gives it. The one list the codec's round-trip tests, the fuzz
//! targets' seed corpora (`proto/fuzz/seeds`, vdev's `fuzz/seeds`) and other crates' tests
//! draw on, so a new request variant is covered everywhere once it has a sample here (the
//! codec's round-trip test counts the variants the samples cover).
//!
//! Built for tests only (`cfg(test)`) or with the `samples` feature.
#![allow(clippy::unwrap_used)]

use crate::wire::ops::{
    Copy3D, DeviceInfo, FunctionInfo, MemLoc, ParamInfo, Reply, Request, LAUNCH_COOPERATIVE,
};

pub fn function() -> FunctionInfo {
    FunctionInfo {
        handle: 0x77,
        params: vec![
            ParamInfo { offset: 0, size: 8 },
            ParamInfo { offset: 8, size: 4 },
        ],
        param_buffer_size: 12,
        attributes: vec![(0, 1024), (1, 48)],
    }
}

pub fn device() -> DeviceInfo {
    DeviceInfo {
        name: "test gpu".into(),
        total_mem: 80 << 30,
        cc_major: 9,
        cc_minor: 0,
        multiprocessors: 132,
        uuid: [7; 16],
        driver_version: 13000,
        executor: "cuda".into(),
        attributes: vec![(1, 1024), (16, 132)],
    }
}

pub const DEV: MemLoc = MemLoc::Device {
    ptr: 0x1000,
    pitch: 256,
    height: 4,
};

/// Every request a guest can send, with its data, the caller's output size, and the reply
/// (status, control, data) a backend gives it.
/// (request, its data, the caller's output size, the reply, the reply's data).
pub type Sample = (Request, Vec<u8>, u64, Reply, Vec<u8>);

pub fn samples() -> Vec<Sample> {
    let none = Vec::new;
    vec![
        (
            Request::DeviceQuery,
            none(),
            0,
            Reply::Device(device()),
            none(),
        ),
        (
            Request::CtxCreate { flags: 4 },
            none(),
            0,
            Reply::Handle(1),
            none(),
        ),
        (
            Request::CtxDestroy { ctx: 1 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::CtxSynchronize { ctx: 1 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::MemAlloc {
                ctx: 1,
                size: 1 << 33,
            },
            none(),
            0,
            Reply::DevPtr(0xdead_0000),
            none(),
        ),
        (
            Request::MemFree { ptr: 0xdead_0000 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::MemGetInfo,
            none(),
            0,
            Reply::MemInfo { free: 5, total: 10 },
            none(),
        ),
        (
            Request::MemcpyHtoD {
                ctx: 1,
                dst: 0x10,
                stream: 3,
            },
            b"host bytes".to_vec(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::MemcpyDtoH {
                ctx: 1,
                src: 0x20,
                len: 5,
                stream: 3,
            },
            none(),
            5,
            Reply::Done,
            b"abcde".to_vec(),
        ),
        (
            Request::MemcpyDtoD {
                ctx: 1,
                dst: 1,
                src: 2,
                len: 3,
                stream: 4,
            },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::Memset {
                ctx: 1,
                dst: 0x40,
                value: 0xdead_beef,
                elem_size: 4,
                count: 9,
                stream: 0,
            },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::ModuleLoad {
                ctx: 1,
                parts: vec![],
            },
            b".version 8.8".to_vec(),
            0,
            Reply::Handle(9),
            none(),
        ),
        // One part spanning all the data (the codec fuzz target's finding: it came back as
        // `parts: []`).
        (
            Request::ModuleLoad {
                ctx: 1,
                parts: vec![7],
            },
            b"abcdefg".to_vec(),
            0,
            Reply::Handle(10),
            none(),
        ),
        (
            Request::ModuleLoad {
                ctx: 1,
                parts: vec![3, 4],
            },
            b"abcdefg".to_vec(),
            0,
            Reply::Handle(10),
            none(),
        ),
        (
            Request::ModuleUnload { module: 9 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::ModuleGetFunction {
                module: 9,
                name: "vector_add".into(),
            },
            none(),
            0,
            Reply::Function(function()),
            none(),
        ),
        (
            Request::ModuleGetGlobal {
                module: 9,
                name: "table".into(),
            },
            none(),
            0,
            Reply::Global {
                ptr: 0x9000,
                size: 64,
            },
            none(),
        ),
        (
            Request::LaunchKernel {
                func: 0x77,
                grid: [1, 2, 3],
                block: [32, 1, 1],
                shared_mem_bytes: 128,
                stream: 5,
                flags: 0,
            },
            vec![1; 12],
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::LaunchKernel {
                func: 0x77,
                grid: [4, 1, 1],
                block: [64, 1, 1],
                shared_mem_bytes: 0,
                stream: 5,
                flags: LAUNCH_COOPERATIVE,
            },
            vec![2; 12],
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::FuncSetAttribute {
                func: 0x77,
                attr: 8,
                value: 65536,
            },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::StreamCreate {
                ctx: 1,
                flags: 1,
                priority: 0,
            },
            none(),
            0,
            Reply::Handle(5),
            none(),
        ),
        (
            Request::StreamCreate {
                ctx: 1,
                flags: 1,
                priority: -2,
            },
            none(),
            0,
            Reply::Handle(6),
            none(),
        ),
        (
            Request::StreamWaitEvent {
                stream: 5,
                event: 8,
            },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::Memcpy3D {
                ctx: 1,
                copy: Copy3D {
                    src: MemLoc::Host,
                    dst: DEV,
                    width: 3,
                    height: 2,
                    depth: 1,
                },
                stream: 5,
            },
            b"123456".to_vec(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::Memcpy3D {
                ctx: 1,
                copy: Copy3D {
                    src: DEV,
                    dst: MemLoc::Host,
                    width: 2,
                    height: 2,
                    depth: 1,
                },
                stream: 5,
            },
            none(),
            0,
            Reply::Done,
            b"wxyz".to_vec(),
        ),
        (
            Request::MemFreeAsync {
                ptr: 0xdead_0000,
                stream: 5,
            },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::ConsoleRead { max: 100 },
            none(),
            0,
            Reply::Done,
            b"hello from thread 0\n".to_vec(),
        ),
        (
            Request::StreamDestroy { stream: 5 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::StreamSynchronize { stream: 5 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::StreamQuery { stream: 5 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::EventCreate { ctx: 1, flags: 2 },
            none(),
            0,
            Reply::Handle(8),
            none(),
        ),
        (
            Request::EventRecord {
                event: 8,
                stream: 5,
            },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::EventSynchronize { event: 8 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::EventQuery { event: 8 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
        (
            Request::EventElapsedTime { start: 8, end: 9 },
            none(),
            0,
            Reply::ElapsedMs(1.5),
            none(),
        ),
        (
            Request::EventDestroy { event: 8 },
            none(),
            0,
            Reply::Done,
            none(),
        ),
    ]
}

/// The seed corpus of `proto/fuzz`'s `wire_frames` target (`proto/fuzz/seeds/wire_frames/`):
/// each sample's request and reply control sections as a peer sends them, and each request as
/// a whole frame (header, control section). `cargo test -p netgpu-proto --lib
/// write_wire_frames_seeds -- --ignored` writes them; the plain test fails when they are stale.
#[cfg(test)]
mod fuzz_seeds {
    use std::path::PathBuf;

    use crate::wire::frame::FrameHeader;
    use crate::wire::ops::{encode, Reply, Request, SessionLimits};
    use crate::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/wire_frames")
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut reqs: Vec<(Request, usize, Reply)> = vec![(
            Request::Hello {
                version_min: MIN_PROTOCOL_VERSION,
                version_max: PROTOCOL_VERSION,
                token: "token".into(),
                client: "netgpu-vdev vm1".into(),
                limits: SessionLimits {
                    memory_quota: Some(1 << 30),
                    kernel_time_limit_ms: Some(5000),
                },
            },
            0,
            Reply::Error("unknown tenant".into()),
        )];
        reqs.extend(
            super::samples()
                .into_iter()
                .map(|(req, data, _, reply, _)| (req, data.len(), reply)),
        );
        let mut out = Vec::new();
        for (i, (req, data_len, reply)) in reqs.iter().enumerate() {
            let ctrl = encode(req).unwrap();
            let mut frame =
                FrameHeader::request(i as u64 + 1, 0, ctrl.len() as u32, *data_len as u32)
                    .encode()
                    .to_vec();
            frame.extend_from_slice(&ctrl);
            out.push(ctrl);
            out.push(encode(reply).unwrap());
            out.push(frame);
        }
        // The backend's frames that answer no request.
        out.push(FrameHeader::busy().encode().to_vec());
        out
    }

    #[test]
    #[ignore = "writes proto/fuzz/seeds/wire_frames; run after changing the wire format"]
    fn write_wire_frames_seeds() {
        let _ = std::fs::remove_dir_all(dir());
        std::fs::create_dir_all(dir()).unwrap();
        for (i, s) in seeds().iter().enumerate() {
            std::fs::write(dir().join(format!("seed-{i:03}")), s).unwrap();
        }
    }

    #[test]
    fn the_wire_frames_seeds_match_the_generator() {
        let want = seeds();
        let have = std::fs::read_dir(dir()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            have,
            want.len(),
            "proto/fuzz/seeds/wire_frames is stale: run `cargo test -p netgpu-proto --lib \
             write_wire_frames_seeds -- --ignored`"
        );
        for (i, s) in want.iter().enumerate() {
            let got = std::fs::read(dir().join(format!("seed-{i:03}"))).unwrap_or_default();
            assert!(
                &got == s,
                "wire_frames seed {i} is stale: run `cargo test -p netgpu-proto --lib \
                 write_wire_frames_seeds -- --ignored`"
            );
        }
    }
}
