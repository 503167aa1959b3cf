//! Every fixture kernel (tests/kernels/*.cu, compiled to PTX by nvrtc) run on the interpreter
//! and checked against a Rust reference on random inputs: integers bit-exact, floats within
//! the stated tolerance.

#![allow(clippy::unwrap_used)]

use netgpu_ptx::{launch, HostMemory, LaunchConfig, LaunchError, LoadErrorKind, Module};

fn module(name: &str) -> Module {
    let path = format!("{}/../../tests/kernels/{name}", env!("CARGO_MANIFEST_DIR"));
    Module::load(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
    fn f32(&mut self) -> f32 {
        (self.next() % 2000) as f32 / 100.0 - 10.0
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn as_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn as_u32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Packs kernel arguments at the offsets the kernel's parameters have.
fn params(m: &Module, kernel: &str, args: &[&[u8]]) -> Vec<u8> {
    let k = m.kernel(kernel).unwrap();
    assert_eq!(k.params().len(), args.len(), "{kernel} parameter count");
    let size = k
        .params()
        .iter()
        .map(|p| p.offset + p.size)
        .max()
        .unwrap_or(0) as usize;
    let mut buf = vec![0u8; size];
    for (p, a) in k.params().iter().zip(args) {
        assert_eq!(p.size as usize, a.len(), "{kernel} parameter size");
        buf[p.offset as usize..p.offset as usize + a.len()].copy_from_slice(a);
    }
    buf
}

fn run(
    m: &Module,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: &[&[u8]],
    mem: &HostMemory,
) -> Result<(), LaunchError> {
    let p = params(m, kernel, args);
    let cfg = LaunchConfig {
        grid,
        block,
        shared_mem_bytes: shared,
        threads: 2,
    };
    launch(m, m.kernel(kernel).unwrap(), &cfg, &p, &[], mem)
}

fn upload(mem: &HostMemory, bytes: &[u8]) -> u64 {
    let a = mem.alloc(bytes.len());
    assert!(mem.write(a, bytes));
    a
}

#[test]
fn vector_add_is_exact() {
    let m = module("vector_add.ptx");
    let mut r = Rng(1);
    let n = 10_007usize;
    let a: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let b: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let mem = HostMemory::new();
    let (da, db, dc) = (
        upload(&mem, &f32s(&a)),
        upload(&mem, &f32s(&b)),
        mem.alloc(n * 4),
    );
    run(
        &m,
        "vector_add",
        [(n as u32).div_ceil(256), 1, 1],
        [256, 1, 1],
        0,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let c = as_f32(&mem.read(dc, n * 4).unwrap());
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
}

#[test]
fn saxpy_grid_stride_loop() {
    let m = module("vector_add.ptx");
    let mut r = Rng(2);
    let n = 5000usize;
    let x: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let y: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let mem = HostMemory::new();
    let (dx, dy) = (upload(&mem, &f32s(&x)), upload(&mem, &f32s(&y)));
    let a = 2.5f32;
    run(
        &m,
        "saxpy",
        [4, 1, 1],
        [128, 1, 1],
        0,
        &[
            &(n as i32).to_le_bytes(),
            &a.to_le_bytes(),
            &dx.to_le_bytes(),
            &dy.to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let got = as_f32(&mem.read(dy, n * 4).unwrap());
    for i in 0..n {
        assert_eq!(got[i], a.mul_add(x[i], y[i]), "element {i}");
    }
}

fn sgemm_ref(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for t in 0..k {
                s = a[i * k + t].mul_add(b[t * n + j], s);
            }
            c[i * n + j] = s;
        }
    }
    c
}

fn sgemm(kernel: &str) {
    let m = module("sgemm.ptx");
    let mut r = Rng(3);
    let (mm, nn, kk) = (45usize, 37usize, 53usize);
    let a: Vec<f32> = (0..mm * kk).map(|_| r.f32()).collect();
    let b: Vec<f32> = (0..kk * nn).map(|_| r.f32()).collect();
    let mem = HostMemory::new();
    let (da, db, dc) = (
        upload(&mem, &f32s(&a)),
        upload(&mem, &f32s(&b)),
        mem.alloc(mm * nn * 4),
    );
    let dims = [
        (mm as i32).to_le_bytes(),
        (nn as i32).to_le_bytes(),
        (kk as i32).to_le_bytes(),
    ];
    run(
        &m,
        kernel,
        [(nn as u32).div_ceil(16), (mm as u32).div_ceil(16), 1],
        [16, 16, 1],
        0,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dc.to_le_bytes(),
            &dims[0],
            &dims[1],
            &dims[2],
        ],
        &mem,
    )
    .unwrap();
    let got = as_f32(&mem.read(dc, mm * nn * 4).unwrap());
    let want = sgemm_ref(&a, &b, mm, nn, kk);
    for i in 0..mm * nn {
        assert!(
            (got[i] - want[i]).abs() <= 1e-3 * want[i].abs().max(1.0),
            "{kernel} element {i}: {} vs {}",
            got[i],
            want[i]
        );
    }
}

#[test]
fn sgemm_naive_matches_reference() {
    sgemm("sgemm_naive");
}

#[test]
fn sgemm_tiled_uses_shared_memory_and_barriers_correctly() {
    sgemm("sgemm_tiled");
}

#[test]
fn block_reduction_with_shared_memory_and_atomics() {
    let m = module("reduce.ptx");
    let mut r = Rng(4);
    let n = 100_003usize;
    let x: Vec<f32> = (0..n).map(|_| (r.next() % 64) as f32).collect();
    let mem = HostMemory::new();
    let (dx, dout) = (upload(&mem, &f32s(&x)), mem.alloc(4));
    run(
        &m,
        "reduce_sum",
        [(n as u32).div_ceil(256), 1, 1],
        [256, 1, 1],
        256 * 4,
        &[
            &dx.to_le_bytes(),
            &dout.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let got = as_f32(&mem.read(dout, 4).unwrap())[0];
    assert_eq!(f64::from(got), x.iter().map(|&v| f64::from(v)).sum::<f64>());
}

#[test]
fn warp_shuffle_reduction() {
    let m = module("reduce.ptx");
    let mut r = Rng(5);
    let n = 4099usize;
    let x: Vec<u32> = (0..n).map(|_| r.next() % 1000).collect();
    let mem = HostMemory::new();
    let (dx, dout) = (upload(&mem, &u32s(&x)), mem.alloc(4));
    run(
        &m,
        "warp_reduce",
        [(n as u32).div_ceil(128), 1, 1],
        [128, 1, 1],
        0,
        &[
            &dx.to_le_bytes(),
            &dout.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    assert_eq!(
        as_u32(&mem.read(dout, 4).unwrap())[0],
        x.iter().sum::<u32>()
    );
}

#[test]
fn histogram_with_shared_atomics() {
    let m = module("reduce.ptx");
    let mut r = Rng(6);
    let (n, nbins) = (20_000usize, 37usize);
    let x: Vec<u32> = (0..n).map(|_| r.next()).collect();
    let mem = HostMemory::new();
    let (dx, dbins) = (upload(&mem, &u32s(&x)), mem.alloc(nbins * 4));
    run(
        &m,
        "histogram",
        [8, 1, 1],
        [128, 1, 1],
        (nbins * 4) as u32,
        &[
            &dx.to_le_bytes(),
            &dbins.to_le_bytes(),
            &(n as i32).to_le_bytes(),
            &(nbins as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let mut want = vec![0u32; nbins];
    for v in &x {
        want[(*v % nbins as u32) as usize] += 1;
    }
    assert_eq!(as_u32(&mem.read(dbins, nbins * 4).unwrap()), want);
}

#[test]
fn transpose_through_padded_shared_tile() {
    let m = module("misc.ptx");
    let mut r = Rng(7);
    let (rows, cols) = (70usize, 45usize);
    let x: Vec<f32> = (0..rows * cols).map(|_| r.f32()).collect();
    let mem = HostMemory::new();
    let (dx, dy) = (upload(&mem, &f32s(&x)), mem.alloc(rows * cols * 4));
    run(
        &m,
        "transpose",
        [(cols as u32).div_ceil(32), (rows as u32).div_ceil(32), 1],
        [32, 32, 1],
        0,
        &[
            &dx.to_le_bytes(),
            &dy.to_le_bytes(),
            &(rows as i32).to_le_bytes(),
            &(cols as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let y = as_f32(&mem.read(dy, rows * cols * 4).unwrap());
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(y[j * rows + i], x[i * cols + j]);
        }
    }
}

#[test]
fn softmax_rows_with_exp_max_and_division() {
    let m = module("misc.ptx");
    let mut r = Rng(8);
    let (rows, cols) = (33usize, 17usize);
    let x: Vec<f32> = (0..rows * cols).map(|_| r.f32()).collect();
    let mem = HostMemory::new();
    let (dx, dy) = (upload(&mem, &f32s(&x)), mem.alloc(rows * cols * 4));
    run(
        &m,
        "softmax_rows",
        [2, 1, 1],
        [32, 1, 1],
        0,
        &[
            &dx.to_le_bytes(),
            &dy.to_le_bytes(),
            &(rows as i32).to_le_bytes(),
            &(cols as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let y = as_f32(&mem.read(dy, rows * cols * 4).unwrap());
    for i in 0..rows {
        let row = &x[i * cols..(i + 1) * cols];
        let mx = row.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f64 = row.iter().map(|v| f64::from(v - mx).exp()).sum();
        for j in 0..cols {
            let want = (f64::from(row[j] - mx).exp() / sum) as f32;
            assert!(
                (y[i * cols + j] - want).abs() <= 2e-6,
                "row {i} col {j}: {} vs {want}",
                y[i * cols + j]
            );
        }
    }
}

#[test]
fn kernel_calling_a_device_function() {
    let m = module("misc.ptx");
    let mut r = Rng(9);
    let n = 1000usize;
    let a: Vec<u32> = (0..n).map(|_| r.next()).collect();
    let b: Vec<u32> = (0..n).map(|_| r.next()).collect();
    let mem = HostMemory::new();
    let (da, db, dout) = (
        upload(&mem, &u32s(&a)),
        upload(&mem, &u32s(&b)),
        mem.alloc(n * 4),
    );
    run(
        &m,
        "call_func",
        [8, 1, 1],
        [128, 1, 1],
        0,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dout.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let got = as_u32(&mem.read(dout, n * 4).unwrap());
    for i in 0..n {
        let (x, y) = (a[i] as i32, b[i] as i32);
        assert_eq!(
            got[i] as i32,
            x.wrapping_mul(31).wrapping_add(y) ^ (x >> 3),
            "element {i}"
        );
    }
}

#[test]
fn integer_hash_is_bit_exact() {
    let m = module("misc.ptx");
    let mut r = Rng(10);
    let n = 3000usize;
    let x: Vec<u32> = (0..n).map(|_| r.next()).collect();
    let mem = HostMemory::new();
    let (dx, dout) = (upload(&mem, &u32s(&x)), mem.alloc(n * 4));
    run(
        &m,
        "hash_u32",
        [(n as u32).div_ceil(256), 1, 1],
        [256, 1, 1],
        0,
        &[
            &dx.to_le_bytes(),
            &dout.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap();
    let got = as_u32(&mem.read(dout, n * 4).unwrap());
    for i in 0..n {
        let mut v = x[i];
        v ^= v >> 16;
        v = v.wrapping_mul(0x7feb_352d);
        v ^= v >> 15;
        v = v.wrapping_mul(0x846c_a68b);
        v ^= v >> 16;
        assert_eq!(got[i], v);
    }
}

#[test]
fn out_of_bounds_and_misaligned_accesses_are_launch_errors() {
    let m = module("vector_add.ptx");
    let mem = HostMemory::new();
    let n = 256usize;
    let (da, db) = (mem.alloc(n * 4), mem.alloc(n * 4));
    let dc = mem.alloc(16); // too small for n results
    let e = run(
        &m,
        "vector_add",
        [1, 1, 1],
        [256, 1, 1],
        0,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
        &mem,
    )
    .unwrap_err();
    assert!(matches!(e, LaunchError::IllegalAddress { .. }), "{e:?}");
    assert_eq!(e.cuda_error(), 700);
    let e = run(
        &m,
        "vector_add",
        [1, 1, 1],
        [4, 1, 1],
        0,
        &[
            &(da + 2).to_le_bytes(),
            &db.to_le_bytes(),
            &da.to_le_bytes(),
            &4i32.to_le_bytes(),
        ],
        &mem,
    )
    .unwrap_err();
    assert!(matches!(e, LaunchError::MisalignedAddress { .. }), "{e:?}");
    let e = run(
        &m,
        "vector_add",
        [1, 1, 1],
        [4, 1, 1],
        0,
        &[
            &0u64.to_le_bytes(),
            &db.to_le_bytes(),
            &da.to_le_bytes(),
            &4i32.to_le_bytes(),
        ],
        &mem,
    )
    .unwrap_err();
    assert!(
        matches!(e, LaunchError::IllegalAddress { addr: 0, .. }),
        "{e:?}"
    );
}

#[test]
fn invalid_launch_geometry_is_refused() {
    let m = module("vector_add.ptx");
    let mem = HostMemory::new();
    let args: [&[u8]; 4] = [
        &0u64.to_le_bytes(),
        &0u64.to_le_bytes(),
        &0u64.to_le_bytes(),
        &0i32.to_le_bytes(),
    ];
    for (grid, block, shared) in [
        ([1, 1, 1], [1025, 1, 1], 0),
        ([0, 1, 1], [32, 1, 1], 0),
        ([1, 1, 1], [32, 1, 1], 1 << 20),
    ] {
        let e = run(&m, "vector_add", grid, block, shared, &args, &mem).unwrap_err();
        assert!(matches!(e, LaunchError::InvalidConfig(_)), "{e:?}");
    }
}

#[test]
fn unsupported_and_malformed_ptx_is_refused_with_its_line() {
    let e = Module::load(".version 8.8\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\ntex.1d.v4.f32.s32 {%f1,%f2,%f3,%f4}, [t, {%r1}];\nret;\n}\n").unwrap_err();
    assert_eq!(e.line, 6);
    assert_eq!(e.kind, LoadErrorKind::NotSupported);
    assert!(e.message.contains("tex"), "{}", e.message);
    let e = Module::load(".version 8.8\n.visible .entry k()\n{\nadd.s32 %r1, %r2, 1;\n}\n")
        .unwrap_err();
    assert_eq!(e.kind, LoadErrorKind::InvalidPtx);
    assert!(e.message.contains("undeclared register"), "{}", e.message);
    let e = Module::load(
        ".version 8.8\n.visible .entry k()\n{\n.reg .pred %p<2>;\n@%p1 bra $nowhere;\nret;\n}\n",
    )
    .unwrap_err();
    assert!(e.message.contains("unknown label"), "{}", e.message);
}

#[test]
fn barrier_divergence_is_reported_not_hung() {
    // Thread 0 waits at a barrier the others never reach.
    let ptx = ".version 8.8\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n.reg .pred %p<2>;\n.reg .b32 %r<2>;\nmov.u32 %r1, %tid.x;\nsetp.ne.s32 %p1, %r1, 0;\n@%p1 bra $done;\nbar.sync 0;\n$done:\nshfl.sync.bfly.b32 %r1, %r1, 1, 31, -1;\nret;\n}\n";
    let m = Module::load(ptx).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        shared_mem_bytes: 0,
        threads: 1,
    };
    let e = launch(
        &m,
        m.kernel("k").unwrap(),
        &cfg,
        &[],
        &[],
        &HostMemory::new(),
    )
    .unwrap_err();
    assert!(matches!(e, LaunchError::BarrierDeadlock { .. }), "{e:?}");
}

#[test]
fn module_globals_with_initializers_are_reported_for_the_executor() {
    let ptx = ".version 8.8\n.target sm_80\n.address_size 64\n.global .align 4 .u32 table[4] = {1, 2, 3, 4};\n.const .align 4 .f32 scale = 0f40000000;\n.visible .entry k(.param .u64 out)\n{\n.reg .b32 %r<4>;\n.reg .b64 %rd<3>;\n.reg .f32 %f<2>;\nld.param.u64 %rd1, [out];\nld.global.u32 %r1, [table+8];\nld.const.f32 %f1, [scale];\ncvt.rzi.u32.f32 %r2, %f1;\nadd.s32 %r3, %r1, %r2;\nst.global.u32 [%rd1], %r3;\nret;\n}\n";
    let m = Module::load(ptx).unwrap();
    assert_eq!(m.globals().len(), 2);
    assert_eq!(
        m.globals()[0].init,
        vec![1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]
    );
    let mem = HostMemory::new();
    let addrs: Vec<u64> = m.globals().iter().map(|g| upload(&mem, &g.init)).collect();
    let out = mem.alloc(4);
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_mem_bytes: 0,
        threads: 1,
    };
    launch(
        &m,
        m.kernel("k").unwrap(),
        &cfg,
        &out.to_le_bytes(),
        &addrs,
        &mem,
    )
    .unwrap();
    assert_eq!(as_u32(&mem.read(out, 4).unwrap())[0], 3 + 2);
}

#[test]
fn truncated_and_mutated_fixtures_never_panic_the_loader() {
    for name in ["vector_add.ptx", "sgemm.ptx", "reduce.ptx", "misc.ptx"] {
        let path = format!("{}/../../tests/kernels/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let bytes = text.as_bytes();
        let mut r = Rng(11);
        for cut in (0..bytes.len()).step_by(311) {
            let _ = Module::load(&String::from_utf8_lossy(&bytes[..cut]));
        }
        // (The cargo-fuzz targets in backend/ptx/fuzz do this at scale.)
        for _ in 0..60 {
            let mut b = bytes.to_vec();
            for _ in 0..4 {
                let i = r.next() as usize % b.len();
                b[i] = b"%{}[];,.0x-@!|"[r.next() as usize % 14];
            }
            let _ = Module::load(&String::from_utf8_lossy(&b));
        }
    }
}

#[test]
fn straight_line_kernels_have_a_step_bound_and_kernels_that_may_loop_do_not() {
    let head = ".version 8.8\n.target sm_80\n.address_size 64\n";
    // A bounds check (a forward branch): every instruction runs at most once per thread.
    let straight = format!("{head}.visible .entry k(.param .u64 p)\n{{\n.reg .pred %p<2>;\n.reg .b32 %r<3>;\n.reg .b64 %rd<3>;\nmov.u32 %r1, %tid.x;\nsetp.ge.u32 %p1, %r1, 16;\n@%p1 bra $done;\nld.param.u64 %rd1, [p];\nmul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd1, %rd1, %rd2;\nst.global.u32 [%rd1], %r1;\n$done:\nret;\n}}\n");
    let m = Module::load(&straight).unwrap();
    let k = m.kernel("k").unwrap();
    let n = k.max_steps.expect("a straight-line kernel has a bound");
    assert!(
        n as usize >= k.code.len() && n < 16,
        "{n} steps for {} instructions",
        k.code.len()
    );
    // A loop (a backward branch).
    let looping = format!("{head}.visible .entry k()\n{{\n.reg .pred %p<2>;\n.reg .b32 %r<3>;\nmov.u32 %r1, 0;\n$top:\nadd.s32 %r1, %r1, 1;\nsetp.lt.u32 %p1, %r1, 100;\n@%p1 bra $top;\nret;\n}}\n");
    let m = Module::load(&looping).unwrap();
    assert_eq!(m.kernel("k").unwrap().max_steps, None);
    // A loop in a called function (calls are inlined into the kernel's code).
    let called = format!("{head}.func spin()\n{{\n.reg .pred %p<2>;\n.reg .b32 %r<3>;\nmov.u32 %r1, 0;\n$top:\nadd.s32 %r1, %r1, 1;\nsetp.lt.u32 %p1, %r1, 100;\n@%p1 bra $top;\nret;\n}}\n.visible .entry k()\n{{\ncall spin, ();\nret;\n}}\n");
    let m = Module::load(&called).unwrap();
    assert_eq!(m.kernel("k").unwrap().max_steps, None);
    // `nanosleep` waits however long it likes.
    let sleeps = format!("{head}.visible .entry k()\n{{\nnanosleep.u32 100;\nret;\n}}\n");
    let m = Module::load(&sleeps).unwrap();
    assert_eq!(m.kernel("k").unwrap().max_steps, None);
}
