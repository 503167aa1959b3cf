//! A network peer's bytes: frame headers and control sections must decode or be refused,
//! never panic, and whatever decodes must re-encode to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_proto::wire::frame::FrameHeader;
use netgpu_proto::wire::ops::{decode, encode, Reply, Request};
use netgpu_proto::wire::HEADER_LEN;

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&data[..HEADER_LEN]);
        if let Ok(header) = FrameHeader::decode(&h, 1 << 16, 1 << 26) {
            assert_eq!(FrameHeader::decode(&header.encode(), 1 << 16, 1 << 26), Ok(header));
        }
    }
    if let Ok(req) = decode::<Request>(data) {
        let again = encode(&req).expect("a decoded request re-encodes");
        assert_eq!(decode::<Request>(&again).expect("and decodes"), req);
    }
    let _ = decode::<Reply>(data);
});
