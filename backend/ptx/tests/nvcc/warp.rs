//! warp.cu: shuffles in every mode and width, votes, match, activemask, and the integer
//! intrinsics, against CUDA's documented semantics.

use crate::util::*;

/// `__shfl_*_sync` as the CUDA programming guide defines them (width-`w` segments).
fn shfl_idx(v: &[i32], lane: usize, src: i32, w: usize) -> i32 {
    let seg = lane / w * w;
    v[seg + (src as usize % w)]
}
fn shfl_up(v: &[i32], lane: usize, d: usize, w: usize) -> i32 {
    if lane % w >= d {
        v[lane - d]
    } else {
        v[lane]
    }
}
fn shfl_down(v: &[i32], lane: usize, d: usize, w: usize) -> i32 {
    if lane % w + d < w {
        v[lane + d]
    } else {
        v[lane]
    }
}
fn shfl_xor(v: &[i32], lane: usize, m: usize, w: usize) -> i32 {
    let j = lane ^ m;
    if j / w <= lane / w {
        v[j]
    } else {
        v[lane]
    }
}

#[test]
fn shuffles_in_every_mode_and_width() {
    for file in ["warp.ptx", "sm90/warp.ptx"] {
        let m = module(file);
        let (blocks, threads) = (3usize, 64usize);
        let n = blocks * threads;
        let mut r = Rng(3);
        let input: Vec<i32> = (0..n).map(|_| r.range(-100_000, 100_000)).collect();
        let gpu = Gpu::new();
        let inp = gpu.upload(&input);
        let out = gpu.zeros(n * 12);
        Launch::new(&m, "shuffles", blocks as u32, threads as u32)
            .run(&gpu, &[&u64b(inp), &u64b(out)])
            .unwrap();
        let got: Vec<i32> = gpu.download(out, n * 3);
        for w0 in (0..n).step_by(32) {
            let v = &input[w0..w0 + 32];
            for lane in 0..32 {
                let i = w0 + lane;
                let tid = i % threads;
                let mut o = 0i32;
                o = o.wrapping_add(shfl_idx(v, lane, 5, 32));
                o = o.wrapping_add(3i32.wrapping_mul(shfl_up(v, lane, 3, 32)));
                o = o.wrapping_add(5i32.wrapping_mul(shfl_down(v, lane, 7, 32)));
                o = o.wrapping_add(7i32.wrapping_mul(shfl_xor(v, lane, 9, 32)));
                o = o.wrapping_add(11i32.wrapping_mul(shfl_idx(v, lane, tid as i32 + 1, 8)));
                o = o.wrapping_add(13i32.wrapping_mul(shfl_down(v, lane, 2, 16)));
                o = o.wrapping_add(17i32.wrapping_mul(shfl_up(v, lane, 1, 4)));
                assert_eq!(got[i * 3], o, "lane {lane} of warp at {w0}");
                // 64-bit values shuffle as two halves.
                let wv = |l: usize| ((i64::from(v[l])) << 33) | (w0 + l) as u32 as i64;
                let x = wv(lane ^ 1);
                assert_eq!(got[i * 3 + 1], ((x >> 33) as i32) ^ ((x & 0xffff) as i32));
                let d = f64::from(shfl_down(v, lane, 1, 32)) * 0.25;
                assert_eq!(got[i * 3 + 2], (d * 4.0) as i32);
            }
        }
    }
}

#[test]
fn votes_match_and_activemask() {
    for file in ["warp.ptx", "sm90/warp.ptx"] {
        let m = module(file);
        let (blocks, threads) = (4usize, 96usize);
        let n = blocks * threads;
        let mut r = Rng(5);
        let mut input: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
        // One warp entirely equal, one with nothing above 900.
        for v in &mut input[32..64] {
            *v = 17;
        }
        for v in &mut input[64..96] {
            *v = (*v).clamp(-999, 900);
        }
        let gpu = Gpu::new();
        let inp = gpu.upload(&input);
        let out = gpu.zeros(n * 24);
        Launch::new(&m, "votes", blocks as u32, threads as u32)
            .run(&gpu, &[&u64b(inp), &u64b(out)])
            .unwrap();
        let got: Vec<u32> = gpu.download(out, n * 6);
        for w0 in (0..n).step_by(32) {
            let v = &input[w0..w0 + 32];
            let ballot = |f: &dyn Fn(i32) -> bool| {
                (0..32).fold(0u32, |m, l| if f(v[l]) { m | 1 << l } else { m })
            };
            let b = ballot(&|x| x & 1 != 0);
            let all = v.iter().all(|&x| x > -1000);
            let any = v.iter().any(|&x| x > 900);
            let uni = true; // nothing exceeds 2000
            let all_equal = v.iter().all(|&x| x == v[0]);
            for lane in 0..32 {
                let o = &got[(w0 + lane) * 6..(w0 + lane) * 6 + 6];
                assert_eq!(o[0], b, "ballot, warp at {w0}");
                assert_eq!(
                    o[1],
                    u32::from(all)
                        | u32::from(any) << 1
                        | u32::from(uni) << 2
                        | u32::from(all_equal) << 3,
                    "all/any/uni/pred, warp at {w0}"
                );
                assert_eq!(o[2], u32::MAX, "activemask");
                assert_eq!(o[3], ballot(&|x| x & 3 == v[lane] & 3), "match.any");
                let m_all = u32::MAX; // every lane has v & 0 == 0
                let m_all2 = if all_equal { u32::MAX } else { 0 };
                assert_eq!(o[4], m_all ^ (m_all2 << 1), "match.all");
                let mut m64 = ballot(&|x| x & 1 == v[lane] & 1);
                if lane & 1 == 1 {
                    m64 ^= ballot(&|x| x > 0) & 0xaaaa_aaaa;
                }
                assert_eq!(
                    o[5], m64,
                    "match.any.b64 and the divergent ballot, lane {lane}"
                );
            }
        }
    }
}

fn bfe(a: u32, pos: u32, len: u32, signed: bool) -> u32 {
    let sbit = if !signed || len == 0 {
        0
    } else {
        (a >> (pos + len - 1).min(31)) & 1
    };
    (0..32).fold(0, |d, i| {
        let bit = if i < len && pos + i <= 31 {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d | bit << i
    })
}

fn fns(mask: u32, base: u32, offset: i32) -> u32 {
    if offset == 0 {
        return if mask >> base & 1 == 1 {
            base
        } else {
            u32::MAX
        };
    }
    let mut count = offset.unsigned_abs() - 1;
    let mut pos = base as i32;
    while (0..32).contains(&pos) {
        if mask >> pos & 1 == 1 {
            if count == 0 {
                return pos as u32;
            }
            count -= 1;
        }
        pos += offset.signum();
    }
    u32::MAX
}

fn ffs(x: u64) -> u32 {
    if x == 0 {
        0
    } else {
        x.trailing_zeros() + 1
    }
}

#[test]
fn integer_intrinsics() {
    for file in ["warp.ptx", "sm90/warp.ptx"] {
        let m = module(file);
        let n = 500usize;
        let mut r = Rng(9);
        let mut input: Vec<u32> = (0..n).map(|_| r.next() ^ (r.next() << 16)).collect();
        input[3] = 0;
        input[4] = 0x8000_0000;
        input[5] = u32::MAX;
        let gpu = Gpu::new();
        let inp = gpu.upload(&input);
        let out = gpu.zeros(n * 64);
        Launch::new(&m, "bits", 4, 128)
            .run(&gpu, &[&u64b(inp), &u64b(out), &i32b(n as i32)])
            .unwrap();
        let got: Vec<u32> = gpu.download(out, n * 16);
        for i in 0..n {
            let (a, b) = (input[i], input[(i + 1) % n]);
            let w = (u64::from(a) << 32) | u64::from(b);
            let perm = |s: u32| {
                let bytes = (u64::from(b) << 32) | u64::from(a);
                (0..4).fold(0u32, |d, k| {
                    d | (((bytes >> (((s >> (4 * k)) & 7) * 8)) & 0xff) as u32) << (8 * k)
                })
            };
            let o = &got[i * 16..i * 16 + 16];
            let (pos, len) = (b & 31, (b >> 5) & 31);
            let bfi = {
                let mut f = b;
                for k in 0..len {
                    if pos + k > 31 {
                        break;
                    }
                    f = (f & !(1 << (pos + k))) | (((a >> k) & 1) << (pos + k));
                }
                f
            };
            let bfind_s = {
                let x = if (a as i32) < 0 { !a } else { a };
                if x == 0 {
                    u32::MAX
                } else {
                    31 - (31 - x.leading_zeros())
                }
            };
            let expect = [
                perm(0x5140),
                perm(b & 0x7777),
                a.reverse_bits(),
                a.count_ones() + (w.count_ones() << 8),
                a.leading_zeros() + (w.leading_zeros() << 8),
                ffs(u64::from(a)) + (ffs(w) << 8),
                fns(a, b & 31, 1 + (b % 5) as i32),
                ((((u64::from(b) << 32) | u64::from(a)) << (b & 31)) >> 32) as u32,
                ((((u64::from(b) << 32) | u64::from(a)) >> (b & 63).min(32)) & 0xffff_ffff) as u32,
                bfe(a, pos, len, false),
                bfe(a, pos, len, true),
                bfi,
                if a == 0 {
                    u32::MAX
                } else {
                    31 - a.leading_zeros()
                },
                bfind_s,
                (w.reverse_bits() >> 13) as u32,
                ((u64::from(a) * u64::from(b)) >> 32) as u32
                    ^ (((u128::from(w) * u128::from(a)) >> 64) as u64 >> 3) as u32
                    ^ ((i64::from(a as i32) * i64::from(b as i32)) >> 32) as u32,
            ];
            for k in 0..16 {
                assert_eq!(
                    o[k], expect[k],
                    "output {k} of element {i} (a={a:#x}, b={b:#x})"
                );
            }
        }
    }
}
