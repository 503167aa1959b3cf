//! Images made by NVIDIA's nvcc 13.5 in each mode a program uses, parsed as the backend and
//! the guest library parse them. Needs the toolchain (`scripts/cuda-toolchain.sh`, cached).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::nvcc;
use netgpu_image::fatbin::{parse_sequence, EntryKind};
use netgpu_image::host::object_fatbins;
use netgpu_image::link::{decode, encode};
use netgpu_image::{
    detect, probe, select_ptx, units, ArchVariant, Compression, Cubin, Fatbin, ImageError,
    ImageKind, Limits, LinkPart, PartKind, Probe, PtxVersion, Role, Target, UnitCode, Wrapper,
};
use netgpu_proto::cuda::CuResult;
use object::{Object, ObjectSection};

const KERNELS: &[&str] = &["kernels.cu"];
const SM75: Target = Target {
    sm: 75,
    max_ptx: PtxVersion::new(9, 5),
};

fn limits() -> Limits {
    Limits::default()
}

/// The image's length as the guest library finds it: probing byte ranges of `b` only as far
/// as each answer asks.
fn probed_len(b: &[u8]) -> Probe {
    let mut have = 0;
    loop {
        match probe(&b[..have]).expect("probe") {
            Probe::NeedBytes(n) => {
                assert!(
                    n > have && n <= b.len(),
                    "asks for {n} bytes of {}",
                    b.len()
                );
                have = n;
            }
            p => return p,
        }
    }
}

/// The lines of PTX without comments and with whitespace normalised: what a fatbin keeps of
/// nvcc's PTX output.
fn code_lines(t: &str) -> Vec<String> {
    t.lines()
        .map(|l| {
            l.split("//")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn ptx_of(f: &Fatbin<'_>, target: &Target) -> String {
    let e = f.best_ptx(target.sm, target.max_ptx).expect("PTX entry");
    let c = e.contents(&limits()).expect("contents");
    netgpu_image::ptx::text(&c).expect("text").to_string()
}

#[test]
fn default_mode_is_sass_plus_zstd_ptx() {
    let b = nvcc("k.fatbin", &["-fatbin"], KERNELS);
    assert_eq!(detect(&b), Some(ImageKind::Fatbin));
    assert_eq!(probed_len(&b), Probe::Length(b.len() as u64));
    let f = Fatbin::parse(&b, &limits()).unwrap();
    assert_eq!(f.len(), b.len());
    assert_eq!(f.entries.len(), 2);
    let elf = &f.entries[0];
    assert_eq!(
        (elf.kind, elf.arch.sm, elf.compression),
        (EntryKind::Elf, 75, Compression::None)
    );
    let ptx = &f.entries[1];
    assert_eq!(
        (ptx.kind, ptx.arch.sm, ptx.compression),
        (EntryKind::Ptx, 75, Compression::Zstd)
    );
    assert_eq!(ptx.version, PtxVersion::new(9, 5));
    assert!(!ptx.is_relocatable_ptx());

    // The PTX is nvcc's -ptx output less its comments.
    let text = ptx_of(&f, &SM75);
    let reference = nvcc("k.ptx", &["-ptx", "-arch=compute_75"], KERNELS);
    assert_eq!(
        code_lines(&text),
        code_lines(std::str::from_utf8(&reference).unwrap())
    );

    let sel = select_ptx(&[&b], &SM75, &limits()).unwrap();
    assert_eq!(sel.len(), 1);
    assert_eq!(sel[0].text, text);
    assert_eq!(sel[0].info.arch.sm, 75);
    assert!(sel[0].text.contains(".entry plain"));
    // A newer device compiles the compute_75 PTX too.
    assert!(select_ptx(&[&b], &Target { sm: 120, ..SM75 }, &limits()).is_ok());
    // An older one has no code.
    let e = select_ptx(&[&b], &Target { sm: 70, ..SM75 }, &limits()).unwrap_err();
    assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU, "{e}");
    // An executor that takes only older PTX says so.
    let e = select_ptx(
        &[&b],
        &Target {
            sm: 75,
            max_ptx: PtxVersion::new(8, 0),
        },
        &limits(),
    )
    .unwrap_err();
    assert_eq!(e.cu_result(), CuResult::UNSUPPORTED_PTX_VERSION, "{e}");
    assert!(e.to_string().contains("9.5"), "{e}");
}

#[test]
fn cubin_kernels_and_parameters() {
    let b = nvcc("k.fatbin", &["-fatbin"], KERNELS);
    let f = Fatbin::parse(&b, &limits()).unwrap();
    let elf = f.best_elf(75).expect("sm_75 SASS");
    assert!(f.best_elf(80).is_none() && f.best_elf(70).is_none());
    let c = Cubin::parse(elf.stored).unwrap();
    assert_eq!((c.arch.sm, c.abi_version, c.relocatable), (75, 8, false));
    let mut names: Vec<&str> = c.kernels.iter().map(|k| k.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "_Z4axpyIdEvT_PKS0_PS0_i",
            "_Z4axpyIfEvT_PKS0_PS0_i",
            "block_sum",
            "plain"
        ]
    );
    let d = c.kernel("_Z4axpyIdEvT_PKS0_PS0_i").unwrap();
    let layout: Vec<(u32, u32, u32)> = d
        .params
        .iter()
        .map(|p| (p.ordinal, p.offset, p.size))
        .collect();
    assert_eq!(layout, [(0, 0, 8), (1, 8, 8), (2, 16, 8), (3, 24, 4)]);
    assert_eq!(d.param_bytes, Some(28));
    assert!(
        d.registers.is_some_and(|r| r > 0 && r <= 255),
        "{:?}",
        d.registers
    );
    let s = c.kernel("_Z4axpyIfEvT_PKS0_PS0_i").unwrap();
    let layout: Vec<(u32, u32)> = s.params.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(layout, [(0, 4), (8, 8), (16, 8), (24, 4)]);
    assert_eq!(c.kernel("block_sum").unwrap().static_shared_bytes, 1024);
    assert_eq!(c.kernel("plain").unwrap().static_shared_bytes, 0);
    assert_eq!(c.kernel("plain").unwrap().params.len(), 1);

    // A standalone cubin: its length from its headers, no PTX for the CPU executor.
    let cubin = nvcc("k.cubin", &["-cubin", "-arch=sm_80"], KERNELS);
    assert_eq!(detect(&cubin), Some(ImageKind::Cubin));
    assert_eq!(probed_len(&cubin), Probe::Length(cubin.len() as u64));
    assert_eq!(Cubin::parse(&cubin).unwrap().arch.sm, 80);
    let e = select_ptx(&[&cubin], &SM75, &limits()).unwrap_err();
    assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU, "{e}");
    // The ELF inside a fatbin has the same length the probe finds.
    match probed_len(elf.stored) {
        Probe::Length(n) => {
            assert!(n as usize <= elf.stored.len() && n as usize + 8 > elf.stored.len())
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn every_compression_mode_holds_the_same_code() {
    let z = nvcc("k.fatbin", &["-fatbin"], KERNELS);
    let lz4 = nvcc("k.fatbin", &["-fatbin", "-compress-mode=speed"], KERNELS);
    let none = nvcc("k.fatbin", &["-fatbin", "--no-compress"], KERNELS);
    let size = nvcc("k.fatbin", &["-fatbin", "-compress-mode=size"], KERNELS);
    let reference = ptx_of(&Fatbin::parse(&z, &limits()).unwrap(), &SM75);
    for (name, b, ptx_c, elf_c) in [
        ("speed", &lz4, Compression::Lz4, Compression::None),
        ("none", &none, Compression::None, Compression::None),
        ("size", &size, Compression::Zstd, Compression::Zstd),
    ] {
        assert_eq!(probed_len(b), Probe::Length(b.len() as u64), "{name}");
        let f = Fatbin::parse(b, &limits()).unwrap();
        let p = f.ptx_entries().next().unwrap();
        let e = f.elf_entries().next().unwrap();
        assert_eq!((p.compression, e.compression), (ptx_c, elf_c), "{name}");
        assert_eq!(ptx_of(&f, &SM75), reference, "{name}");
        let elf = e.contents(&limits()).unwrap();
        let c = Cubin::parse(&elf).unwrap();
        assert_eq!(c.kernels.len(), 4, "{name}");
        let sel = select_ptx(&[b], &SM75, &limits()).unwrap();
        assert_eq!(sel[0].text, reference, "{name}");
    }
    // A limit below the entry's size refuses it before decompressing.
    let tight = Limits {
        max_entry_bytes: 1000,
        ..limits()
    };
    let e = select_ptx(&[&z], &SM75, &tight).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
}

#[test]
fn several_gencodes_pick_by_device() {
    let b = nvcc(
        "k.fatbin",
        &[
            "-fatbin",
            "-gencode",
            "arch=compute_75,code=[sm_75,compute_75]",
            "-gencode",
            "arch=compute_80,code=sm_80",
            "-gencode",
            "arch=compute_86,code=compute_86",
        ],
        KERNELS,
    );
    let f = Fatbin::parse(&b, &limits()).unwrap();
    assert_eq!(f.ptx_entries().count(), 2);
    assert_eq!(f.elf_entries().count(), 2);
    let best = |sm| f.best_ptx(sm, PtxVersion::new(9, 5)).map(|e| e.arch.sm);
    assert_eq!(best(75).unwrap(), 75);
    assert_eq!(best(80).unwrap(), 75);
    assert_eq!(best(86).unwrap(), 86);
    assert_eq!(best(120).unwrap(), 86);
    assert!(matches!(best(70), Err(ImageError::NoBinaryForGpu(_))));
    let elf = |sm| f.best_elf(sm).map(|e| e.arch.sm);
    assert_eq!(
        (elf(75), elf(80), elf(86), elf(89), elf(90)),
        (Some(75), Some(80), Some(80), Some(80), None)
    );
    let sel = select_ptx(&[&b], &Target { sm: 86, ..SM75 }, &limits()).unwrap();
    assert_eq!(sel[0].info.arch.sm, 86);
    assert!(sel[0].text.contains(".target sm_86"));
}

#[test]
fn arch_specific_entries() {
    let b = nvcc(
        "k.fatbin",
        &[
            "-fatbin",
            "-gencode",
            "arch=compute_90a,code=[sm_90a,compute_90a]",
        ],
        KERNELS,
    );
    let f = Fatbin::parse(&b, &limits()).unwrap();
    for e in &f.entries {
        assert_eq!((e.arch.sm, e.arch.variant), (90, ArchVariant::Specific));
    }
    assert!(f.best_ptx(90, PtxVersion::new(9, 5)).is_ok());
    assert!(f.best_ptx(100, PtxVersion::new(9, 5)).is_err());
    assert!(ptx_of(&f, &Target { sm: 90, ..SM75 }).contains(".target sm_90a"));
}

#[test]
fn sass_only_image_has_no_binary_for_the_cpu_executor() {
    // `-arch=sm_75` is short for code=[sm_75,compute_75]: it has PTX.
    let with_ptx = nvcc("k.fatbin", &["-fatbin", "-arch=sm_75"], KERNELS);
    assert!(select_ptx(&[&with_ptx], &SM75, &limits()).is_ok());
    let b = nvcc(
        "k.fatbin",
        &["-fatbin", "-gencode", "arch=compute_75,code=sm_75"],
        KERNELS,
    );
    let f = Fatbin::parse(&b, &limits()).unwrap();
    assert_eq!(f.ptx_entries().count(), 0);
    assert!(f.best_elf(75).is_some());
    let e = select_ptx(&[&b], &SM75, &limits()).unwrap_err();
    assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU);
    assert!(
        e.to_string().contains("no PTX") && e.to_string().contains("sm_75"),
        "{e}"
    );
}

#[test]
fn debug_build_records_name_and_options() {
    let b = nvcc("k.fatbin", &["-fatbin", "-G"], KERNELS);
    let f = Fatbin::parse(&b, &limits()).unwrap();
    for e in &f.entries {
        assert!(e.name.is_some_and(|n| n.ends_with(b".cu")), "{:?}", e.name);
        assert!(e.flags & netgpu_image::fatbin::FLAG_DEBUG != 0);
    }
    let p = f.ptx_entries().next().unwrap();
    assert!(
        p.options_text().is_some_and(|o| o.contains("-g")),
        "{:?}",
        p.options_text()
    );
    assert!(select_ptx(&[&b], &SM75, &limits()).is_ok());
}

#[test]
fn standalone_ptx() {
    let b = nvcc("k.ptx", &["-ptx", "-arch=compute_80"], KERNELS);
    assert_eq!(detect(&b), Some(ImageKind::Ptx));
    assert_eq!(probe(&b[..1]).unwrap(), Probe::NulTerminated);
    let sel = select_ptx(&[&b], &Target { sm: 80, ..SM75 }, &limits()).unwrap();
    assert_eq!(sel[0].info.arch.sm, 80);
    let e = select_ptx(&[&b], &SM75, &limits()).unwrap_err();
    assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU, "{e}");
}

/// The bytes at virtual address `addr` of a host executable (`len` of them).
fn at_address<'a>(file: &object::File<'a>, addr: u64, len: u64) -> &'a [u8] {
    for s in file.sections() {
        if addr >= s.address() && addr < s.address() + s.size() {
            let d = s.data().unwrap();
            let off = (addr - s.address()) as usize;
            return &d[off..(off + len as usize).min(d.len())];
        }
    }
    panic!("address {addr:#x} is in no section");
}

/// What a guest library does with a wrapper: probe the fatbin it points to.
fn follow<'a>(file: &object::File<'a>, addr: u64) -> &'a [u8] {
    let head = at_address(file, addr, 16);
    let Probe::Length(n) = probed_len(head) else {
        panic!("not a fatbin")
    };
    at_address(file, addr, n)
}

fn wrappers(file: &object::File<'_>) -> Vec<Wrapper> {
    let seg = file
        .section_by_name(".nvFatBinSegment")
        .expect(".nvFatBinSegment")
        .data()
        .unwrap();
    seg.chunks(24)
        .map(|w| {
            let Probe::Wrapper(w) = probed_len(w) else {
                panic!("not a wrapper")
            };
            w
        })
        .collect()
}

#[test]
fn host_program_wrapper_points_at_its_fatbin() {
    let exe = nvcc("prog", &[], KERNELS);
    let file = object::File::parse(&*exe).unwrap();
    let ws = wrappers(&file);
    assert!(!ws.is_empty());
    // The program's own wrapper is the version 1 one; its fatbin has our kernels.
    let ours: Vec<&Wrapper> = ws.iter().filter(|w| w.version == 1).collect();
    assert_eq!(ours.len(), 1, "{ws:?}");
    let fb = follow(&file, ours[0].data);
    let sel = select_ptx(&[fb], &SM75, &limits()).unwrap();
    assert!(sel[0].text.contains(".entry block_sum"));
    // The same fatbins, read from the section.
    let all = object_fatbins(&exe, &limits()).unwrap();
    assert!(all.iter().any(|f| f.as_bytes() == fb));
    // The whole executable as a link input (CU_JIT_INPUT_OBJECT) gives every fatbin.
    let u = units(&[&exe], &limits()).unwrap();
    assert_eq!(u.len(), all.len());
}

#[test]
fn rdc_program_links_its_units() {
    let exe = nvcc("prog", &["-rdc=true"], &["rdc_a.cu", "rdc_b.cu"]);
    let file = object::File::parse(&*exe).unwrap();
    let ws = wrappers(&file);
    // The version 2 wrapper: `data` is the device-linked image. Its array of the units'
    // fatbins is filled at run time by each unit's registration code (it lies in .bss), so
    // the units are read here where that code finds them: the version 1 wrappers of the
    // relocatable fatbins in `__nv_relfatbin`.
    let rel = file
        .section_by_name("__nv_relfatbin")
        .expect("__nv_relfatbin");
    let in_rel = |a: u64| a >= rel.address() && a < rel.address() + rel.size();
    let unit_fbs: Vec<&[u8]> = ws
        .iter()
        .filter(|w| w.version == 1 && in_rel(w.data))
        .map(|w| follow(&file, w.data))
        .collect();
    let mut found = false;
    for w in ws.iter().filter(|w| w.version == 2) {
        assert!(w.unit_fatbins().is_some());
        let linked = follow(&file, w.data);
        let f = Fatbin::parse(linked, &limits()).unwrap();
        let Some(e) = f.best_elf(75) else { continue };
        let c = Cubin::parse(&e.contents(&limits()).unwrap()).unwrap();
        if c.kernel("ka").is_none() {
            continue;
        }
        found = true;
        // The device-linked image is SASS only and not relocatable.
        assert!(!c.relocatable && c.kernel("kb").is_some());
        assert_eq!(f.ptx_entries().count(), 0);
        assert_eq!(unit_fbs.len(), 2);
        for u in &unit_fbs {
            let f = Fatbin::parse(u, &limits()).unwrap();
            let p = f.ptx_entries().next().unwrap();
            assert!(p.is_relocatable_ptx(), "{:?}", p.options_text());
            assert_eq!(p.header_size, 96);
            let c = Cubin::parse(&f.elf_entries().next().unwrap().contents(&limits()).unwrap())
                .unwrap();
            assert!(c.relocatable);
        }
        // What the guest library sends for it: one link container.
        let mut parts = vec![LinkPart {
            kind: PartKind::Fatbin,
            role: Role::DeviceLinked,
            name: "linked",
            data: linked,
        }];
        for u in &unit_fbs {
            parts.push(LinkPart {
                kind: PartKind::Fatbin,
                role: Role::Input,
                name: "unit",
                data: u,
            });
        }
        let container = encode(&parts).unwrap();
        assert_eq!(
            probed_len(&container),
            Probe::Length(container.len() as u64)
        );
        assert_eq!(decode(&container, &limits()).unwrap(), parts);
        let sel = select_ptx(&[&container], &SM75, &limits()).unwrap();
        assert_eq!(sel.len(), 2);
        assert!(sel.iter().all(|s| s.relocatable));
        let all: String = sel.iter().map(|s| s.text.as_str()).collect();
        assert!(all.contains(".entry ka") && all.contains(".entry kb") && all.contains("triple"));
        // The device-linked image alone has no PTX.
        let e = select_ptx(&[linked], &SM75, &limits()).unwrap_err();
        assert_eq!(e.cu_result(), CuResult::NO_BINARY_FOR_GPU);
        // The units alone, as wire parts, give the same PTX.
        let direct = select_ptx(&unit_fbs, &SM75, &limits()).unwrap();
        assert_eq!(
            direct.iter().map(|s| &s.text).collect::<Vec<_>>(),
            sel.iter().map(|s| &s.text).collect::<Vec<_>>()
        );
    }
    assert!(
        found,
        "no version 2 wrapper with the program's kernels: {ws:?}"
    );
}

#[test]
fn rdc_fatbin_objects_and_libraries() {
    let fb = nvcc("b.fatbin", &["-fatbin", "-rdc=true"], &["rdc_b.cu"]);
    let f = Fatbin::parse(&fb, &limits()).unwrap();
    assert!(f.ptx_entries().all(|p| p.is_relocatable_ptx()));
    let obj = nvcc("b.o", &["-c", "-rdc=true"], &["rdc_b.cu"]);
    assert_eq!(detect(&obj), Some(ImageKind::HostObject));
    let lib = nvcc("libb.a", &["-lib", "-rdc=true"], &["rdc_b.cu"]);
    assert_eq!(detect(&lib), Some(ImageKind::Library));
    for (name, b) in [("object", &obj), ("library", &lib)] {
        let u = units(&[b], &limits()).unwrap();
        assert_eq!(u.len(), 1, "{name}");
        let UnitCode::Fatbin(f) = &u[0].code else {
            panic!("{name}")
        };
        assert!(
            f.ptx_entries().next().unwrap().is_relocatable_ptx(),
            "{name}"
        );
        let sel = select_ptx(&[b], &SM75, &limits()).unwrap();
        assert!(sel[0].text.contains(".entry kb"), "{name}");
    }
    // A link container of PTX text and a library, as cuLinkComplete makes it for Numba.
    let ptx = nvcc(
        "a.ptx",
        &["-ptx", "-rdc=true", "-arch=compute_75"],
        &["rdc_a.cu"],
    );
    let c = encode(&[
        LinkPart {
            kind: PartKind::Ptx,
            role: Role::Input,
            name: "a.ptx",
            data: &ptx,
        },
        LinkPart {
            kind: PartKind::Library,
            role: Role::Input,
            name: "libb.a",
            data: &lib,
        },
    ])
    .unwrap();
    let sel = select_ptx(&[&c], &SM75, &limits()).unwrap();
    assert_eq!(sel.len(), 2);
    assert!(
        sel[0].origin.contains("a.ptx") && sel[1].origin.contains("libb.a"),
        "{:?}",
        sel.iter().map(|s| &s.origin).collect::<Vec<_>>()
    );
    // Nested: that container as an input of another.
    let outer = encode(&[LinkPart {
        kind: PartKind::Link,
        role: Role::Input,
        name: "inner",
        data: &c,
    }])
    .unwrap();
    assert_eq!(select_ptx(&[&outer], &SM75, &limits()).unwrap().len(), 2);
    let shallow = Limits {
        max_depth: 1,
        ..limits()
    };
    assert!(matches!(
        select_ptx(&[&outer], &SM75, &shallow),
        Err(ImageError::TooMany { .. })
    ));
    // Mislabelled parts are refused.
    let bad = encode(&[LinkPart {
        kind: PartKind::Cubin,
        role: Role::Input,
        name: "x",
        data: &ptx,
    }])
    .unwrap();
    assert!(select_ptx(&[&bad], &SM75, &limits()).is_err());
    // .nv_fatbin of the object, parsed as a sequence.
    let file = object::File::parse(&*obj).unwrap();
    let names: Vec<String> = file
        .sections()
        .filter_map(|s| s.name().ok().map(String::from))
        .collect();
    let sec = file
        .sections()
        .find(|s| {
            s.name()
                .is_ok_and(|n| n == ".nv_fatbin" || n == "__nv_relfatbin")
        })
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        parse_sequence(sec.data().unwrap(), &limits())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn corrupted_real_images_never_panic() {
    let cubin = nvcc("k.cubin", &["-cubin", "-arch=sm_80"], KERNELS);
    let fb = nvcc("k.fatbin", &["-fatbin", "-compress-mode=size"], KERNELS);
    for (img, step) in [(&cubin, 2), (&fb, 5)] {
        for i in (0..img.len()).step_by(step) {
            for v in [0xff, 0x00] {
                let mut b = img.clone();
                b[i] = v;
                let _ = Cubin::parse(&b);
                let _ = select_ptx(&[&b], &SM75, &limits());
                let _ = units(&[&b], &limits());
                let _ = probe(&b);
            }
        }
    }
}
