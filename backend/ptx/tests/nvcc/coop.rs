//! coop_groups.cu: cooperative groups' tile reductions and votes, and grid.sync() under a
//! cooperative launch (refused when the grid cannot be resident).

use netgpu_ptx::{max_cooperative_blocks, LaunchError};

use crate::util::*;

#[test]
fn thread_block_tile_reductions() {
    for file in ["coop_groups.ptx", "sm90/coop_groups.ptx"] {
        let m = module(file);
        let (blocks, threads) = (3usize, 256usize);
        let n = blocks * threads - 17;
        let mut r = Rng(61);
        let x: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
        let gpu = Gpu::new();
        let dx = gpu.upload(&x);
        let total = blocks * threads;
        let (t32, t16, bo) = (
            gpu.zeros(total / 32 * 4),
            gpu.zeros(total / 16 * 4),
            gpu.zeros(blocks * 4),
        );
        Launch::new(&m, "tile_reduce", blocks as u32, threads as u32)
            .run(
                &gpu,
                &[
                    &u64b(dx),
                    &u64b(t32),
                    &u64b(t16),
                    &u64b(bo),
                    &i32b(n as i32),
                ],
            )
            .unwrap();
        let v = |i: usize| if i < n { x[i] } else { 0 };
        let sum = |a: usize, b: usize| (a..b).map(v).sum::<i32>();
        let g32: Vec<i32> = gpu.download(t32, total / 32);
        let g16: Vec<i32> = gpu.download(t16, total / 16);
        let gb: Vec<i32> = gpu.download(bo, blocks);
        for t in 0..total / 32 {
            assert_eq!(g32[t], sum(t * 32, t * 32 + 32), "tile32 {t}");
        }
        for t in 0..total / 16 {
            assert_eq!(g16[t], sum(t * 16, t * 16 + 16), "tile16 {t}");
        }
        for b in 0..blocks {
            assert_eq!(gb[b], sum(b * threads, (b + 1) * threads), "block {b}");
        }
    }
}

#[test]
fn tile_votes() {
    for file in ["coop_groups.ptx", "sm90/coop_groups.ptx"] {
        let m = module(file);
        let (blocks, threads) = (2usize, 128usize);
        let n = blocks * threads;
        let mut r = Rng(63);
        let mut x: Vec<i32> = (0..n).map(|_| r.range(-99, 99)).collect();
        x[40] = 500;
        x[100] = -200;
        let gpu = Gpu::new();
        let dx = gpu.upload(&x);
        let (ballots, flags) = (gpu.zeros(n / 32 * 4), gpu.zeros(n / 32 * 4));
        Launch::new(&m, "tile_votes", blocks as u32, threads as u32)
            .run(&gpu, &[&u64b(dx), &u64b(ballots), &u64b(flags)])
            .unwrap();
        let gb: Vec<u32> = gpu.download(ballots, n / 32);
        let gf: Vec<i32> = gpu.download(flags, n / 32);
        for w in 0..n / 32 {
            let v = &x[w * 32..(w + 1) * 32];
            let b = (0..32).fold(0u32, |m, l| if v[l] > 0 { m | 1 << l } else { m });
            assert_eq!(gb[w], b, "ballot of tile {w}");
            let any = v.iter().any(|&e| e > 100);
            let all = v.iter().all(|&e| e > -100);
            assert_eq!(
                gf[w],
                i32::from(any) | i32::from(all) << 1,
                "any/all of tile {w}"
            );
        }
    }
}

#[test]
fn grid_sync_under_a_cooperative_launch() {
    for file in ["coop_groups.ptx", "sm90/coop_groups.ptx"] {
        let m = module(file);
        let k = m.kernel("grid_sum").unwrap();
        let n = 4096usize;
        let mut r = Rng(65);
        let x: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
        let want: i32 = x.iter().sum();
        for (blocks, threads, workers) in [(4usize, 256usize, 1usize), (6, 128, 2), (16, 64, 3)] {
            let gpu = Gpu::new();
            let dx = gpu.upload(&x);
            let partials = gpu.zeros(blocks * 4);
            let total = gpu.zeros(4);
            let out = gpu.zeros(blocks * threads * 4);
            let mut l = Launch::new(&m, "grid_sum", blocks as u32, threads as u32);
            l.threads = workers;
            l.opts.cooperative = true;
            l.opts.sm_count = 2;
            assert!(max_cooperative_blocks(k, l.block, 0, 2) >= blocks as u64);
            l.run(
                &gpu,
                &[
                    &u64b(dx),
                    &u64b(partials),
                    &u64b(total),
                    &u64b(out),
                    &i32b(n as i32),
                ],
            )
            .unwrap();
            let got: Vec<i32> = gpu.download(out, blocks * threads);
            assert!(
                got.iter().all(|&g| g == want),
                "{blocks}x{threads}: {:?}",
                &got[..4]
            );
        }
    }
}

#[test]
fn grid_sync_needs_a_cooperative_launch_that_fits() {
    for file in ["coop_groups.ptx", "sm90/coop_groups.ptx"] {
        let m = module(file);
        let k = m.kernel("grid_sum").unwrap();
        let gpu = Gpu::new();
        let dx = gpu.zeros(4096 * 4);
        let p = gpu.zeros(64 * 4);
        let t = gpu.zeros(4);
        let o = gpu.zeros(64 * 256 * 4);
        let args = [u64b(dx), u64b(p), u64b(t), u64b(o)];
        let n = i32b(4096);
        let a: Vec<&[u8]> = args.iter().map(|a| &a[..]).chain([&n[..]]).collect();
        // Without a cooperative launch the grid workspace is missing: cooperative groups traps.
        let e = Launch::new(&m, "grid_sum", 4, 256)
            .run(&gpu, &a)
            .unwrap_err();
        assert!(matches!(e, LaunchError::Trap { .. }), "{e:?}");
        // 256 threads with 4 KiB of shared memory: 8 blocks per SM, 16 on two SMs.
        assert_eq!(max_cooperative_blocks(k, [256, 1, 1], 0, 2), 16);
        let mut l = Launch::new(&m, "grid_sum", 17, 256);
        l.opts.cooperative = true;
        l.opts.sm_count = 2;
        let e = l.run(&gpu, &a).unwrap_err();
        assert_eq!(
            e,
            LaunchError::CooperativeTooLarge {
                blocks: 17,
                max: 16
            }
        );
        assert_eq!(e.cuda_error(), 720);
    }
}
