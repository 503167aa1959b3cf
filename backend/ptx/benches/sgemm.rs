//! PTX interpreter throughput: thread-instructions per second, and a 512x512 sgemm (the
//! nvrtc-compiled naive and tiled kernels) against a plain Rust triple loop in the same run.
//!
//! `cargo bench -p netgpu-ptx --bench sgemm` (add `-- --quick` for 256x256).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use netgpu_ptx::{launch_counted, HostMemory, LaunchConfig, Module};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 256 } else { 512 };
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    let ptx = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/kernels/sgemm.ptx"
    ))
    .unwrap();
    let m = Module::load(&ptx).unwrap();
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32 * 0.25).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();

    // The native baseline: the same algorithm as sgemm_naive, one thread per core's worth of
    // rows would be fairer still, so report both a single-thread and an all-core figure.
    let t = Instant::now();
    let mut c = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            let mut s = 0f32;
            for k in 0..n {
                s += a[i * n + k] * b[k * n + j];
            }
            c[i * n + j] = s;
        }
    }
    let native1 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rows_per = n.div_ceil(threads);
    let mut c2 = vec![0f32; n * n];
    std::thread::scope(|s| {
        for (ci, chunk) in c2.chunks_mut(rows_per * n).enumerate() {
            let (a, b) = (&a, &b);
            s.spawn(move || {
                for (r, row) in chunk.chunks_mut(n).enumerate() {
                    let i = ci * rows_per + r;
                    for (j, out) in row.iter_mut().enumerate() {
                        let mut acc = 0f32;
                        for k in 0..n {
                            acc += a[i * n + k] * b[k * n + j];
                        }
                        *out = acc;
                    }
                }
            });
        }
    });
    let native_all = t.elapsed().as_secs_f64();
    assert_eq!(c, c2);

    println!("PTX interpreter, {n}x{n} sgemm, {threads} worker threads");
    println!("{:<28} {:>10.3} s", "native loop, 1 thread", native1);
    println!(
        "{:<28} {:>10.3} s",
        format!("native loop, {threads} threads"),
        native_all
    );
    for kernel in ["sgemm_naive", "sgemm_tiled"] {
        let mem = HostMemory::new();
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (da, db, dc) = (
            mem.alloc(n * n * 4),
            mem.alloc(n * n * 4),
            mem.alloc(n * n * 4),
        );
        mem.write(da, &bytes(&a));
        mem.write(db, &bytes(&b));
        let k = m.kernel(kernel).unwrap();
        let mut params = vec![0u8; 36];
        params[0..8].copy_from_slice(&da.to_le_bytes());
        params[8..16].copy_from_slice(&db.to_le_bytes());
        params[16..24].copy_from_slice(&dc.to_le_bytes());
        for (i, v) in [n, n, n].iter().enumerate() {
            params[24 + 4 * i..28 + 4 * i].copy_from_slice(&(*v as i32).to_le_bytes());
        }
        let cfg = LaunchConfig {
            grid: [(n / 16) as u32, (n / 16) as u32, 1],
            block: [16, 16, 1],
            shared_mem_bytes: 0,
            threads,
        };
        let t = Instant::now();
        let insts = launch_counted(&m, k, &cfg, &params, &[], &mem).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let out: Vec<f32> = mem
            .read(dc, n * n * 4)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let worst = out
            .iter()
            .zip(&c)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{kernel} result wrong: relative error {worst}"
        );
        println!(
            "{:<28} {:>10.3} s  {:>6.1}x native ({:.1}x all-core)  {:.0} M thread-inst/s",
            kernel,
            secs,
            secs / native1,
            secs / native_all,
            insts as f64 / secs / 1e6
        );
    }
    println!("(goal: <= 10x the native loop)");
}
