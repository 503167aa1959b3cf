//! Builds test images with NVIDIA's real nvcc (provisioned by `scripts/cuda-toolchain.sh`
//! from PyPI), cached under `~/.cache/netgpu/image-tests/<hash of nvcc, flags, sources>` so
//! a second run costs nothing. NVIDIA's binaries are never committed; the sources are ours.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_root() -> PathBuf {
    let base = std::env::var_os("NETGPU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/netgpu")
        });
    base.join("image-tests")
}

/// `$NETGPU_CUDA_HOME` (nvcc's root), provisioning the toolchain if needed.
pub fn cuda_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        if let Some(h) = std::env::var_os("NETGPU_CUDA_HOME") {
            return PathBuf::from(h);
        }
        let out = Command::new(repo().join("scripts/cuda-toolchain.sh"))
            .output()
            .expect("run scripts/cuda-toolchain.sh");
        assert!(
            out.status.success(),
            "these tests build images with NVIDIA's nvcc: scripts/cuda-toolchain.sh failed \
             (it downloads the toolchain from PyPI once):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
    *h ^= 0xff;
    *h = h.wrapping_mul(0x100_0000_01b3);
}

/// Runs `nvcc <args> -o <out> <sources>` (sources from `image/tests/cuda/`) once and
/// returns the output's bytes.
pub fn nvcc(out_name: &str, args: &[&str], sources: &[&str]) -> Vec<u8> {
    let home = cuda_home();
    let nvcc = home.join("bin/nvcc");
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut h, home.to_string_lossy().as_bytes());
    fnv(&mut h, out_name.as_bytes());
    for a in args {
        fnv(&mut h, a.as_bytes());
    }
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda");
    for s in sources {
        fnv(&mut h, s.as_bytes());
        fnv(
            &mut h,
            &std::fs::read(src_dir.join(s)).expect("test source"),
        );
    }
    let dir = cache_root().join(format!("{h:016x}"));
    let out = dir.join(out_name);
    if let Ok(b) = std::fs::read(&out) {
        return b;
    }
    let tmp = cache_root().join(format!("tmp-{h:016x}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("create cache dir");
    let path = format!(
        "{}:{}",
        home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let st = Command::new(&nvcc)
        .args(args)
        .arg("-o")
        .arg(tmp.join(out_name))
        .args(sources.iter().map(|s| src_dir.join(s)))
        .current_dir(&tmp)
        .env("PATH", path)
        .output()
        .expect("run nvcc");
    assert!(
        st.status.success(),
        "nvcc {args:?} {sources:?} failed:\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::create_dir_all(dir.parent().expect("parent")).expect("cache");
    // Another test may have built it meanwhile: either copy is the same.
    let _ = std::fs::rename(&tmp, &dir);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::read(&out).expect("read nvcc output")
}
