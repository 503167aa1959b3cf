//! half.cu: f16 (native instructions on sm_75) and bf16 (emulated in integer code on sm_75)
//! arithmetic and conversions, against references built from first principles: f16
//! rounding by nearest-neighbour search over every f16 value.

use crate::util::*;

fn f16_value(h: u16) -> f64 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1f);
    let m = f64::from(h & 0x3ff);
    match e {
        0 => s * m * 2f64.powi(-24),
        31 if m == 0.0 => s * f64::INFINITY,
        31 => f64::NAN,
        e => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Nearest,
    Zero,
    Down,
    Up,
}

/// Rounds `x` to f16 by searching the neighbours among all finite f16 values.
fn f16_round(x: f64, mode: Mode) -> u16 {
    let neg = x < 0.0;
    let a = x.abs();
    let sign = if neg { 0x8000 } else { 0 };
    let max = f16_value(0x7bff);
    // Largest magnitude <= a, smallest >= a.
    let (mut lo, mut hi) = (0u16, 0x7bffu16);
    if a >= max {
        lo = 0x7bff;
        hi = 0x7bff;
    } else {
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if f16_value(mid) <= a {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        if f16_value(lo) == a {
            hi = lo;
        }
    }
    let (vl, vh) = (f16_value(lo), f16_value(hi));
    let away = |_: ()| -> u16 {
        if a > max {
            0x7c00
        } else {
            hi
        }
    };
    let mag = match (mode, neg) {
        _ if vl == a => lo,
        (Mode::Nearest, _) => {
            if a >= max + 16.0 {
                0x7c00 // at or past max + half an ulp
            } else if a - vl < vh - a || (a - vl == vh - a && lo % 2 == 0) {
                lo
            } else {
                hi
            }
        }
        (Mode::Zero, _) => lo,
        (Mode::Down, false) | (Mode::Up, true) => lo,
        (Mode::Down, true) | (Mode::Up, false) => away(()),
    };
    sign | mag
}

fn h(x: f64) -> f64 {
    f16_value(f16_round(x, Mode::Nearest))
}

fn ulps16(a: f32, b: f64) -> i32 {
    let (x, y) = (
        f16_round(f64::from(a), Mode::Nearest),
        f16_round(b, Mode::Nearest),
    );
    (i32::from(x & 0x7fff) - i32::from(y & 0x7fff)).abs()
}

#[test]
fn f16_scalar_and_packed_arithmetic() {
    for file in ["half.ptx", "sm90/half.ptx"] {
        let m = module(file);
        let n = 700usize;
        let mut r = Rng(21);
        let a: Vec<f32> = (0..n).map(|_| r.f32()).collect();
        let b: Vec<f32> = (0..n).map(|_| r.f32()).collect();
        let gpu = Gpu::new();
        let (da, db) = (gpu.upload(&a), gpu.upload(&b));
        let out = gpu.zeros(n * 64);
        Launch::new(&m, "half_math", 6, 128)
            .run(&gpu, &[&u64b(da), &u64b(db), &u64b(out), &i32b(n as i32)])
            .unwrap();
        let got: Vec<f32> = gpu.download(out, n * 16);
        for i in 0..n {
            let (x, y) = (h(f64::from(a[i])), h(f64::from(b[i])));
            let o = &got[i * 16..i * 16 + 16];
            let f = |v: f64| v as f32;
            let lo = f(h(x + y));
            let hi = f(h(y + x));
            let p = f64::from(a[i] * 1.001);
            let exact = [
                f(h(x + y)),
                f(h(x * y)),
                f(h(x * y + 1.0)),
                f(h(x - y)),
                hi.mul_add(1000.0, lo),
                f(h(x * y)),
                f(h(y * x + y)),
                if x < y { 1.0 } else { 0.0 },
                f(x.max(y)) - f(x.min(y)),
                f(f16_value(f16_round(p, Mode::Zero))),
                f(f16_value(f16_round(p, Mode::Down))) + f(f16_value(f16_round(p, Mode::Up))),
                h(x * 3.0).round_ties_even() as f32,
                -(x.abs() as f32),
            ];
            for (k, e) in exact.iter().enumerate() {
                assert_eq!(
                    o[k], *e,
                    "output {k} of element {i} (a={}, b={})",
                    a[i], b[i]
                );
            }
            // hsqrt and __hdiv go through f32 approximations: within one f16 ulp.
            assert!(ulps16(o[13], x.abs().sqrt()) <= 1, "sqrt of {x}: {}", o[13]);
            assert!(ulps16(o[14], x / 3.0) <= 1, "{x} / 3: {}", o[14]);
            assert_eq!(o[15], (i as f32 - 50.0) + y as f32);
        }
    }
}

/// f32 to bf16, nearest even, as integer code computes it.
fn bf(x: f32) -> f32 {
    let b = x.to_bits();
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    f32::from_bits(r << 16)
}

#[test]
fn bf16_emulated_arithmetic() {
    for file in ["half.ptx", "sm90/half.ptx"] {
        let m = module(file);
        let n = 500usize;
        let mut r = Rng(23);
        let a: Vec<f32> = (0..n).map(|_| r.f32() * 3.7).collect();
        let b: Vec<f32> = (0..n).map(|_| r.f32() * 1.3).collect();
        let gpu = Gpu::new();
        let (da, db) = (gpu.upload(&a), gpu.upload(&b));
        let out = gpu.zeros(n * 32);
        Launch::new(&m, "bf16_math", 4, 128)
            .run(&gpu, &[&u64b(da), &u64b(db), &u64b(out), &i32b(n as i32)])
            .unwrap();
        let got: Vec<f32> = gpu.download(out, n * 8);
        for i in 0..n {
            let (x, y) = (bf(a[i]), bf(b[i]));
            let o = &got[i * 8..i * 8 + 8];
            let lo = bf(x + y);
            let hi = bf(y + x);
            let rz = f32::from_bits((a[i] * 1.001).to_bits() & 0xffff_0000);
            let exact = [
                bf(x + y),
                bf(x * y),
                bf(bf(x * y) + 1.0),
                hi.mul_add(1000.0, lo),
                bf(y * x),
                if x < y { 1.0 } else { 0.0 },
                rz,
                x.round_ties_even() + x.max(y),
            ];
            for (k, e) in exact.iter().enumerate() {
                assert_eq!(
                    o[k], *e,
                    "output {k} of element {i} (a={}, b={})",
                    a[i], b[i]
                );
            }
        }
    }
}
