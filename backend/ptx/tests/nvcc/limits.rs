//! Limits a real driver enforces, refused at load with the construct and its line (issue 12
//! finding 9), every size multiplication checked (finding 11), and launch-time resources.

use netgpu_ptx::{LaunchError, LoadError, LoadErrorKind, Module};

use crate::util::*;

fn load(body: &str) -> Result<Module, LoadError> {
    Module::load(&format!(
        ".version 8.5\n.target sm_75\n.address_size 64\n{body}"
    ))
}

fn refused(body: &str, kind: LoadErrorKind, line: usize, words: &[&str]) {
    let e = load(body).expect_err(body);
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.line, line, "{e}");
    for w in words {
        assert!(e.message.contains(w), "`{w}` not in: {e}");
    }
}

#[test]
fn parameters_that_overflow_or_exceed_the_parameter_space_are_refused() {
    // Two 4294967000-byte arrays: their offsets overflow 32 bits.
    refused(
        ".visible .entry k(\n.param .align 1 .b8 a[4294967000],\n.param .align 1 .b8 b[4294967000]\n)\n{\nret;\n}\n",
        LoadErrorKind::InvalidPtx,
        5,
        &["kernel k", "32764"],
    );
    // 32768 bytes: past CUDA 12.1's 32764-byte limit; 32764 loads.
    refused(
        ".visible .entry k(.param .align 4 .b8 a[32760], .param .u64 b)\n{\nret;\n}\n",
        LoadErrorKind::InvalidPtx,
        4,
        &["parameter space"],
    );
    let m = load(".visible .entry k(.param .align 4 .b8 a[32760], .param .u32 b)\n{\nret;\n}\n")
        .unwrap();
    assert_eq!(m.kernel("k").unwrap().attributes().param_bytes, 32764);
    // PTX before ISA 8.1 has the old 4096-byte parameter space.
    let old = ".version 7.8\n.target sm_75\n.address_size 64\n.visible .entry k(.param .align 4 .b8 a[4100])\n{\nret;\n}\n";
    let e = Module::load(old).unwrap_err();
    assert!(e.message.contains("4096-byte"), "{e}");
    assert!(Module::load(&old.replace("4100", "4096")).is_ok());
}

#[test]
fn variables_whose_size_overflows_or_exceeds_limits_are_refused() {
    // A 2^61-element .global array.
    refused(
        "\n.global .u64 g[2305843009213693952];\n",
        LoadErrorKind::InvalidPtx,
        5,
        &["g"],
    );
    // elem * count overflows 64 bits through multi-dimensional arrays.
    refused(
        ".global .v4 .u64 g[1048576][1048576][1048576];\n",
        LoadErrorKind::InvalidPtx,
        4,
        &["g"],
    );
    // Representable, but beyond all device memory netgpu's executor gives globals.
    refused(
        ".global .align 4 .b32 big[70368744177664];\n",
        LoadErrorKind::InvalidPtx,
        4,
        &["big", ".global variables"],
    );
    refused(
        ".const .align 4 .b32 c[20000];\n",
        LoadErrorKind::InvalidPtx,
        4,
        &["c", ".const"],
    );
    refused(
        ".shared .align 4 .b8 s[65536];\n",
        LoadErrorKind::InvalidPtx,
        4,
        &["s", "49152"],
    );
    refused(
        ".visible .entry k()\n{\n.shared .align 4 .b8 a[40000];\n.shared .align 4 .b8 b[40000];\nret;\n}\n",
        LoadErrorKind::InvalidPtx,
        7,
        &["static shared memory"],
    );
    refused(
        ".visible .entry k()\n{\n.local .align 4 .b8 a[1048576];\nret;\n}\n",
        LoadErrorKind::InvalidPtx,
        6,
        &["local memory"],
    );
    // Absurd register counts are refused without allocating them.
    refused(
        ".visible .entry k()\n{\n.reg .b32 %r<4000000000>;\nret;\n}\n",
        LoadErrorKind::NotSupported,
        6,
        &["registers"],
    );
}

#[test]
fn what_the_executor_cannot_run_is_refused_with_its_line() {
    refused(
        ".visible .entry k(.param .u64 t)\n{\n.reg .b32 %r<4>;\n.reg .b64 %rd<2>;\nld.param.u64 %rd1, [t];\ntex.2d.v4.u32.f32 {%r0, %r1, %r2, %r3}, [%rd1, {%r0, %r1}];\nret;\n}\n",
        LoadErrorKind::NotSupported,
        9,
        &["tex"],
    );
    refused(
        ".func f(.param .b32 x)\n{\n.reg .b32 %r<2>;\n{\n.param .b32 p;\nst.param.b32 [p], 1;\ncall f, (p);\n}\nret;\n}\n.visible .entry k()\n{\n{\n.param .b32 p;\nst.param.b32 [p], 1;\ncall f, (p);\n}\nret;\n}\n",
        LoadErrorKind::NotSupported,
        10,
        &["recursive"],
    );
    refused(
        ".visible .entry k()\n{\n.reg .b32 %r<2>;\nadd.cc.u16 %r1, %r1, 1;\nret;\n}\n",
        LoadErrorKind::NotSupported,
        7,
        &["add.cc.u16"],
    );
    refused(
        ".visible .entry k()\n{\n.reg .b32 %r<2>;\nadd.s32.xyz %r1, %r1, 1;\nret;\n}\n",
        LoadErrorKind::NotSupported,
        7,
        &[".xyz"],
    );
    refused(
        ".visible .entry k()\n{\n.reg .b64 %rd<2>;\n.param .b64 p;\nst.param.b64 [p], 0;\ncall malloc, (p);\nret;\n}\n",
        LoadErrorKind::NotSupported,
        9,
        &["malloc"],
    );
}

#[test]
fn every_fixture_has_consistent_parameter_layouts() {
    for f in [
        "thrust_algos.ptx",
        "cub_device.ptx",
        "cub_block.ptx",
        "calls.ptx",
        "coop_groups.ptx",
    ] {
        let m = module(f);
        for name in m.kernel_names() {
            let k = m.kernel(name).unwrap();
            let mut end = 0u64;
            for p in k.params() {
                assert!(u64::from(p.offset) >= end, "{f} {name}: parameters overlap");
                end = u64::from(p.offset) + u64::from(p.size);
            }
            assert!(end <= 32_764);
        }
    }
}

#[test]
fn a_block_too_large_for_the_host_is_refused_at_launch() {
    let m = load(".visible .entry k()\n{\n.reg .b32 %r<40000>;\nmov.u32 %r39999, 1;\nret;\n}\n")
        .unwrap();
    let gpu = Gpu::new();
    let e = Launch::new(&m, "k", 1, 1024).run(&gpu, &[]).unwrap_err();
    assert!(matches!(e, LaunchError::OutOfResources(_)), "{e:?}");
    assert_eq!(e.cuda_error(), 701);
    // The same kernel runs with fewer threads.
    Launch::new(&m, "k", 1, 32).run(&gpu, &[]).unwrap();
    // A cooperative launch keeps every block resident: 200 blocks of 10 MiB do not fit.
    let mut l = Launch::new(&m, "k", 200, 32);
    l.opts.cooperative = true;
    l.opts.sm_count = 8;
    let e = l.run(&gpu, &[]).unwrap_err();
    assert!(matches!(e, LaunchError::OutOfResources(_)), "{e:?}");
}

#[test]
fn many_kernels_and_many_globals_load_in_linear_time() {
    // Each kernel used to copy every global into its scope (kernels x globals).
    let mut text = String::new();
    for g in 0..5000 {
        text += &format!(".global .u32 g{g};\n.shared .u32 s{g};\n");
    }
    for k in 0..5000 {
        text += &format!(
            ".visible .entry k{k}()\n{{\n.reg .b64 %rd<2>;\nmov.u64 %rd1, g{k};\nret;\n}}\n"
        );
    }
    let m = load(&text).unwrap();
    assert_eq!(m.kernel_names().count(), 5000);
    assert_eq!(m.globals().len(), 5000);
}
