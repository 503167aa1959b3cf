//! Arbitrary bytes as a module image, through every entry point the backend and the guest
//! library use: the length probe, format detection, fatbin/cubin/link container parsing,
//! decompression and PTX selection. Each must return a result or an error, never panic, and
//! stay within the limits; a link container that decodes must re-encode to the same parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgpu_image::link::{decode, encode};
use netgpu_image::{
    detect, probe, select_ptx, Cubin, EntryKind, Fatbin, ImageKind, Limits, Probe, PtxVersion,
    Target,
};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_entry_bytes: 16 << 20,
        max_total_bytes: 32 << 20,
        max_entries: 256,
        max_parts: 256,
        max_depth: 4,
    };
    // The probe asks only for more than it was given, and never for more than the
    // headers it has read promise (a Length ends the walk).
    let mut have = 0usize;
    for _ in 0..8 {
        match probe(&data[..have.min(data.len())]) {
            Ok(Probe::NeedBytes(n)) => {
                assert!(n > have, "probe asked for {n} bytes with {have}");
                if n > data.len() {
                    break;
                }
                have = n;
            }
            _ => break,
        }
    }
    // select_ptx runs units() (every kind, link containers expanded) and decompresses the
    // chosen PTX entry.
    let target = Target {
        sm: 80,
        max_ptx: PtxVersion::new(9, 5),
    };
    if let Ok(sel) = select_ptx(&[data], &target, &limits) {
        assert!(sel.iter().all(|s| s.info.version <= target.max_ptx));
    }
    match detect(data) {
        Some(ImageKind::Fatbin) => {
            if let Ok(f) = Fatbin::parse(data, &limits) {
                assert!(f.len() <= data.len());
                for e in &f.entries {
                    if let Ok(c) = e.contents(&limits) {
                        assert!(
                            c.len() as u64 <= limits.max_entry_bytes.max(e.stored.len() as u64)
                        );
                        if e.kind == EntryKind::Elf {
                            let _ = Cubin::parse(&c);
                        }
                    }
                }
            }
        }
        Some(ImageKind::Cubin) => {
            let _ = Cubin::parse(data);
        }
        Some(ImageKind::LinkContainer) => {
            if let Ok(parts) = decode(data, &limits) {
                let again = encode(&parts).expect("re-encode");
                assert_eq!(decode(&again, &limits).expect("decode re-encoded"), parts);
            }
        }
        _ => {}
    }
});
