//! Whole programs' PTX: a thrust program (sort, scan, reduce of int and float through
//! device_vector), a CUB device-algorithm program and a cooperative-groups program load
//! whole, every kernel; CUB's single-tile reduce and radix sort kernels run as the library
//! launches them.

use netgpu_ptx::Module;

use crate::util::*;

fn entries(text: &str) -> Vec<String> {
    text.split(".entry ")
        .skip(1)
        .filter_map(|s| s.split('(').next())
        .map(|s| s.trim().to_string())
        .collect()
}

fn kernel_like<'m>(m: &'m Module, parts: &[&str]) -> &'m str {
    let mut names: Vec<&str> = m
        .kernel_names()
        .filter(|n| parts.iter().all(|p| n.contains(p)))
        .collect();
    names.sort();
    names
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no kernel with {parts:?}"))
}

#[test]
fn every_kernel_of_thrust_cub_and_cooperative_groups_programs_loads() {
    for (file, count) in [
        ("thrust_algos.ptx", 41),
        ("cub_device.ptx", 22),
        ("coop_groups.ptx", 3),
    ] {
        let text = ptx(file);
        let m = Module::load(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut want = entries(&text);
        want.sort();
        let mut got: Vec<&str> = m.kernel_names().collect();
        got.sort();
        assert_eq!(got.len(), count, "{file}");
        assert_eq!(got, want, "{file}");
        for k in &got {
            let a = m.kernel(k).unwrap().attributes();
            assert!(a.max_threads_per_block <= 1024 && a.ptx_version >= 90 && a.target == 75);
        }
    }
}

#[test]
fn cub_single_tile_reduce_as_device_reduce_runs_it() {
    let m = module("cub_device.ptx");
    let name = kernel_like(&m, &["DeviceReduceSingleTileKernel", "plus"]);
    let block = m.kernel(name).unwrap().attributes().max_threads_per_block;
    let n = 10_000usize;
    let mut r = Rng(71);
    let x: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
    let gpu = Gpu::new();
    let dx = gpu.upload(&x);
    let out = gpu.zeros(4);
    Launch::new(&m, name, 1, block)
        .run(
            &gpu,
            &[&u64b(dx), &u64b(out), &i32b(n as i32), &[0], &i32b(7), &[0]],
        )
        .unwrap();
    assert_eq!(gpu.download::<i32>(out, 1)[0], 7 + x.iter().sum::<i32>());

    let name = kernel_like(&m, &["DeviceReduceSingleTileKernel", "maximum"]);
    Launch::new(&m, name, 1, block)
        .run(
            &gpu,
            &[
                &u64b(dx),
                &u64b(out),
                &i32b(n as i32),
                &[0],
                &i32b(i32::MIN),
                &[0],
            ],
        )
        .unwrap();
    assert_eq!(gpu.download::<i32>(out, 1)[0], *x.iter().max().unwrap());
}

#[test]
fn thrust_reduce_to_long_long_and_float() {
    let m = module("thrust_algos.ptx");
    let n = 5000usize;
    let mut r = Rng(73);
    let x: Vec<i32> = (0..n).map(|_| r.range(-5000, 5000)).collect();
    let gpu = Gpu::new();
    let dx = gpu.upload(&x);
    let out = gpu.zeros(8);
    let name = kernel_like(
        &m,
        &[
            "DeviceReduceSingleTileKernel",
            "IxjN4cuda3std3__44plusIxEE",
            "normal_iterator",
        ],
    );
    let block = m.kernel(name).unwrap().attributes().max_threads_per_block;
    Launch::new(&m, name, 1, block)
        .run(
            &gpu,
            &[&u64b(dx), &u64b(out), &i32b(n as i32), &[0], &u64b(0), &[0]],
        )
        .unwrap();
    let want: i64 = x.iter().map(|&v| i64::from(v)).sum();
    assert_eq!(gpu.download::<i64>(out, 1)[0], want);

    let f: Vec<f32> = (0..n).map(|i| (i % 100) as f32 * 0.25).collect();
    let df = gpu.upload(&f);
    let name = kernel_like(
        &m,
        &[
            "DeviceReduceSingleTileKernel",
            "IfjN4cuda3std3__44plusIfEE",
            "normal_iterator",
        ],
    );
    Launch::new(&m, name, 1, block)
        .run(
            &gpu,
            &[
                &u64b(df),
                &u64b(out),
                &i32b(n as i32),
                &[0],
                &1.5f32.to_le_bytes(),
                &[0],
            ],
        )
        .unwrap();
    // Quarter-integers sum exactly in any order.
    assert_eq!(gpu.download::<f32>(out, 1)[0], 1.5 + f.iter().sum::<f32>());
}

#[test]
fn cub_single_tile_radix_sort_of_pairs_and_keys() {
    let m = module("cub_device.ptx");
    let pairs = kernel_like(&m, &["DeviceRadixSortSingleTileKernel", "IjijEE"]);
    let block = m.kernel(pairs).unwrap().attributes().max_threads_per_block;
    let n = 1500usize;
    let mut r = Rng(75);
    let keys: Vec<u32> = (0..n).map(|_| r.next() % 100_000).collect();
    let vals: Vec<i32> = (0..n as i32).collect();
    let gpu = Gpu::new();
    let (dk, dv) = (gpu.upload(&keys), gpu.upload(&vals));
    let (ok, ov) = (gpu.zeros(n * 4), gpu.zeros(n * 4));
    Launch::new(&m, pairs, 1, block)
        .run(
            &gpu,
            &[
                &u64b(dk),
                &u64b(ok),
                &u64b(dv),
                &u64b(ov),
                &i32b(n as i32),
                &i32b(0),
                &i32b(32),
                &[0],
            ],
        )
        .unwrap();
    let mut want: Vec<(u32, i32)> = keys.iter().copied().zip(vals.iter().copied()).collect();
    want.sort_by_key(|p| p.0);
    let got: Vec<(u32, i32)> = gpu
        .download::<u32>(ok, n)
        .into_iter()
        .zip(gpu.download::<i32>(ov, n))
        .collect();
    assert_eq!(got, want);

    let only = kernel_like(&m, &["DeviceRadixSortSingleTileKernel", "NullType"]);
    let ok2 = gpu.zeros(n * 4);
    Launch::new(&m, only, 1, block)
        .run(
            &gpu,
            &[
                &u64b(dk),
                &u64b(ok2),
                &u64b(0),
                &u64b(0),
                &i32b(n as i32),
                &i32b(0),
                &i32b(32),
                &[0],
            ],
        )
        .unwrap();
    let mut k = keys.clone();
    k.sort();
    assert_eq!(gpu.download::<u32>(ok2, n), k);
}

/// CUB's own DeviceScan kernels as `DeviceScan::InclusiveSum`/`ExclusiveSum` launch them:
/// the tile-state init kernel, then one block per tile with decoupled look-back between
/// blocks. sm_75's scan policy for 4-byte items takes 15 items per thread.
#[test]
fn cub_device_scan_with_decoupled_look_back() {
    let m = module("cub_device.ptx");
    let init = kernel_like(&m, &["DeviceScanInitKernel"]);
    let inclusive = kernel_like(&m, &["DeviceScanKernel", "NullType"]);
    let exclusive = kernel_like(&m, &["DeviceScanKernel", "InputValue"]);
    let block = m
        .kernel(inclusive)
        .unwrap()
        .attributes()
        .max_threads_per_block;
    let tile = block as usize * 15;
    let n = 40_000usize;
    let mut r = Rng(77);
    let x: Vec<i32> = (0..n).map(|_| r.range(-1000, 1000)).collect();
    let tiles = n.div_ceil(tile) as u32;
    for (kernel, workers) in [(inclusive, 1), (inclusive, 3), (exclusive, 2)] {
        let gpu = Gpu::new();
        let dx = gpu.upload(&x);
        let out = gpu.zeros(n * 4);
        // ScanTileState<int>: a pointer to 8-byte descriptors, 32 of padding first.
        let state = gpu.zeros((tiles as usize + 32) * 8);
        let mut ts = u64b(state).to_vec();
        ts.extend_from_slice(&[0; 8]);
        Launch::new(&m, init, tiles.div_ceil(128), 128)
            .run(&gpu, &[&ts, &i32b(tiles as i32)])
            .unwrap();
        let mut l = Launch::new(&m, kernel, tiles, block);
        l.threads = workers;
        let seed = 11i32;
        if kernel == inclusive {
            l.run(
                &gpu,
                &[
                    &u64b(dx),
                    &u64b(out),
                    &ts,
                    &i32b(0),
                    &[0],
                    &[0],
                    &i32b(n as i32),
                    &i32b(0),
                ],
            )
            .unwrap();
        } else {
            // InputValue<int>: not a future value, then the value at offset 8.
            let mut iv = vec![0u8; 16];
            iv[8..12].copy_from_slice(&seed.to_le_bytes());
            l.run(
                &gpu,
                &[
                    &u64b(dx),
                    &u64b(out),
                    &ts,
                    &i32b(0),
                    &[0],
                    &iv,
                    &i32b(n as i32),
                    &i32b(0),
                ],
            )
            .unwrap();
        }
        let got: Vec<i32> = gpu.download(out, n);
        let mut s = if kernel == inclusive { 0 } else { seed };
        for i in 0..n {
            if kernel == inclusive {
                s += x[i];
                assert_eq!(got[i], s, "inclusive item {i}, {workers} workers");
            } else {
                assert_eq!(got[i], s, "exclusive item {i}");
                s += x[i];
            }
        }
    }
}

/// thrust::device_vector's construction: cub::detail::for_each::static_kernel running
/// thrust's uninitialized_fill functor {device_ptr, value} over n items (2 per thread).
#[test]
fn thrust_uninitialized_fill_as_device_vector_runs_it() {
    let m = module("thrust_algos.ptx");
    for (ty, value) in [
        ("device_ptrIiEE", 77i32.to_le_bytes()),
        ("device_ptrIfEE", 2.5f32.to_le_bytes()),
    ] {
        let k = kernel_like(&m, &["__uninitialized_fill", ty]);
        let block = m.kernel(k).unwrap().attributes().max_threads_per_block;
        let n = 10_001usize;
        let gpu = Gpu::new();
        let d = gpu.zeros(n * 4 + 8);
        let mut functor = u64b(d).to_vec();
        functor.extend_from_slice(&value);
        functor.extend_from_slice(&[0; 4]);
        Launch::new(&m, k, (n as u32).div_ceil(block * 2), block)
            .run(&gpu, &[&u64b(n as u64), &functor])
            .unwrap();
        let got: Vec<[u8; 4]> = gpu.download(d, n + 2);
        assert!(got[..n].iter().all(|v| *v == value), "{ty}");
        assert_eq!(got[n], [0; 4], "{ty}: wrote past the end");
    }
}
