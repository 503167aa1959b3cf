#!/usr/bin/env python3
"""Compiles tests/kernels/*.cu to PTX with NVIDIA's nvrtc, which needs no GPU.

libnvrtc comes from the PyPI wheel nvidia-cuda-nvrtc-cu12, downloaded into
$NETGPU_CACHE/nvrtc (default ~/.cache/netgpu/nvrtc); its licence does not allow committing it.
The generated .ptx files are committed, so tests never need nvrtc.

    scripts/gen-ptx.py [--arch compute_80] [FILE.cu ...]
"""
import argparse
import ctypes
import glob
import os
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.environ.get("NETGPU_CACHE", os.path.expanduser("~/.cache/netgpu")), "nvrtc")


def libnvrtc():
    found = glob.glob(os.path.join(CACHE, "lib", "libnvrtc.so*"))
    if not found:
        os.makedirs(CACHE, exist_ok=True)
        wheels = glob.glob(os.path.join(CACHE, "nvidia_cuda_nvrtc_cu12-*.whl"))
        if not wheels:
            print("downloading nvidia-cuda-nvrtc-cu12 (~90 MB, once)", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", CACHE,
                            "nvidia-cuda-nvrtc-cu12==12.9.*"], check=True)
            wheels = glob.glob(os.path.join(CACHE, "nvidia_cuda_nvrtc_cu12-*.whl"))
        os.makedirs(os.path.join(CACHE, "lib"), exist_ok=True)
        with zipfile.ZipFile(sorted(wheels)[-1]) as z:
            for name in z.namelist():
                if "/lib/libnvrtc" in name:
                    with open(os.path.join(CACHE, "lib", os.path.basename(name)), "wb") as f:
                        f.write(z.read(name))
        found = glob.glob(os.path.join(CACHE, "lib", "libnvrtc.so*"))
    # Load the builtins library first so libnvrtc finds it.
    for b in glob.glob(os.path.join(CACHE, "lib", "libnvrtc-builtins.so*")):
        ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
    main = [f for f in found if "builtins" not in f]
    return ctypes.CDLL(sorted(main)[0])


def compile_cu(nvrtc, path, arch):
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    check(nvrtc, nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 0, None, None))
    opts = [f"--gpu-architecture={arch}".encode(), b"-default-device", b"-std=c++17"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        sys.exit(f"{path}: nvrtc failed:\n{log.value.decode()}")
    check(nvrtc, nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size)))
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx))
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def check(nvrtc, rc):
    if rc != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        sys.exit(f"nvrtc error {rc}: {nvrtc.nvrtcGetErrorString(rc).decode()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="compute_80")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    files = args.files or sorted(glob.glob(os.path.join(REPO, "tests", "kernels", "*.cu")))
    nvrtc = libnvrtc()
    for f in files:
        out = os.path.splitext(f)[0] + ".ptx"
        ptx = compile_cu(nvrtc, f, args.arch)
        with open(out, "w") as o:
            o.write(ptx)
        print(f"{os.path.relpath(out, REPO)}: {len(ptx)} bytes")


if __name__ == "__main__":
    main()
