//! The hash behind the runtime's INTEGRITY_CHECK export table.
//!
//! cudart asks the driver for a 16-byte value computed from facts both sides can see (the
//! driver version, the process and thread, where the driver's own export tables and the
//! function live, a timestamp cudart chooses, and every device's UUID and PCI location) and
//! refuses to run (`cudaErrorSoftwareValidityNotEstablished`) unless it matches its own
//! computation. The construction, as ZLUDA's dark-API notes describe it, is HMAC-MD2 with a
//! fixed 16-byte key; for request versions ending in 0 or 1 the answer is a constant.
//! Implemented with RustCrypto's `md2` and `hmac`.

use hmac::{Mac, SimpleHmac};
use md2::Md2;

/// The HMAC key (the output of a first pass that takes no input).
const KEY: [u8; 16] = [
    0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F,
];

/// What identifies one device in the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    pub uuid: [u8; 16],
    pub pci_domain: i32,
    pub pci_bus: i32,
    pub pci_device: i32,
}

/// Everything the hash covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `cuDriverGetVersion`'s answer.
    pub driver_version: u32,
    /// The version cudart passes in (its own CUDA version, plus 0, 1 or 2).
    pub version: u32,
    pub pid: u32,
    /// The low 32 bits of `pthread_self()`.
    pub thread: u32,
    /// Address of the CUDART_INTERFACE export table.
    pub cudart_table: u64,
    /// Address of the INTEGRITY_CHECK export table.
    pub integrity_table: u64,
    /// Address of the integrity-check function itself.
    pub function: u64,
    /// The timestamp cudart passes in.
    pub unix_seconds: u64,
    pub devices: Vec<DeviceFacts>,
}

/// The message: the fields as the x86-64 driver lays them out in memory (little-endian,
/// no padding), then 28 bytes per device.
fn message(f: &Facts) -> Vec<u8> {
    let mut m = Vec::with_capacity(48 + 28 * f.devices.len());
    for v in [f.driver_version, f.version, f.pid, f.thread] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        f.cudart_table,
        f.integrity_table,
        f.function,
        f.unix_seconds,
    ] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for d in &f.devices {
        m.extend_from_slice(&d.uuid);
        for v in [d.pci_domain, d.pci_bus, d.pci_device] {
            m.extend_from_slice(&v.to_le_bytes());
        }
    }
    m
}

/// The two 64-bit words the function writes.
pub fn hash(f: &Facts) -> [u64; 2] {
    match f.version % 10 {
        0 => return [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
        1 => return [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
        _ => {}
    }
    // A 16-byte key is exactly MD2's block: HMAC uses it as is.
    let mut mac =
        <SimpleHmac<Md2> as Mac>::new_from_slice(&KEY).expect("HMAC takes any key length");
    mac.update(&message(f));
    let out = mac.finalize().into_bytes();
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&out[..8]);
    hi.copy_from_slice(&out[8..16]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MD2 written out from RFC 1319, independently of the crate, to check the construction
    /// (key XOR 0x36 / 0x5c, message layout) rather than trust it.
    fn md2_reference(data: &[u8]) -> [u8; 16] {
        const S: [u8; 256] = [
            41, 46, 67, 201, 162, 216, 124, 1, 61, 54, 84, 161, 236, 240, 6, 19, 98, 167, 5, 243,
            192, 199, 115, 140, 152, 147, 43, 217, 188, 76, 130, 202, 30, 155, 87, 60, 253, 212,
            224, 22, 103, 66, 111, 24, 138, 23, 229, 18, 190, 78, 196, 214, 218, 158, 222, 73, 160,
            251, 245, 142, 187, 47, 238, 122, 169, 104, 121, 145, 21, 178, 7, 63, 148, 194, 16,
            137, 11, 34, 95, 33, 128, 127, 93, 154, 90, 144, 50, 39, 53, 62, 204, 231, 191, 247,
            151, 3, 255, 25, 48, 179, 72, 165, 181, 209, 215, 94, 146, 42, 172, 86, 170, 198, 79,
            184, 56, 210, 150, 164, 125, 182, 118, 252, 107, 226, 156, 116, 4, 241, 69, 157, 112,
            89, 100, 113, 135, 32, 134, 91, 207, 101, 230, 45, 168, 2, 27, 96, 37, 173, 174, 176,
            185, 246, 28, 70, 97, 105, 52, 64, 126, 15, 85, 71, 163, 35, 221, 81, 175, 58, 195, 92,
            249, 206, 186, 197, 234, 38, 44, 83, 13, 110, 133, 40, 132, 9, 211, 223, 205, 244, 65,
            129, 77, 82, 106, 220, 55, 200, 108, 193, 171, 250, 36, 225, 123, 8, 12, 189, 177, 74,
            120, 136, 149, 139, 227, 99, 232, 109, 233, 203, 213, 254, 59, 0, 29, 57, 242, 239,
            183, 14, 102, 88, 208, 228, 166, 119, 114, 248, 235, 117, 75, 10, 49, 68, 80, 180, 143,
            237, 31, 26, 219, 153, 141, 51, 159, 17, 131, 20,
        ];
        let pad = 16 - data.len() % 16;
        let mut msg = data.to_vec();
        msg.extend(std::iter::repeat_n(pad as u8, pad));
        let mut c = [0u8; 16];
        let mut l = 0u8;
        for block in msg.chunks(16) {
            for j in 0..16 {
                c[j] ^= S[(block[j] ^ l) as usize];
                l = c[j];
            }
        }
        msg.extend_from_slice(&c);
        let mut x = [0u8; 48];
        for block in msg.chunks(16) {
            for j in 0..16 {
                x[16 + j] = block[j];
                x[32 + j] = x[16 + j] ^ x[j];
            }
            let mut t = 0u8;
            for round in 0..18u8 {
                for b in x.iter_mut() {
                    *b ^= S[t as usize];
                    t = *b;
                }
                t = t.wrapping_add(round);
            }
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&x[..16]);
        out
    }

    fn facts(version: u32) -> Facts {
        Facts {
            driver_version: 13050,
            version,
            pid: 0x002f_a423,
            thread: 0xf79c_1000,
            cudart_table: 0x7fff_f695_8240,
            integrity_table: 0x7fff_f695_8220,
            function: 0x7fff_f2aa_f4a0,
            unix_seconds: 0x682b_9cee,
            devices: vec![DeviceFacts {
                uuid: *b"NGPU\0\0\0\0\0\0\0\0\0\0\0\x01",
                pci_domain: 0,
                pci_bus: 2,
                pci_device: 0,
            }],
        }
    }

    #[test]
    fn md2_matches_the_rfc_1319_test_suite() {
        use md2::Digest;
        for (input, hex) in [
            ("", "8350e5a3e24c153df2275c9f80692773"),
            ("abc", "da853b0d3f88d99b30283a69e6ded6bb"),
            ("message digest", "ab4f496bfb2a530b219ff33031fe06b0"),
        ] {
            let ours = md2_reference(input.as_bytes());
            let theirs: [u8; 16] = Md2::digest(input.as_bytes()).into();
            let hexed: String = ours.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hexed, hex);
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn the_hash_is_hmac_md2_over_the_facts_in_driver_layout() {
        let f = facts(13052);
        let m = message(&f);
        assert_eq!(m.len(), 48 + 28);
        assert_eq!(&m[0..4], &13050u32.to_le_bytes());
        assert_eq!(&m[40..48], &0x682b_9ceeu64.to_le_bytes());
        let inner: Vec<u8> = KEY.iter().map(|k| k ^ 0x36).chain(m).collect();
        let inner = md2_reference(&inner);
        let outer: Vec<u8> = KEY.iter().map(|k| k ^ 0x5c).chain(inner).collect();
        let want = md2_reference(&outer);
        let got = hash(&f);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&got[0].to_le_bytes());
        bytes[8..].copy_from_slice(&got[1].to_le_bytes());
        assert_eq!(bytes, want);
    }

    #[test]
    fn every_fact_changes_the_hash_and_versions_ending_0_or_1_are_constant() {
        let base = hash(&facts(12092));
        let mut f = facts(12092);
        f.thread ^= 1;
        assert_ne!(hash(&f), base);
        let mut f = facts(12092);
        f.devices[0].pci_bus = 3;
        assert_ne!(hash(&f), base);
        let mut f = facts(12092);
        f.devices.clear();
        assert_ne!(hash(&f), base);
        assert_eq!(
            hash(&facts(13050)),
            [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8]
        );
        assert_eq!(hash(&facts(12091))[0], 0x1841_181C_03CB_675C);
    }
}
