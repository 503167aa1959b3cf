//! calls.cu: device functions taking and returning .param aggregates, struct kernel
//! parameters, local-memory arrays and stack frames, dynamic shared memory, launch bounds,
//! module symbols.

use netgpu_ptx::LaunchError;

use crate::util::*;

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn struct_parameters_and_aggregate_calls() {
    for file in ["calls.ptx", "sm90/calls.ptx"] {
        let m = module(file);
        let k = m.kernel("struct_params").unwrap();
        assert_eq!(k.attributes().maxntid, Some([256, 1, 1]));
        assert_eq!(k.attributes().minnctapersm, Some(2));
        assert_eq!(k.attributes().max_threads_per_block, 256);
        // Params is 56 bytes (8-aligned), Vec3 12, then a pointer.
        let sizes: Vec<u32> = k.params().iter().map(|p| p.size).collect();
        assert_eq!(sizes, [56, 12, 8]);
        let n = 300usize;
        let mut r = Rng(41);
        let input: Vec<f32> = (0..n).map(|_| r.f32()).collect();
        let gpu = Gpu::new();
        let din = gpu.upload(&input);
        let out = gpu.zeros(n * 12);
        let iout = gpu.zeros(n * 8);
        let (scale, offset, bias, tag) = (1.5f32, [0.25f32, -2.0, 3.0], 0.125f64, *b"ABCDE");
        let mut p = Vec::new();
        p.extend_from_slice(&(n as i32).to_le_bytes());
        p.extend_from_slice(&scale.to_le_bytes());
        for o in offset {
            p.extend_from_slice(&o.to_le_bytes());
        }
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&din.to_le_bytes());
        p.extend_from_slice(&out.to_le_bytes());
        p.extend_from_slice(&tag);
        p.extend_from_slice(&[0; 3]);
        p.extend_from_slice(&bias.to_le_bytes());
        assert_eq!(p.len(), 56);
        let axis = [0.5f32, 1.0, -1.5];
        let axis_b: Vec<u8> = axis.iter().flat_map(|v| v.to_le_bytes()).collect();
        Launch::new(&m, "struct_params", 2, 256)
            .run(&gpu, &[&p, &axis_b, &u64b(iout)])
            .unwrap();
        let got: Vec<f32> = gpu.download(out, n * 3);
        let gi: Vec<i32> = gpu.download(iout, n * 2);
        let fib = |k: usize| {
            (0..k)
                .fold((0i32, 1i32), |(a, b), _| (b, a.wrapping_add(b)))
                .0
        };
        for i in 0..n {
            let v = input[i] * scale;
            let a = [v + offset[0], offset[1], offset[2]];
            let b = axis;
            let c = [
                a[1] * b[2] - a[2] * b[1],
                a[2] * b[0] - a[0] * b[2],
                a[0] * b[1] - a[1] * b[0],
            ];
            assert!(close(got[i * 3], c[0]), "x of {i}");
            assert!(close(got[i * 3 + 1], c[1]), "y of {i}");
            let z = c[2] + bias as f32 + f32::from(tag[i % 5]);
            assert!(
                close(got[i * 3 + 2], z),
                "z of {i}: {} vs {z}",
                got[i * 3 + 2]
            );
            let kk = i % 7;
            let s = (0..12).fold(0i32, |s, k| {
                s.wrapping_add(
                    (i as i32)
                        .wrapping_mul((((k + kk) % 12) + 1) as i32)
                        .wrapping_mul(k as i32 + 1),
                )
            });
            assert_eq!(gi[i * 2], s.wrapping_add(i as i32), "sum_big of {i}");
            assert_eq!(gi[i * 2 + 1], fib(i % 30), "fib of {i}");
        }
    }
}

#[test]
fn dynamically_indexed_local_arrays() {
    for file in ["calls.ptx", "sm90/calls.ptx"] {
        let m = module(file);
        assert!(m.kernel("local_array").unwrap().attributes().local_bytes >= 256);
        let n = 333usize;
        let mut r = Rng(43);
        let idx: Vec<i32> = (0..n).map(|_| r.range(0, 1000)).collect();
        let gpu = Gpu::new();
        let di = gpu.upload(&idx);
        let out = gpu.zeros(n * 4);
        Launch::new(&m, "local_array", 3, 128)
            .run(&gpu, &[&u64b(di), &u64b(out), &i32b(n as i32)])
            .unwrap();
        let got: Vec<i32> = gpu.download(out, n);
        for i in 0..n {
            let s: i32 = (0..16).map(|k| ((idx[i] + k * 7) & 63) * i as i32).sum();
            assert_eq!(got[i], s, "element {i}");
        }
    }
}

#[test]
fn dynamic_shared_memory_and_launch_bounds() {
    for file in ["calls.ptx", "sm90/calls.ptx"] {
        let m = module(file);
        let n = 500usize;
        let input: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let gpu = Gpu::new();
        let din = gpu.upload(&input);
        let out = gpu.zeros(n * 4);
        let mut l = Launch::new(&m, "dyn_shared", 4, 128);
        l.shared = 2 * 128 * 4;
        l.run(&gpu, &[&u64b(din), &u64b(out), &i32b(n as i32)])
            .unwrap();
        let got: Vec<f32> = gpu.download(out, n);
        for i in 0..n {
            let (b, t) = (i / 128, i % 128);
            let j = b * 128 + 127 - t;
            let v = if j < n { input[j] } else { 0.0 };
            assert_eq!(got[i], v + 1.0, "element {i}");
        }
        // Too little dynamic shared memory: the kernel reads past it.
        l.shared = 128 * 4;
        assert!(matches!(
            l.run(&gpu, &[&u64b(din), &u64b(out), &i32b(n as i32)]),
            Err(LaunchError::IllegalAddress { .. })
        ));
        // .maxntid 128: a block of 256 is refused at launch.
        let mut big = Launch::new(&m, "dyn_shared", 1, 256);
        big.shared = 2 * 256 * 4;
        assert!(matches!(
            big.run(&gpu, &[&u64b(din), &u64b(out), &i32b(n as i32)]),
            Err(LaunchError::InvalidConfig(_))
        ));
    }
}

#[test]
fn module_globals_and_constants() {
    for file in ["calls.ptx", "sm90/calls.ptx"] {
        let m = module(file);
        let names: Vec<&str> = m.globals().iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["counter", "table", "target_arr", "ptr_to"]);
        let gpu = Gpu::new();
        let out = gpu.zeros(64 * 4);
        Launch::new(&m, "symbols", 1, 64)
            .run(&gpu, &[&u64b(out)])
            .unwrap();
        let table = [1, 2, 3, 5, 8, 13, 21, 34];
        let got: Vec<i32> = gpu.download(out, 64);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(*g, table[i % 8]);
        }
    }
}

#[test]
fn a_global_initialised_with_another_globals_address() {
    for file in ["calls.ptx", "sm90/calls.ptx"] {
        let m = module(file);
        let g = &m.globals()[3];
        assert_eq!(g.name, "ptr_to");
        assert_eq!(g.relocs.len(), 1);
        let gpu = Gpu::new();
        let globals = place_globals(&gpu, &m);
        // The image holds target_arr's address + 8.
        let img = m.init_image(3, &globals).unwrap();
        assert_eq!(
            u64::from_le_bytes(img[..8].try_into().unwrap()),
            globals[2] + 8
        );
        let out = gpu.zeros(32 * 4);
        let mut l = Launch::new(&m, "follow_pointer", 1, 32);
        l.globals = Some(globals);
        l.run(&gpu, &[&u64b(out)]).unwrap();
        let got: Vec<i32> = gpu.download(out, 32);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(*g, [30, 40][i % 2]);
        }
    }
}
