//! The device command <-> wire request codec fed arbitrary bytes, on both sides: decoding a
//! command and its input prefix, shaping a backend reply into what the device writes (which
//! must fit the command's output), decoding a completion in the guest (whose data range must
//! lie in the scratch buffer), and the round trip of any decodable request through
//! `encode_request` and `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_proto::abi::codec::{self, Decoded, EncodeOptions, GuestBuffer};
use netgpu_proto::abi::{Command, Completion};
use netgpu_proto::cuda::CuResult;
use netgpu_proto::wire::ops::{self, Request};

fuzz_target!(|data: &[u8]| {
    if data.len() < Command::SIZE + Completion::SIZE + 12 {
        return;
    }
    let (c, rest) = data.split_at(Command::SIZE);
    let mut raw = [0u8; Command::SIZE];
    raw.copy_from_slice(c);
    let cmd = Command::from_bytes(&raw);
    let (cpl, rest) = rest.split_at(Completion::SIZE);
    let (lens, rest) = rest.split_at(12);
    let in_len = u64::from(u16::from_le_bytes([lens[0], lens[1]]));
    let out_len = u64::from(u32::from_le_bytes([lens[2], lens[3], lens[4], lens[5]]));
    let data_len = u64::from(u32::from_le_bytes([lens[6], lens[7], lens[8], lens[9]]));
    let split = usize::from(lens[10]).min(rest.len());
    let (prefix_src, ctrl) = rest.split_at(split);

    // Device side.
    if let Ok(n) = codec::prefix_len(&cmd, in_len) {
        assert!(n as u64 <= in_len);
        if n <= prefix_src.len() {
            if let Ok(Decoded::Forward(d)) = codec::decode(&cmd, in_len, out_len, &prefix_src[..n])
            {
                assert!(d.data_skip + d.data_len <= in_len);
                assert!(!matches!(d.request, Request::Hello { .. }));
                if let Ok(r) = codec::encode_reply(
                    d.form,
                    CuResult(u32::from(lens[11] % 2)),
                    ctrl,
                    data_len,
                    out_len,
                ) {
                    assert!(r.output.len() as u64 <= out_len, "output beyond the buffer");
                    if r.result.is_success() && data_len > 0 {
                        assert!(
                            r.data_at + data_len <= out_len,
                            "reply data beyond the buffer"
                        );
                    }
                }
            }
        }
    }

    // Guest side: any request that decodes survives encode -> decode.
    if let Ok(req) = ops::decode::<Request>(prefix_src) {
        let dl = if req.accepts_data() {
            data_len % 4096
        } else {
            0
        };
        let ol = match &req {
            Request::MemcpyDtoH { len, .. } => *len,
            _ => 0,
        };
        for wire in [true, false] {
            let opts = EncodeOptions { wire, post: false };
            let Ok(gc) = codec::encode_request(&req, dl, ol, opts) else {
                continue;
            };
            let mut input_len = 0u64;
            let mut output_len = 0u64;
            for b in &gc.buffers {
                match *b {
                    GuestBuffer::Prefix => input_len += gc.prefix.len() as u64,
                    GuestBuffer::Data => input_len += dl,
                    GuestBuffer::Output => output_len = output_len.saturating_add(ol),
                    GuestBuffer::Scratch(n) => output_len = output_len.saturating_add(n),
                }
            }
            let n = codec::prefix_len(&gc.command, input_len).expect("own commands decode");
            let got = codec::decode(&gc.command, input_len, output_len, &gc.prefix[..n])
                .expect("own commands decode");
            match got {
                Decoded::Nop => assert_eq!(req, Request::Null),
                Decoded::Forward(d) => assert_eq!(d.request, req),
            }
            let mut cb = [0u8; Completion::SIZE];
            cb.copy_from_slice(cpl);
            if let Ok(g) = codec::decode_completion(&gc, &Completion::from_bytes(&cb), ctrl) {
                assert!(g.data.end <= ctrl.len());
            }
        }
    }
});
