//! convert.cu: conversions in every rounding and saturation form, directed-rounding
//! arithmetic, and the fast-math functions.

use crate::util::*;

#[derive(Clone, Copy)]
enum Dir {
    Zero,
    Down,
    Up,
}

/// The f32 neighbours of an exactly known value `v`, chosen by direction.
fn to_f32(v: f64, d: Dir) -> f32 {
    let c = v as f32;
    if f64::from(c) == v {
        return c;
    }
    let step = |x: f32, up: bool| {
        let b = x.to_bits();
        f32::from_bits(match (x >= 0.0, up) {
            (true, true) => b + 1,
            (true, false) => b - 1,
            (false, true) => b - 1,
            (false, false) => b + 1,
        })
    };
    let (lo, hi) = if f64::from(c) < v {
        (c, step(c, true))
    } else {
        (step(c, false), c)
    };
    match d {
        Dir::Down => lo,
        Dir::Up => hi,
        Dir::Zero => {
            if v > 0.0 {
                lo
            } else {
                hi
            }
        }
    }
}

fn close(got: f32, want: f64, rel: f64) -> bool {
    let w = want as f32;
    got == w || (f64::from(got) - want).abs() <= rel * want.abs().max(1e-3)
}

#[test]
fn conversions_rounding_and_fast_math() {
    for file in ["convert.ptx", "sm90/convert.ptx"] {
        let m = module(file);
        let n = 640usize;
        let mut r = Rng(31);
        let mut x: Vec<f32> = (0..n).map(|_| r.f32()).collect();
        let y: Vec<f64> = (0..n)
            .map(|_| (f64::from(r.next()) / 4294967296.0 - 0.5) * 2e6 + f64::from(r.next()) * 1e-9)
            .collect();
        x[0] = 0.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 1e-40; // subnormal
        let gpu = Gpu::new();
        let (dx, dy) = (gpu.upload(&x), gpu.upload(&y));
        let (oi, of) = (gpu.zeros(n * 64), gpu.zeros(n * 64));
        Launch::new(&m, "conversions", 5, 128)
            .run(
                &gpu,
                &[&u64b(dx), &u64b(dy), &u64b(oi), &u64b(of), &i32b(n as i32)],
            )
            .unwrap();
        let gi: Vec<i32> = gpu.download(oi, n * 16);
        let gf: Vec<f32> = gpu.download(of, n * 16);
        for i in 0..n {
            let (xv, yv) = (x[i], y[i]);
            let xd = f64::from(xv);
            let o = &gi[i * 16..i * 16 + 16];
            let big = f64::from(xv * 1e10);
            let ints = [
                xd.round_ties_even() as i32,
                xd.trunc() as i32,
                xd.ceil() as i32,
                xd.floor() as i32,
                xd.round_ties_even().max(0.0) as u32 as i32,
                big.round_ties_even() as i64 as i32,
                ((big.trunc().max(0.0) as u64) >> 8) as i32,
                yv.round_ties_even() as i32,
                yv.trunc() as i32,
                (yv * 1e12).floor() as i64 as i32,
                xd.trunc() as i8 as i32,
                xd.trunc() as i32 as u16 as i32,
                to_f32(f64::from((i as i32).wrapping_mul(16_777_215)), Dir::Zero).to_bits() as i32,
                to_f32(f64::from(0xffff_ff01u32.wrapping_add(i as u32)), Dir::Up).to_bits() as i32,
                (to_f32(yv, Dir::Zero).to_bits() ^ to_f32(yv, Dir::Up).to_bits()) as i32,
                xv.clamp(0.0, 1.0).to_bits() as i32,
            ];
            for (k, e) in ints.iter().enumerate() {
                assert_eq!(o[k], *e, "int output {k} of element {i} (x={xv:e}, y={yv})");
            }
            let g = &gf[i * 16..i * 16 + 16];
            let approx = [
                (0, (xd * 0.1).exp(), 2e-5),
                (1, (xd.abs() + 1.0).ln(), 2e-5),
                (2, (xd * 0.1).exp2(), 2e-6),
                (3, (xd.abs() + 1.0).log2(), 2e-6),
                (4, 1.0 / (xd.abs() + 1.0).sqrt(), 2e-6),
                (6, xd / 3.0, 2e-6),
                (
                    13,
                    f64::from(yv.abs().sqrt() as f32)
                        + f64::from((1.0 / (yv.abs() + 1.0).sqrt()) as f32),
                    1e-6,
                ),
            ];
            for (k, want, rel) in approx {
                assert!(
                    close(g[k], want, rel),
                    "float output {k} of element {i}: {} vs {want} (x={xv})",
                    g[k]
                );
            }
            // sin + cos cancels: an absolute bound.
            assert!(
                (f64::from(g[7]) - (xd.sin() + xd.cos())).abs() < 1e-6,
                "sin+cos of {xv}"
            );
            assert_eq!(g[5], xv.abs().sqrt(), "sqrt.rn of {xv}");
            assert_eq!(g[8], 3f32.copysign(xv));
            assert_eq!(g[9], 1.0 / (xv + 0.5), "rcp.rn of {}", xv + 0.5);
            assert_eq!(g[10], xv.abs().sqrt());
            assert_eq!(
                g[11],
                if xv == 0.0 { 1.0 } else { 0.0 },
                "isnan(x/0) of {xv:e}, element {i}"
            );
            let inf = (xv * 1e38 * 1e38).is_infinite();
            assert_eq!(g[12], if inf { 1.0 } else { 0.0 });
            let fz = to_f32(xd * f64::from(1.0001f32) + 0.5, Dir::Zero);
            let ad = to_f32(xd + f64::from(0.1f32), Dir::Down);
            let mu = to_f32(xd * f64::from(0.3f32), Dir::Up);
            assert_eq!(g[14], fz + ad + mu, "directed fma/add/mul of {xv}");
            let e = f32::from_bits(0x7f80_0000 & xv.to_bits());
            assert_eq!(g[15], (yv + 1.0) as f32 + e);
        }
    }
}
