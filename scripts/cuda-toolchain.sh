#!/usr/bin/env bash
# Provisions NVIDIA's CUDA toolchain for the tests, with no GPU and no CUDA install: nvcc 13.5
# (cudafe++, cicc, ptxas, fatbinary, nvlink), the CUDA 13.5 runtime (libcudart.so.13 and
# libcudart_static.a), CCCL (thrust/CUB) and the CUDA 12.9 runtime (libcudart.so.12), all from
# NVIDIA's PyPI wheels at pinned versions. NVIDIA's licence forbids committing them, so they are
# downloaded once into $NETGPU_CACHE/cuda-toolchain (default ~/.cache/netgpu/cuda-toolchain);
# nothing is fetched from anywhere but PyPI.
#
#   scripts/cuda-toolchain.sh          provisions (if needed) and prints the toolchain root
#   scripts/cuda-toolchain.sh --env    prints shell assignments: NETGPU_CUDA_HOME (nvcc, cudart 13),
#                                      NETGPU_CUDART12 (the directory of libcudart.so.12) and PATH
#
# Then `$NETGPU_CUDA_HOME/bin/nvcc -o x x.cu` builds with Debian 12's gcc 12.
set -euo pipefail

CUDA_VERSION=13.5.37
CCCL_VERSION=13.3.5.0.6
CUDART12_VERSION=12.9.79
WHEELS=(
  "nvidia-cuda-nvcc==$CUDA_VERSION"
  "nvidia-nvvm==$CUDA_VERSION"
  "nvidia-cuda-runtime==$CUDA_VERSION"
  "nvidia-cuda-crt==$CUDA_VERSION"
  "nvidia-cuda-cccl==$CCCL_VERSION"
  "nvidia-cuda-runtime-cu12==$CUDART12_VERSION"
)

cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}/cuda-toolchain
root=$cache/$CUDA_VERSION
home=$root/nvidia/cu13
cudart12=$root/nvidia/cuda_runtime/lib

if [ ! -f "$root/.done" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -f "$root/.done" ]; then
    echo "cuda-toolchain: downloading nvcc $CUDA_VERSION, cudart $CUDA_VERSION and $CUDART12_VERSION, CCCL $CCCL_VERSION from PyPI (~130 MB, once)" >&2
    mkdir -p "$cache/wheels"
    python3 -m pip download --no-deps -q -d "$cache/wheels" "${WHEELS[@]}" >&2 \
      || { echo "cuda-toolchain: cannot download the NVIDIA wheels from PyPI (pip download ${WHEELS[*]})" >&2; exit 1; }
    rm -rf "$root.tmp"
    mkdir -p "$root.tmp"
    python3 - "$cache/wheels" "$root.tmp" "$CUDA_VERSION" "$CCCL_VERSION" "$CUDART12_VERSION" <<'PY'
import glob, os, sys, zipfile
wheels, out, cuda, cccl, rt12 = sys.argv[1:]
want = [f"nvidia_cuda_nvcc-{cuda}-", f"nvidia_nvvm-{cuda}-", f"nvidia_cuda_runtime-{cuda}-",
        f"nvidia_cuda_crt-{cuda}-", f"nvidia_cuda_cccl-{cccl}-", f"nvidia_cuda_runtime_cu12-{rt12}-"]
for prefix in want:
    found = sorted(glob.glob(os.path.join(wheels, prefix + "*.whl")))
    if not found:
        sys.exit(f"cuda-toolchain: wheel {prefix}* missing after download")
    with zipfile.ZipFile(found[-1]) as z:
        for n in z.namelist():
            if n.startswith("nvidia/"):
                z.extract(n, out)
PY
    chmod +x "$root.tmp"/nvidia/cu13/bin/* "$root.tmp"/nvidia/cu13/nvvm/bin/*
    # Missing in the wheels: the unversioned names the linker looks for (`-cudart shared`).
    ln -sf libcudart.so.13 "$root.tmp/nvidia/cu13/lib/libcudart.so"
    ln -sf libcudart.so.12 "$root.tmp/nvidia/cuda_runtime/lib/libcudart.so"
    rm -rf "$root"
    mv "$root.tmp" "$root"
    touch "$root/.done"
  fi
fi

if [ "${1:-}" = --env ]; then
  printf 'NETGPU_CUDA_HOME=%q\nNETGPU_CUDART12=%q\nPATH=%q\n' "$home" "$cudart12" "$home/bin:$PATH"
else
  echo "$home"
fi
