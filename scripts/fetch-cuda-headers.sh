#!/usr/bin/env bash
# Fetches NVIDIA's cuda.h (from the PyPI wheel nvidia-cuda-runtime-cu12) into
# $NETGPU_CACHE/cuda (default ~/.cache/netgpu/cuda) and prints the include directory.
# NVIDIA's licence does not allow committing it, so tests fetch it on first use.
set -euo pipefail
cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}/cuda
inc=$cache/wheel/nvidia/cuda_runtime/include
if [ ! -f "$inc/cuda.h" ]; then
  mkdir -p "$cache"
  echo "fetching cuda.h (nvidia-cuda-runtime-cu12 wheel, ~3.5 MB)" >&2
  python3 -m pip download --no-deps -q -d "$cache" "nvidia-cuda-runtime-cu12==12.9.*" >&2 \
    || { echo "cannot download nvidia-cuda-runtime-cu12 from PyPI" >&2; exit 1; }
  python3 - "$cache" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
whl = sorted(glob.glob(cache + "/nvidia_cuda_runtime_cu12-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("nvidia/cuda_runtime/include/"):
            z.extract(n, cache + "/wheel")
PY
fi
echo "$inc"
