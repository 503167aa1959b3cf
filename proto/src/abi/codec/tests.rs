//! Round trips of every request through both halves of the codec: the guest encodes it, the
//! device decodes it from the bytes the guest's buffers hold, a backend reply goes back
//! through the device's encoder into the output buffers, and the guest decodes the reply.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::samples::{function, samples};
use crate::wire::ops::{SessionLimits, LAUNCH_COOPERATIVE};

/// The guest's buffers as the device sees them after the module pinned them: the inputs
/// concatenated, and the output buffers concatenated (with each buffer's offset).
struct Pinned {
    input: Vec<u8>,
    output: Vec<u8>,
    /// (buffer, offset in `output`, length).
    outputs: Vec<(GuestBuffer, usize, usize)>,
}

fn pin(gc: &GuestCommand, data: &[u8], output_len: u64) -> Pinned {
    let mut p = Pinned {
        input: Vec::new(),
        output: Vec::new(),
        outputs: Vec::new(),
    };
    let mut seen_output = false;
    for b in &gc.buffers {
        match *b {
            GuestBuffer::Prefix => p.input.extend_from_slice(&gc.prefix),
            GuestBuffer::Data => p.input.extend_from_slice(data),
            GuestBuffer::Output | GuestBuffer::Scratch(_) => {
                let n = match *b {
                    GuestBuffer::Scratch(n) => n as usize,
                    _ => output_len as usize,
                };
                p.outputs.push((*b, p.output.len(), n));
                p.output.resize(p.output.len() + n, 0);
            }
        }
        assert!(
            !seen_output || b.is_output(),
            "inputs come before outputs: {:?}",
            gc.buffers
        );
        seen_output |= b.is_output();
    }
    p
}

fn device_side(gc: &GuestCommand, p: &Pinned) -> DeviceRequest {
    let n = prefix_len(&gc.command, p.input.len() as u64).unwrap();
    match decode(
        &gc.command,
        p.input.len() as u64,
        p.output.len() as u64,
        &p.input[..n],
    )
    .unwrap()
    {
        Decoded::Forward(d) => d,
        Decoded::Nop => panic!("not a NOP"),
    }
}

fn round_trip(
    req: &Request,
    data: &[u8],
    output_len: u64,
    reply: &Reply,
    reply_data: &[u8],
    wire: bool,
) {
    let opts = EncodeOptions { wire, post: false };
    let gc = match encode_request(req, data.len() as u64, output_len, opts) {
        Ok(gc) => gc,
        Err(CuResult::NOT_SUPPORTED) if !wire => return,
        Err(e) => panic!("{req:?}: {e}"),
    };
    let spec = spec(gc.command.opcode).unwrap();
    let mut p = pin(&gc, data, output_len);
    assert_eq!(
        spec.input,
        !p.input.is_empty() || gc.buffers.contains(&GuestBuffer::Data)
    );
    let d = device_side(&gc, &p);
    assert_eq!(&d.request, req, "{req:?} decodes to itself");
    let skip = d.data_skip as usize;
    assert_eq!(
        &p.input[skip..skip + d.data_len as usize],
        data,
        "{req:?} data"
    );
    let ctrl = ops::encode(reply).unwrap();
    let out = encode_reply(
        d.form,
        CuResult::SUCCESS,
        &ctrl,
        reply_data.len() as u64,
        p.output.len() as u64,
    )
    .unwrap();
    p.output[..out.output.len()].copy_from_slice(&out.output);
    let at = out.data_at as usize;
    p.output[at..at + reply_data.len()].copy_from_slice(reply_data);
    let c = Completion {
        cid: 1,
        result: out.result.0,
        value0: out.value0,
        value1: out.value1,
        sq_head: 0,
        flags: abi::CQE_FLAG_PHASE,
        reserved: 0,
    };
    let scratch = p
        .outputs
        .iter()
        .find(|o| matches!(o.0, GuestBuffer::Scratch(_)))
        .map(|&(_, at, n)| &p.output[at..at + n])
        .unwrap_or(&[]);
    let g = decode_completion(&gc, &c, scratch).unwrap();
    let mut want = reply.clone();
    if !wire {
        if let Reply::Function(f) = &mut want {
            f.attributes.clear(); // the fixed table has no room for attributes
        }
    }
    assert_eq!(g.reply, want, "{req:?}");
    let got_data = if g.data.is_empty() {
        p.outputs
            .iter()
            .find(|o| o.0 == GuestBuffer::Output)
            .map(|&(_, at, n)| p.output[at..at + n].to_vec())
            .unwrap_or_default()
    } else {
        scratch[g.data.clone()].to_vec()
    };
    assert_eq!(got_data, reply_data, "{req:?} reply data");
}

#[test]
fn every_request_survives_both_halves_of_the_codec() {
    let samples = samples();
    let mut names: Vec<&str> = samples.iter().map(|s| s.0.name()).collect();
    names.sort();
    names.dedup();
    // Every variant but Hello (never a device request) and Null (a NOP, below) has a sample:
    // 33 variants (`Request::name`), a new one needs a sample and this count.
    assert_eq!(names.len() + 2, 33, "{names:?}");
    for (req, data, out, reply, reply_data) in &samples {
        round_trip(req, data, *out, reply, reply_data, true);
        round_trip(req, data, *out, reply, reply_data, false);
    }
}

#[test]
fn requests_without_a_fixed_form_need_the_wire_opcode() {
    let fixed = EncodeOptions {
        wire: false,
        post: false,
    };
    let wire = EncodeOptions {
        wire: true,
        post: false,
    };
    for (req, data, out, ..) in samples() {
        let f = encode_request(&req, data.len() as u64, out, fixed);
        let w = encode_request(&req, data.len() as u64, out, wire).unwrap();
        match f {
            Ok(f) => assert_ne!(f.command.opcode, op::WIRE_REQUEST),
            Err(e) => {
                assert_eq!(e, CuResult::NOT_SUPPORTED);
                assert_eq!(w.command.opcode, op::WIRE_REQUEST, "{req:?}");
            }
        }
    }
    let lossy = Request::ModuleGetFunction {
        module: 1,
        name: "f".into(),
    };
    assert_eq!(
        encode_request(&lossy, 0, 0, wire).unwrap().command.opcode,
        op::WIRE_REQUEST,
        "attributes need the wire form"
    );
}

#[test]
fn a_null_request_is_a_nop_the_device_answers_itself() {
    let gc = encode_request(
        &Request::Null,
        0,
        0,
        EncodeOptions {
            wire: true,
            post: false,
        },
    )
    .unwrap();
    assert_eq!(gc.command.opcode, op::NOP);
    assert_eq!(decode(&gc.command, 0, 0, &[]).unwrap(), Decoded::Nop);
}

#[test]
fn posted_work_is_async_and_has_no_reply_room() {
    let post = EncodeOptions {
        wire: true,
        post: true,
    };
    let launch = Request::LaunchKernel {
        func: 1,
        grid: [1; 3],
        block: [1; 3],
        shared_mem_bytes: 0,
        stream: 2,
        flags: LAUNCH_COOPERATIVE,
    };
    let gc = encode_request(&launch, 8, 0, post).unwrap();
    assert_eq!(gc.command.opcode, op::WIRE_REQUEST);
    assert_ne!(gc.command.flags & abi::CMD_FLAG_ASYNC, 0);
    assert_eq!(gc.buffers.last(), Some(&GuestBuffer::Scratch(0)));
    let mut input = gc.prefix.clone();
    input.extend_from_slice(&[0; 8]);
    let n = prefix_len(&gc.command, input.len() as u64).unwrap();
    let Decoded::Forward(d) = decode(&gc.command, input.len() as u64, 0, &input[..n]).unwrap()
    else {
        panic!()
    };
    assert!(d.no_reply);
    // A fixed launch without ASYNC waits for its stream.
    let sync = encode_request(
        &Request::LaunchKernel {
            func: 1,
            grid: [1; 3],
            block: [1; 3],
            shared_mem_bytes: 0,
            stream: 2,
            flags: 0,
        },
        8,
        0,
        EncodeOptions {
            wire: true,
            post: false,
        },
    )
    .unwrap();
    let Decoded::Forward(d) = decode(&sync.command, 8, 0, &[]).unwrap() else {
        panic!()
    };
    assert_eq!((d.no_reply, d.then_sync), (true, Some(2)));
    // Synchronising requests cannot be posted.
    assert_eq!(
        encode_request(&Request::StreamSynchronize { stream: 1 }, 0, 0, post),
        Err(CuResult::INVALID_VALUE)
    );
}

fn wire_cmd(req: &Request) -> (Command, Vec<u8>) {
    let prefix = ops::encode(req).unwrap();
    (
        Command::new(op::WIRE_REQUEST, 1, &[prefix.len() as u64]),
        prefix,
    )
}

#[test]
fn hostile_wire_requests_are_refused_before_anything_is_sent() {
    let hello = Request::Hello {
        version_min: 2,
        version_max: 2,
        token: "t".into(),
        client: "c".into(),
        limits: SessionLimits::default(),
    };
    let (c, p) = wire_cmd(&hello);
    assert!(matches!(
        decode(&c, p.len() as u64, 64, &p),
        Err(DecodeError::Hello)
    ));
    // Data on a request that takes none.
    let (c, p) = wire_cmd(&Request::StreamQuery { stream: 1 });
    assert!(matches!(
        decode(&c, p.len() as u64 + 4, 64, &p),
        Err(DecodeError::UnexpectedData(_))
    ));
    // A control length that does not decode exactly: short, and with trailing bytes.
    let (mut c, mut p) = wire_cmd(&Request::MemAlloc { ctx: 1, size: 300 });
    c.args[0] -= 1;
    assert!(matches!(
        decode(&c, p.len() as u64, 64, &p[..p.len() - 1]),
        Err(DecodeError::Control(_))
    ));
    c.args[0] += 2;
    p.push(0);
    assert!(matches!(
        decode(&c, p.len() as u64, 64, &p),
        Err(DecodeError::Control(_))
    ));
    // Too little room for the reply of a device-to-host copy.
    let (c, p) = wire_cmd(&Request::MemcpyDtoH {
        ctx: 1,
        src: 0,
        len: 1000,
        stream: 0,
    });
    assert!(matches!(
        decode(&c, p.len() as u64, 1000, &p),
        Err(DecodeError::OutputTooSmall { .. })
    ));
    // Control lengths out of range, and stray arguments.
    let (mut c, p) = wire_cmd(&Request::MemGetInfo);
    c.args[0] = u64::from(MAX_CTRL_LEN) + 1;
    assert!(prefix_len(&c, u64::MAX).is_err());
    c.args[0] = 0;
    assert!(prefix_len(&c, 10).is_err());
    c.args[0] = p.len() as u64;
    assert!(
        prefix_len(&c, p.len() as u64 - 1).is_err(),
        "beyond the input"
    );
    c.args[3] = 1;
    assert!(matches!(
        decode(&c, p.len() as u64, 64, &p),
        Err(DecodeError::BadArg { index: 3, .. })
    ));
    // ASYNC on a request that must answer.
    let (mut c, p) = wire_cmd(&Request::CtxSynchronize { ctx: 1 });
    c.flags = abi::CMD_FLAG_ASYNC;
    assert!(matches!(
        decode(&c, p.len() as u64, 64, &p),
        Err(DecodeError::NotAsync(_))
    ));
}

#[test]
fn fixed_commands_with_bad_arguments_or_buffers_are_refused() {
    let e = |c: Command, i: u64, o: u64, p: &[u8]| decode(&c, i, o, p).unwrap_err();
    assert_eq!(
        e(Command::new(0x7777, 1, &[]), 0, 0, &[]).cuda_result(),
        CuResult::NOT_SUPPORTED
    );
    assert_eq!(
        e(Command::new(op::NOP, 1, &[]).with_flags(0x8000), 0, 0, &[]).cuda_result(),
        CuResult::NOT_SUPPORTED
    );
    let mut r = Command::new(op::NOP, 1, &[]);
    r.reserved = 1;
    assert!(matches!(e(r, 0, 0, &[]), DecodeError::Reserved(1)));
    let asyncq = Command::new(op::STREAM_QUERY, 1, &[1]).with_flags(abi::CMD_FLAG_ASYNC);
    assert!(matches!(e(asyncq, 0, 0, &[]), DecodeError::NotAsync(_)));
    assert!(matches!(
        e(Command::new(op::MEMSET, 1, &[1, 2, 3, 3, 4, 0]), 0, 0, &[]),
        DecodeError::BadArg { index: 3, .. }
    ));
    assert!(matches!(
        e(Command::new(op::CTX_CREATE, 1, &[1 << 40]), 0, 0, &[]),
        DecodeError::BadArg { index: 0, .. }
    ));
    // Output on a command that writes none, input on one that reads none.
    assert!(matches!(
        e(Command::new(op::MEMCPY_HTOD, 1, &[1, 2, 0]), 4, 4, &[]),
        DecodeError::BadLength { .. }
    ));
    assert!(matches!(
        e(Command::new(op::MEMCPY_DTOH, 1, &[1, 2, 0]), 4, 4, &[]),
        DecodeError::BadLength { .. }
    ));
    assert!(matches!(
        e(Command::new(op::DEVICE_QUERY, 1, &[]), 0, 1023, &[]),
        DecodeError::BadLength { .. }
    ));
    assert!(matches!(
        e(Command::new(op::LAUNCH_KERNEL, 1, &[]), 40000, 0, &[]),
        DecodeError::BadLength { .. }
    ));
    // Symbol names: the length argument must be the input's length, and UTF-8.
    let name = Command::new(op::MODULE_GET_GLOBAL, 1, &[1, 4]);
    assert!(prefix_len(&name, 0).is_err());
    assert!(prefix_len(&name, u64::from(abi::MAX_NAME_LEN) + 1).is_err());
    assert_eq!(prefix_len(&name, 4).unwrap(), 4);
    assert!(decode(&name, 4, 0, b"abcd").is_ok());
    assert!(matches!(e(name, 5, 0, b"abcde"), DecodeError::BadName));
    assert!(matches!(e(name, 4, 0, &[0xff; 4]), DecodeError::BadName));
}

#[test]
fn replies_that_break_the_protocol_are_errors_not_panics() {
    let (c, p) = wire_cmd(&Request::MemcpyDtoH {
        ctx: 1,
        src: 0,
        len: 4,
        stream: 0,
    });
    let Decoded::Forward(w) = decode(&c, p.len() as u64, 68, &p).unwrap() else {
        panic!()
    };
    let done = ops::encode(&Reply::Done).unwrap();
    assert!(encode_reply(w.form, CuResult::SUCCESS, &done, 4, 68).is_ok());
    assert!(matches!(
        encode_reply(w.form, CuResult::SUCCESS, &done, 100, 68),
        Err(ReplyError::DataTooLarge { .. })
    ));
    let Decoded::Forward(f) =
        decode(&Command::new(op::MEMCPY_DTOH, 1, &[1, 0, 0]), 0, 4, &[]).unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        encode_reply(f.form, CuResult::SUCCESS, &done, 3, 4),
        Err(ReplyError::DataLength { got: 3, want: 4 })
    ));
    let handle = ops::encode(&Reply::Handle(1)).unwrap();
    assert!(matches!(
        encode_reply(f.form, CuResult::SUCCESS, &handle, 4, 4),
        Err(ReplyError::Unexpected { .. })
    ));
    assert!(matches!(
        encode_reply(f.form, CuResult::SUCCESS, &[0xff, 0xff], 4, 4),
        Err(ReplyError::Control(_))
    ));
    // A failure writes nothing, whatever the reply says.
    let r = encode_reply(f.form, CuResult::ILLEGAL_ADDRESS, &handle, 0, 4).unwrap();
    assert_eq!(r, DeviceReply::status(CuResult::ILLEGAL_ADDRESS));
}

#[test]
fn the_fixed_parameter_table_holds_what_fits_and_reports_the_count() {
    let Decoded::Forward(d) = decode(
        &Command::new(op::MODULE_GET_FUNCTION, 1, &[9, 1]),
        1,
        8,
        b"f",
    )
    .unwrap() else {
        panic!()
    };
    let ctrl = ops::encode(&Reply::Function(function())).unwrap();
    let r = encode_reply(d.form, CuResult::SUCCESS, &ctrl, 0, 8).unwrap();
    assert_eq!(r.output.len(), 8, "one record fits");
    assert_eq!(r.value1 >> 32, 2, "but the count says two");
}

#[test]
fn every_opcode_has_a_spec_and_nothing_else_does() {
    for o in 0..=u16::MAX {
        assert_eq!(spec(o).is_some(), op::ALL.contains(&o), "{o:#x}");
    }
}

#[test]
fn random_commands_and_prefixes_never_panic_the_decoder() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..50_000 {
        let mut raw = [0u8; Command::SIZE];
        for b in raw.iter_mut() {
            *b = next() as u8;
        }
        let mut cmd = Command::from_bytes(&raw);
        cmd.opcode = op::ALL[(next() % op::ALL.len() as u64) as usize];
        cmd.flags &= abi::CMD_FLAGS_ALL;
        cmd.reserved = 0;
        if next() % 2 == 0 {
            cmd.args[0] %= 64;
        }
        let input_len = next() % 200;
        let output_len = next() % 2000;
        if let Ok(n) = prefix_len(&cmd, input_len) {
            let prefix: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            if let Ok(Decoded::Forward(d)) = decode(&cmd, input_len, output_len, &prefix) {
                assert!(d.data_skip + d.data_len <= input_len);
                let ctrl: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
                let _ = encode_reply(d.form, CuResult::SUCCESS, &ctrl, next() % 3000, output_len);
            }
        }
    }
}

/// Found by the vdev `codec` fuzz target: an 8-byte memset was encoded as a MEMSET the device
/// side refuses (`BadArg`); it is now refused at once with the driver's error.
#[test]
fn memset_of_an_element_size_the_device_refuses_is_not_encoded() {
    for wire in [true, false] {
        let opts = EncodeOptions { wire, post: false };
        for (es, ok) in [
            (1u8, true),
            (2, true),
            (4, true),
            (8, false),
            (0, false),
            (3, false),
        ] {
            let req = Request::Memset {
                ctx: 1,
                dst: 8,
                value: 0,
                elem_size: es,
                count: 2,
                stream: 0,
            };
            let r = encode_request(&req, 0, 0, opts);
            if ok {
                let gc = r.unwrap();
                let got = decode(&gc.command, 0, 0, &[]).unwrap();
                assert!(matches!(got, Decoded::Forward(d) if d.request == req));
            } else {
                assert_eq!(r.err(), Some(CuResult::INVALID_VALUE), "elem_size {es}");
            }
        }
    }
}

/// Found by the vdev `codec` fuzz target: `ModuleGetFunction` with an empty name was encoded
/// as a fixed `MODULE_GET_FUNCTION` the device side refuses (`BadName`). Names the fixed
/// opcodes cannot carry go as wire requests, or are refused without the wire opcode.
#[test]
fn symbol_names_the_fixed_opcodes_cannot_carry_are_not_encoded_as_them() {
    let long = "k".repeat(abi::MAX_NAME_LEN as usize + 1);
    for name in ["", long.as_str()] {
        for req in [
            Request::ModuleGetFunction {
                module: 1,
                name: name.into(),
            },
            Request::ModuleGetGlobal {
                module: 1,
                name: name.into(),
            },
        ] {
            let no_wire = EncodeOptions {
                wire: false,
                post: false,
            };
            assert_eq!(
                encode_request(&req, 0, 0, no_wire).err(),
                Some(CuResult::INVALID_VALUE)
            );
            let wire = EncodeOptions {
                wire: true,
                post: false,
            };
            let gc = encode_request(&req, 0, 0, wire).unwrap();
            assert_eq!(gc.command.opcode, op::WIRE_REQUEST);
            let n = prefix_len(&gc.command, gc.prefix.len() as u64).unwrap();
            match decode(
                &gc.command,
                gc.prefix.len() as u64,
                codec_room(&gc),
                &gc.prefix[..n],
            ) {
                Ok(Decoded::Forward(d)) => assert_eq!(d.request, req),
                other => panic!("{other:?}"),
            }
        }
    }
}

fn codec_room(gc: &GuestCommand) -> u64 {
    gc.buffers
        .iter()
        .map(|b| match *b {
            GuestBuffer::Scratch(n) => n,
            _ => 0,
        })
        .sum()
}
