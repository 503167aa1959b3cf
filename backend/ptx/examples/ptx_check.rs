//! Loads PTX files and reports whether each loads, and its kernels: `cargo run -p netgpu-ptx
//! --example ptx_check -- FILE.ptx...`.
fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                println!("{path}: {e}");
                continue;
            }
        };
        match netgpu_ptx::Module::load(&text) {
            Ok(m) => println!("{path}: ok, {} kernels", m.kernel_names().count()),
            Err(e) => println!("{path}: {e} ({:?})", e.kind),
        }
    }
}
