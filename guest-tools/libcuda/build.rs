//! Gives the shared library the soname programs look for (`libcuda.so.1`).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
}
