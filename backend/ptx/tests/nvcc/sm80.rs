//! sm80.cu (compute_80): redux.sync and native bf16 instructions.

use crate::util::*;

#[test]
fn redux_sync_over_a_warp() {
    let m = module("sm80.ptx");
    let (blocks, threads) = (2usize, 96usize);
    let n = blocks * threads;
    let mut r = Rng(81);
    let x: Vec<i32> = (0..n).map(|_| r.next() as i32).collect();
    let gpu = Gpu::new();
    let dx = gpu.upload(&x);
    let out = gpu.zeros(n * 24);
    Launch::new(&m, "redux", blocks as u32, threads as u32)
        .run(&gpu, &[&u64b(dx), &u64b(out)])
        .unwrap();
    let got: Vec<i32> = gpu.download(out, n * 6);
    for w0 in (0..n).step_by(32) {
        let v = &x[w0..w0 + 32];
        let u: Vec<u32> = v.iter().map(|&e| e as u32).collect();
        let want = [
            u.iter().fold(0u32, |a, &e| a.wrapping_add(e)) as i32,
            *v.iter().min().unwrap(),
            *v.iter().max().unwrap(),
            *u.iter().min().unwrap() as i32,
            (u.iter().fold(u32::MAX, |a, &e| a & e) ^ u.iter().fold(0, |a, &e| a | e)) as i32,
            u.iter().fold(0, |a, &e| a ^ e) as i32,
        ];
        for l in 0..32 {
            assert_eq!(
                &got[(w0 + l) * 6..(w0 + l) * 6 + 6],
                &want,
                "warp at {w0}, lane {l}"
            );
        }
    }
}

/// f64 to bf16 (as f32), nearest even, in one rounding: round to odd into f32 first.
fn bf64(x: f64) -> f32 {
    let mut c = x as f32;
    if f64::from(c).abs() > x.abs() {
        c = f32::from_bits(c.to_bits() - 1);
    }
    let odd = if f64::from(c) != x {
        f32::from_bits(c.to_bits() | 1)
    } else {
        c
    };
    let b = odd.to_bits();
    f32::from_bits((b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) << 16)
}

#[test]
fn native_bf16_arithmetic_rounds_once() {
    let m = module("sm80.ptx");
    let n = 400usize;
    let mut r = Rng(83);
    let a: Vec<f32> = (0..n).map(|_| r.f32() * 7.3).collect();
    let b: Vec<f32> = (0..n).map(|_| r.f32() * 0.37).collect();
    let gpu = Gpu::new();
    let (da, db) = (gpu.upload(&a), gpu.upload(&b));
    let out = gpu.zeros(n * 16);
    Launch::new(&m, "bf16_native", 4, 128)
        .run(&gpu, &[&u64b(da), &u64b(db), &u64b(out), &i32b(n as i32)])
        .unwrap();
    let got: Vec<f32> = gpu.download(out, n * 4);
    for i in 0..n {
        let (x, y) = (
            f64::from(bf64(f64::from(a[i]))),
            f64::from(bf64(f64::from(b[i]))),
        );
        let want = [bf64(x * y + x), bf64(x * y), bf64(y * y), x.max(y) as f32];
        assert_eq!(
            &got[i * 4..i * 4 + 4],
            &want,
            "element {i} (a={}, b={})",
            a[i],
            b[i]
        );
    }
}
