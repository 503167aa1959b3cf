//! cub_block.cu: CUB's block and warp primitives inside our kernels, and a grid-wide
//! single-pass scan with CUB's decoupled look-back (ScanTileState + TilePrefixCallbackOp).

use crate::util::*;

const THREADS: usize = 128;
const TILE: usize = THREADS * 4;

#[test]
fn block_radix_sort_pairs_and_descending_floats() {
    for file in ["cub_block.ptx", "sm90/cub_block.ptx"] {
        let m = module(file);
        let tiles = 3;
        let n = tiles * TILE;
        let mut r = Rng(51);
        let keys: Vec<u32> = (0..n).map(|_| r.next() % 5000).collect();
        let vals: Vec<i32> = (0..n as i32).collect();
        let gpu = Gpu::new();
        let (dk, dv) = (gpu.upload(&keys), gpu.upload(&vals));
        let (ok, ov) = (gpu.zeros(n * 4), gpu.zeros(n * 4));
        Launch::new(&m, "block_radix_sort", tiles as u32, THREADS as u32)
            .run(&gpu, &[&u64b(dk), &u64b(dv), &u64b(ok), &u64b(ov)])
            .unwrap();
        let (gk, gv): (Vec<u32>, Vec<i32>) = (gpu.download(ok, n), gpu.download(ov, n));
        for t in 0..tiles {
            let mut pairs: Vec<(u32, i32)> = (t * TILE..(t + 1) * TILE)
                .map(|i| (keys[i], vals[i]))
                .collect();
            pairs.sort_by_key(|p| p.0); // stable, as a radix sort is
            for (k, p) in pairs.iter().enumerate() {
                assert_eq!(
                    (gk[t * TILE + k], gv[t * TILE + k]),
                    *p,
                    "tile {t} rank {k}"
                );
            }
        }

        let f: Vec<f32> = (0..n).map(|_| r.f32() * 100.0 + 0.001).collect();
        let df = gpu.upload(&f);
        let of = gpu.zeros(n * 4);
        Launch::new(
            &m,
            "block_radix_sort_float_desc",
            tiles as u32,
            THREADS as u32,
        )
        .run(&gpu, &[&u64b(df), &u64b(of)])
        .unwrap();
        let got: Vec<f32> = gpu.download(of, n);
        for t in 0..tiles {
            let mut want = f[t * TILE..(t + 1) * TILE].to_vec();
            want.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(&got[t * TILE..(t + 1) * TILE], &want[..], "tile {t}");
        }
    }
}

#[test]
fn block_scans_and_reductions() {
    for file in ["cub_block.ptx", "sm90/cub_block.ptx"] {
        let m = module(file);
        let tiles = 4;
        let n = tiles * TILE;
        let mut r = Rng(53);
        let x: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
        let gpu = Gpu::new();
        let dx = gpu.upload(&x);
        let (incl, excl, rak) = (gpu.zeros(n * 4), gpu.zeros(n * 4), gpu.zeros(n * 4));
        let (sums, fmax) = (gpu.zeros(tiles * 8), gpu.zeros(tiles * 4));
        Launch::new(&m, "block_scan_reduce", tiles as u32, THREADS as u32)
            .run(
                &gpu,
                &[
                    &u64b(dx),
                    &u64b(incl),
                    &u64b(excl),
                    &u64b(rak),
                    &u64b(sums),
                    &u64b(fmax),
                ],
            )
            .unwrap();
        let (gi, ge, gr): (Vec<i32>, Vec<i32>, Vec<i32>) = (
            gpu.download(incl, n),
            gpu.download(excl, n),
            gpu.download(rak, n),
        );
        let (gs, gf): (Vec<i32>, Vec<f32>) =
            (gpu.download(sums, tiles * 2), gpu.download(fmax, tiles));
        for t in 0..tiles {
            let tile = &x[t * TILE..(t + 1) * TILE];
            let (mut s, mut mx) = (0i32, 0i32);
            for (k, &v) in tile.iter().enumerate() {
                let i = t * TILE + k;
                assert_eq!(ge[i], s, "exclusive sum, tile {t} item {k}");
                assert_eq!(gr[i], mx, "exclusive max scan, tile {t} item {k}");
                s += v;
                mx = mx.max(v);
                assert_eq!(gi[i], s, "inclusive sum, tile {t} item {k}");
            }
            assert_eq!(gs[t * 2], s, "block sum, tile {t}");
            assert_eq!(gs[t * 2 + 1], s, "scan aggregate, tile {t}");
            let fm = (0..THREADS)
                .map(|th| tile[th * 4] as f32 * 0.5)
                .fold(f32::MIN, f32::max);
            assert_eq!(gf[t], fm, "block max, tile {t}");
        }
    }
}

#[test]
fn warp_reduce_and_scan_full_and_logical_warps() {
    for file in ["cub_block.ptx", "sm90/cub_block.ptx"] {
        let m = module(file);
        let blocks = 3;
        let n = blocks * THREADS;
        let mut r = Rng(55);
        let x: Vec<i32> = (0..n).map(|_| r.range(-50_000, 50_000)).collect();
        let gpu = Gpu::new();
        let dx = gpu.upload(&x);
        let (red, scan, red8, mx) = (
            gpu.zeros(n / 32 * 4),
            gpu.zeros(n * 4),
            gpu.zeros(n / 8 * 4),
            gpu.zeros(n / 32 * 4),
        );
        Launch::new(&m, "warp_reduce_scan", blocks as u32, THREADS as u32)
            .run(
                &gpu,
                &[&u64b(dx), &u64b(red), &u64b(scan), &u64b(red8), &u64b(mx)],
            )
            .unwrap();
        let (gred, gscan, g8, gmx): (Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>) = (
            gpu.download(red, n / 32),
            gpu.download(scan, n),
            gpu.download(red8, n / 8),
            gpu.download(mx, n / 32),
        );
        for w in 0..n / 32 {
            let v = &x[w * 32..(w + 1) * 32];
            assert_eq!(gred[w], v.iter().sum::<i32>(), "warp {w} sum");
            assert_eq!(gmx[w], *v.iter().max().unwrap(), "warp {w} max");
            let mut s = 0;
            for (l, &e) in v.iter().enumerate() {
                s += e;
                assert_eq!(gscan[w * 32 + l], s, "warp {w} lane {l} scan");
            }
        }
        for g in 0..n / 8 {
            assert_eq!(
                g8[g],
                x[g * 8..(g + 1) * 8].iter().sum::<i32>(),
                "group {g}"
            );
        }
    }
}

#[test]
fn decoupled_look_back_scan_across_the_grid() {
    for file in ["cub_block.ptx", "sm90/cub_block.ptx"] {
        let m = module(file);
        let tiles = 40usize;
        let n = tiles * TILE;
        let mut r = Rng(57);
        let x: Vec<i32> = (0..n).map(|_| r.range(-100, 100)).collect();
        let mut want = Vec::with_capacity(n);
        let mut s = 0i32;
        for &v in &x {
            s += v;
            want.push(s);
        }
        for threads in [1, 2, 4] {
            let gpu = Gpu::new();
            let dx = gpu.upload(&x);
            let out = gpu.zeros(n * 4);
            // ScanTileState<int>: 8-byte descriptors, 32 of padding before the tiles.
            let state = gpu.zeros((tiles + 32) * 8);
            Launch::new(&m, "lookback_init", tiles.div_ceil(128) as u32, 128)
                .run(&gpu, &[&u64b(state), &i32b(tiles as i32)])
                .unwrap();
            let mut l = Launch::new(&m, "lookback_scan", tiles as u32, THREADS as u32);
            l.threads = threads;
            l.run(&gpu, &[&u64b(dx), &u64b(out), &u64b(state)]).unwrap();
            let got: Vec<i32> = gpu.download(out, n);
            for i in 0..n {
                assert_eq!(got[i], want[i], "item {i} with {threads} workers");
            }
        }
    }
}

#[test]
fn block_histogram_and_transposing_load_store() {
    for file in ["cub_block.ptx", "sm90/cub_block.ptx"] {
        let m = module(file);
        let tiles = 3;
        let n = tiles * TILE;
        let mut r = Rng(59);
        let bytes: Vec<u8> = (0..n).map(|_| (r.next() % 256) as u8).collect();
        let v: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
        let gpu = Gpu::new();
        let (db, dv) = (gpu.upload(&bytes), gpu.upload(&v));
        let (hist, out) = (gpu.zeros(256 * 4), gpu.zeros(n * 4));
        Launch::new(&m, "block_histogram_load", tiles as u32, THREADS as u32)
            .run(&gpu, &[&u64b(db), &u64b(hist), &u64b(dv), &u64b(out)])
            .unwrap();
        let mut h = vec![0u32; 256];
        for &b in &bytes {
            h[b as usize] += 1;
        }
        assert_eq!(gpu.download::<u32>(hist, 256), h);
        let got: Vec<i32> = gpu.download(out, n);
        for i in 0..n {
            assert_eq!(got[i], v[i] * 2 + 1, "item {i}");
        }
    }
}
