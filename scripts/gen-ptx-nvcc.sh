#!/usr/bin/env bash
# Compiles tests/kernels/nvcc/*.cu to PTX with NVIDIA's nvcc 13.5 (scripts/cuda-toolchain.sh
# provisions it from PyPI; no GPU needed), as nvcc's default build embeds it: compute_75.
# sm80.cu is compiled for compute_80 (redux.sync, native bf16); link_*.cu as separately
# compiled device code (-rdc=true), to be linked; the fixtures listed in SM90 also for
# compute_90 into sm90/ (what nvcc emits for Hopper: native bf16 atomics, griddepcontrol). The generated .ptx files are committed so
# the tests never need nvcc; NVIDIA's binaries are not.
#
#   scripts/gen-ptx-nvcc.sh [FILE.cu ...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$("$repo/scripts/cuda-toolchain.sh" --env)"
nvcc=$NETGPU_CUDA_HOME/bin/nvcc
SM90=(atomics calls convert coop_groups cub_block half printf warp)
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
  name=$(basename "$f" .cu)
  if [[ " ${SM90[*]} " == *" $name "* ]]; then
    mkdir -p "$repo/tests/kernels/nvcc/sm90"
    out90=$repo/tests/kernels/nvcc/sm90/$name.ptx
    (cd "$repo" && "$nvcc" -ptx -arch=compute_90 -std=c++17 -o "$out90" "${f#"$repo"/}")
    echo "${out90#"$repo"/}: $(wc -c <"$out90") bytes (compute_90)"
  fi
done
