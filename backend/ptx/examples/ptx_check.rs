//! Loads PTX files and reports whether each loads, its kernels and how long loading took:
//! `cargo run -p netgpu-ptx --example ptx_check -- FILE.ptx...`.
fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                println!("{path}: {e}");
                continue;
            }
        };
        let t = std::time::Instant::now();
        let r = netgpu_ptx::Module::load(&text);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(m) => println!(
                "{path}: ok, {} kernels, {} instructions, {ms:.1} ms",
                m.kernel_names().count(),
                m.kernel_names()
                    .filter_map(|k| m.kernel(k))
                    .map(|k| k.code.len())
                    .sum::<usize>()
            ),
            Err(e) => println!("{path}: {e} ({:?})", e.kind),
        }
    }
}
