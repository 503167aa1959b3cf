#!/usr/bin/env bash
# Compiles tests/kernels/nvcc/*.cu to PTX with NVIDIA's nvcc 13.5 (scripts/cuda-toolchain.sh
# provisions it from PyPI; no GPU needed), as nvcc's default build embeds it: compute_75.
# sm80.cu is compiled for compute_80 (redux.sync, native bf16); link_*.cu as separately
# compiled device code (-rdc=true), to be linked. The generated .ptx files are committed so
# the tests never need nvcc; NVIDIA's binaries are not.
#
#   scripts/gen-ptx-nvcc.sh [FILE.cu ...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$("$repo/scripts/cuda-toolchain.sh" --env)"
nvcc=$NETGPU_CUDA_HOME/bin/nvcc
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("$repo"/tests/kernels/nvcc/*.cu)
for f in "${files[@]}"; do
  arch=compute_75
  extra=()
  case $(basename "$f") in
    sm80.cu) arch=compute_80 ;;
    link_*.cu) extra=(-rdc=true) ;;
  esac
  f=$(realpath "$f")
  out=${f%.cu}.ptx
  # From the repository root, so file names in the PTX (assert messages) are relative.
  (cd "$repo" && "$nvcc" -ptx -arch="$arch" -std=c++17 "${extra[@]}" -o "$out" "${f#"$repo"/}")
  echo "${out#"$repo"/}: $(wc -c <"$out") bytes ($arch)"
done
