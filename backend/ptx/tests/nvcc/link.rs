//! Linking separately compiled device code (nvcc -rdc=true): link_a.cu and link_b.cu use
//! each other's functions and variables, share a weak template function and have private
//! symbols of the same names; link_dup.cu redefines one strong function.

use netgpu_ptx::{LoadErrorKind, Module};

use crate::util::*;

#[test]
fn two_modules_link_into_one_program() {
    let (a, b) = (ptx("link_a.ptx"), ptx("link_b.ptx"));
    for order in [[&a, &b], [&b, &a]] {
        let m = Module::link(&[order[0].as_str(), order[1].as_str()]).unwrap();
        let mut names: Vec<&str> = m.kernel_names().collect();
        names.sort();
        assert_eq!(names, ["kernel_a", "kernel_b"]);
        let gpu = Gpu::new();
        let globals = place_globals(&gpu, &m);
        let counter = m
            .globals()
            .iter()
            .position(|g| g.name == "shared_counter")
            .unwrap();
        let n = 100usize;
        let out = gpu.zeros(n * 4);
        let mut l = Launch::new(&m, "kernel_a", 2, 64);
        l.globals = Some(globals.clone());
        let o = l.output(&gpu, &[&u64b(out), &i32b(n as i32)]);
        o.result.unwrap();
        let got: Vec<i32> = gpu.download(out, n);
        for x in 0..n as i32 {
            // helper_b(x) = helper_a(x) + b's local_twice(x); a's local_twice is 2x.
            let want = (3 * x + 1) + (2 * x + 100) + x / 2 + 2 * x + 2 * x;
            assert_eq!(got[x as usize], want, "kernel_a item {x}");
        }
        assert!(String::from_utf8_lossy(&o.console).starts_with("a: counter starts at "));
        assert_eq!(gpu.download::<i32>(globals[counter], 1)[0], 5 + n as i32);

        let mut l = Launch::new(&m, "kernel_b", 2, 64);
        l.globals = Some(globals);
        let o = l.output(&gpu, &[&u64b(out), &i32b(n as i32)]);
        o.result.unwrap();
        let got: Vec<i32> = gpu.download(out, n);
        for x in 0..n as i32 {
            assert_eq!(
                got[x as usize],
                (3 * x + 1) - (2 * x + 100) + 2 * x,
                "kernel_b item {x}"
            );
        }
        assert_eq!(o.console, b"b: scale 0.50\n");
    }
}

#[test]
fn unresolved_and_duplicate_symbols_are_refused_with_their_names() {
    let (a, b, dup) = (ptx("link_a.ptx"), ptx("link_b.ptx"), ptx("link_dup.ptx"));
    // link_a alone: its externs are undefined.
    for r in [Module::load(&a), Module::link(&[&a])] {
        let e = r.unwrap_err();
        assert!(
            e.message.contains("scale_factor") || e.message.contains("_Z8helper_bi"),
            "{e}"
        );
    }
    let e = Module::link(&[&a, &b, &dup]).unwrap_err();
    assert_eq!(e.kind, LoadErrorKind::InvalidPtx);
    assert_eq!(e.module, Some(2));
    assert!(
        e.message.contains("_Z8helper_ai") && e.message.contains("module 0"),
        "{e}"
    );
    assert!(e.to_string().starts_with("PTX module 2 line "), "{e}");
    // An error inside one module names that module and its own line.
    let bad =
        ".version 8.0\n.target sm_75\n.address_size 64\n.visible .entry k()\n{\nfrobnicate;\n}\n";
    let e = Module::link(&[&a, &b, bad]).unwrap_err();
    assert_eq!(
        (e.module, e.line, e.kind),
        (Some(2), 6, LoadErrorKind::NotSupported),
        "{e}"
    );
}
