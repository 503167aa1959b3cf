//! atomics.cu: every atomic width and kind, global and shared, scoped and ordered, and a
//! release/acquire message-passing protocol across blocks.

use std::mem::offset_of;

use crate::util::*;

/// The kernel's `Totals`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Totals {
    add_i: i32,
    add_u: u32,
    add_ull: u64,
    add_f: f32,
    add_d: f64,
    min_i: i32,
    max_i: i32,
    min_u: u32,
    max_u: u32,
    min_ll: i64,
    max_ll: i64,
    min_ull: u64,
    max_ull: u64,
    and_u: u32,
    or_u: u32,
    xor_u: u32,
    and_ull: u64,
    or_ull: u64,
    xor_ull: u64,
    inc_u: u32,
    dec_u: u32,
    exch_i: i32,
    cas_i: i32,
    cas_ull: u64,
    cas_us: u16,
    pad: u16,
    add_h2: u32,
    add_b2: u32,
    add_h: u16,
    add_b: u16,
    block_scope: i32,
    system_scope: i32,
    relaxed_ref: i32,
    acq_rel_ref: i32,
}

#[test]
fn global_atomics_of_every_width_and_kind() {
    for file in ["atomics.ptx", "sm90/atomics.ptx"] {
        let m = module(file);
        assert_eq!(std::mem::size_of::<Totals>(), 176);
        assert_eq!(offset_of!(Totals, add_h2), 148);
        let n = 200usize;
        let mut r = Rng(7);
        let input: Vec<i32> = (0..n).map(|_| r.range(-3000, 3000)).collect();
        let init = Totals {
            add_i: 5,
            min_i: i32::MAX,
            max_i: i32::MIN,
            min_u: u32::MAX,
            min_ll: i64::MAX,
            max_ll: i64::MIN,
            min_ull: u64::MAX,
            and_u: u32::MAX,
            and_ull: u64::MAX,
            cas_i: 10,
            cas_us: 65530,
            ..Default::default()
        };
        for threads in [1, 3] {
            let gpu = Gpu::new();
            let t = gpu.upload(&[init]);
            let inp = gpu.upload(&input);
            let mut l = Launch::new(&m, "atomics_global", 2, 128);
            l.threads = threads;
            l.run(&gpu, &[&u64b(t), &u64b(inp), &i32b(n as i32)])
                .unwrap();
            let got: Totals = gpu.download(t, 1)[0];
            let s: i64 = input.iter().map(|&v| i64::from(v)).sum();
            assert_eq!(got.add_i, 5i32.wrapping_add(s as i32));
            assert_eq!(got.add_u, s as u32);
            assert_eq!(got.add_ull, s as u64);
            assert_eq!(got.add_f, input.iter().map(|v| (v & 7) as f32).sum::<f32>());
            assert_eq!(got.add_d, s as f64 * 0.5);
            assert_eq!(got.min_i, *input.iter().min().unwrap());
            assert_eq!(got.max_i, *input.iter().max().unwrap());
            assert_eq!(got.min_u, input.iter().map(|&v| v as u32).min().unwrap());
            assert_eq!(got.max_u, input.iter().map(|&v| v as u32).max().unwrap());
            let ll: Vec<i64> = input
                .iter()
                .map(|&v| i64::from(v) * 1_000_000_007)
                .collect();
            assert_eq!(got.min_ll, *ll.iter().min().unwrap());
            assert_eq!(got.max_ll, *ll.iter().max().unwrap());
            let ull: Vec<u64> = input.iter().map(|&v| i64::from(v) as u64).collect();
            assert_eq!(got.min_ull, *ull.iter().min().unwrap());
            assert_eq!(got.max_ull, *ull.iter().max().unwrap());
            assert_eq!(
                got.and_u,
                (0..n).fold(u32::MAX, |a, i| a & !(1 << (i % 32)))
            );
            assert_eq!(got.or_u, input.iter().fold(0, |a, &v| a | 1 << (v & 31)));
            assert_eq!(got.xor_u, input.iter().fold(0, |a, &v| a ^ v as u32));
            assert_eq!(
                got.and_ull,
                (0..n).fold(u64::MAX, |a, i| a & !(1 << (i % 64)))
            );
            assert_eq!(got.or_ull, input.iter().fold(0, |a, &v| a | 1 << (v & 63)));
            assert_eq!(got.xor_ull, ull.iter().fold(0, |a, v| a ^ v));
            // inc/dec wrap at the bound, whatever the order.
            assert_eq!(
                got.inc_u,
                (0..n).fold(0u32, |x, _| if x >= 100 { 0 } else { x + 1 })
            );
            assert_eq!(
                got.dec_u,
                (0..n).fold(0u32, |x, _| if x == 0 || x > 100 { 100 } else { x - 1 })
            );
            assert!(input.contains(&got.exch_i));
            assert_eq!(got.cas_i, 10 + n as i32);
            assert_eq!(
                got.cas_ull,
                input.iter().map(|&v| (v + 5000) as u64).max().unwrap()
            );
            assert_eq!(got.cas_us, 65530u16.wrapping_add(n as u16));
            // f16x2 {1.0, 0.5} x 200 = {200, 100}; bf16x2 {1, 2} x 200 = {200, 400}.
            assert_eq!(got.add_h2, 0x5640_5a40, "{:#x}", got.add_h2);
            assert_eq!(got.add_b2, 0x43c8_4348, "{:#x}", got.add_b2);
            assert_eq!(got.add_h, 0x5240); // 50.0
            assert_eq!(got.add_b, 0x4348); // 200.0
            assert_eq!(got.block_scope, n as i32);
            assert_eq!(got.system_scope, 2 * n as i32);
            assert_eq!(got.relaxed_ref, 3 * n as i32);
            assert_eq!(got.acq_rel_ref, n as i32);
        }
    }
}

#[test]
fn shared_memory_atomics_build_a_histogram() {
    for file in ["atomics.ptx", "sm90/atomics.ptx"] {
        let m = module(file);
        let n = 1000usize;
        let mut r = Rng(11);
        let input: Vec<i32> = (0..n).map(|_| r.range(-500, 5000)).collect();
        let gpu = Gpu::new();
        let inp = gpu.upload(&input);
        let hist = gpu.zeros(16 * 4);
        let hist64 = gpu.zeros(16 * 8);
        let fsum = gpu.zeros(4);
        let mins = gpu.upload(&[i32::MAX]);
        let maxs = gpu.upload(&[i32::MIN]);
        Launch::new(&m, "atomics_shared", 4, 256)
            .run(
                &gpu,
                &[
                    &u64b(inp),
                    &i32b(n as i32),
                    &u64b(hist),
                    &u64b(hist64),
                    &u64b(fsum),
                    &u64b(mins),
                    &u64b(maxs),
                ],
            )
            .unwrap();
        let mut h = [0u32; 16];
        let mut h64 = [0u64; 16];
        for &v in &input {
            h[(v & 15) as usize] += 1;
            h64[((v >> 4) & 15) as usize] += 3;
        }
        assert_eq!(gpu.download::<u32>(hist, 16), h);
        assert_eq!(gpu.download::<u64>(hist64, 16), h64);
        assert_eq!(gpu.download::<f32>(fsum, 1)[0], n as f32 * 0.5);
        assert_eq!(
            gpu.download::<i32>(mins, 1)[0],
            *input.iter().min().unwrap()
        );
        assert_eq!(
            gpu.download::<i32>(maxs, 1)[0],
            *input.iter().max().unwrap()
        );
    }
}

#[test]
fn release_acquire_message_passing_between_blocks() {
    for file in ["atomics.ptx", "sm90/atomics.ptx"] {
        let m = module(file);
        let n = 300usize;
        for threads in [1, 2, 4] {
            let gpu = Gpu::new();
            let data = gpu.zeros(n * 4);
            let flag = gpu.zeros(4);
            let blocks = 6usize;
            let out = gpu.zeros(blocks * n * 4);
            let mut l = Launch::new(&m, "message_passing", blocks as u32, 64);
            l.threads = threads;
            l.run(
                &gpu,
                &[&u64b(data), &u64b(flag), &u64b(out), &i32b(n as i32)],
            )
            .unwrap();
            let got: Vec<i32> = gpu.download(out, blocks * n);
            for b in 1..blocks {
                for i in 0..n {
                    assert_eq!(got[b * n + i], i as i32 * 3 + 1, "block {b} item {i}");
                }
            }
        }
    }
}
