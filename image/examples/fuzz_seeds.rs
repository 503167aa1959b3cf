//! Writes the seed corpus of the `image_parse` fuzz target: synthetic images of every kind
//! (the committed seeds in `image/fuzz/seeds/image_parse/`), plus, with a second argument,
//! copies of the nvcc-made images the tests cached (never committed: NVIDIA's binaries).
//!
//!   cargo run -p netgpu-image --features testing --example fuzz_seeds -- image/fuzz/seeds/image_parse
//!   cargo run -p netgpu-image --features testing --example fuzz_seeds -- OUT ~/.cache/netgpu/image-tests

use netgpu_image::link::encode;
use netgpu_image::testing::{cubin, fatbin, ptx_module, EntrySpec};
use netgpu_image::{Compression, LinkPart, PartKind, Role};
use std::path::Path;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: fuzz_seeds OUT_DIR [NVCC_CACHE_DIR]");
        std::process::exit(2);
    };
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    let p75 = ptx_module("9.5", 75, "k");
    let p86 = ptx_module("8.0", 86, "_Z4axpyIfEvT_PKS0_PS0_i");
    let elf = cubin(75, "k", &[(0, 8), (8, 4)], 256, 16);
    let rdc = {
        let mut e = EntrySpec::ptx(75, &p75).compressed(Compression::Zstd);
        e.options = "--compile-only";
        fatbin(&[EntrySpec::elf(75, &elf).compressed(Compression::Zstd), e])
    };
    let default = fatbin(&[
        EntrySpec::elf(75, &elf),
        EntrySpec::ptx(75, &p75).compressed(Compression::Zstd),
    ]);
    let speed = fatbin(&[
        EntrySpec::elf(75, &elf),
        EntrySpec::ptx(75, &p75).compressed(Compression::Lz4),
        EntrySpec::ptx(86, &p86).compressed(Compression::Lz4),
    ]);
    let plain = fatbin(&[EntrySpec::ptx(75, &p75), EntrySpec::elf(80, &elf)]);
    let link = encode(&[
        LinkPart {
            kind: PartKind::Fatbin,
            role: Role::DeviceLinked,
            name: "linked",
            data: &default,
        },
        LinkPart {
            kind: PartKind::Fatbin,
            role: Role::Input,
            name: "a",
            data: &rdc,
        },
        LinkPart {
            kind: PartKind::Ptx,
            role: Role::Input,
            name: "b.ptx",
            data: p86.as_bytes(),
        },
        LinkPart {
            kind: PartKind::Cubin,
            role: Role::Input,
            name: "c.cubin",
            data: &elf,
        },
    ])
    .expect("encode");
    let nested = encode(&[LinkPart {
        kind: PartKind::Link,
        role: Role::Input,
        name: "inner",
        data: &link,
    }])
    .expect("encode");
    let mut wrapper = 0x4662_43B1u32.to_le_bytes().to_vec();
    wrapper.extend_from_slice(&2u32.to_le_bytes());
    wrapper.extend_from_slice(&0x1000u64.to_le_bytes());
    wrapper.extend_from_slice(&0x2000u64.to_le_bytes());
    let p86_nul = format!("{p86}\0");
    let seeds: [(&str, &[u8]); 10] = [
        ("ptx", p75.as_bytes()),
        ("ptx-nul", p86_nul.as_bytes()),
        ("cubin", &elf),
        ("fatbin-default", &default),
        ("fatbin-speed", &speed),
        ("fatbin-none", &plain),
        ("fatbin-rdc", &rdc),
        ("link", &link),
        ("link-nested", &nested),
        ("wrapper-v2", &wrapper),
    ];
    for (name, b) in seeds {
        std::fs::write(out.join(format!("synthetic-{name}")), b)?;
    }
    let mut n = seeds.len();
    if let Some(cache) = args.get(1) {
        for dir in std::fs::read_dir(cache)? {
            let dir = dir?.path();
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for f in files {
                let f = f?.path();
                let Ok(b) = std::fs::read(&f) else { continue };
                // Host executables are large and mostly host code; their fatbins are seeded.
                if b.len() <= 256 << 10 {
                    let name = format!(
                        "nvcc-{}-{}",
                        dir.file_name().unwrap_or_default().to_string_lossy(),
                        f.file_name().unwrap_or_default().to_string_lossy()
                    );
                    std::fs::write(out.join(name), &b)?;
                    n += 1;
                }
            }
        }
    }
    println!("{n} seeds in {}", out.display());
    Ok(())
}
