//! Every vfio-user message body parser fed arbitrary bytes: none may panic, and a header's
//! declared size is either refused or within the message limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_vdev::protocol::{
    DmaMap, DmaUnmap, Header, RegionAccess, RegionInfo, Version, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&data[..HEADER_LEN]);
        let header = Header::from_bytes(&h);
        let _ = header.body_len();
        assert_eq!(Header::from_bytes(&header.to_bytes()), header);
    }
    let _ = Version::parse(data);
    let _ = DmaMap::parse(data);
    let _ = DmaUnmap::parse(data);
    let _ = RegionInfo::parse(data);
    let _ = RegionAccess::parse(data);
});
