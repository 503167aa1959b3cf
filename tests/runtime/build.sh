#!/usr/bin/env bash
# Builds the runtime test programs listed in tests/runtime/programs with NVIDIA's nvcc 13.5
# (provisioned by scripts/cuda-toolchain.sh) and prints the directory that holds them.
# Each program is cached under $NETGPU_CACHE/runtime-tests/<hash of nvcc, flags, sources>,
# so only changed programs are rebuilt (a thrust program takes ~25 s of CPU to compile).
#
#   tests/runtime/build.sh [NAME...]     builds all (or the named) programs
#   NETGPU_RUNTIME_ARCH="-gencode ..."   code generation flags added to every program (default:
#                                        nvcc's own, sm_75 SASS + PTX); scripts/gpu-suite.sh
#                                        builds the real-GPU bundle's programs with them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
eval "$("$repo/scripts/cuda-toolchain.sh" --env)"
nvcc=$NETGPU_CUDA_HOME/bin/nvcc
cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}/runtime-tests
arch=${NETGPU_RUNTIME_ARCH:-}
out=$cache/bin
[ -z "$arch" ] || out=$cache/bin-$(echo "$arch" | sha256sum | cut -c1-12)
mkdir -p "$cache" "$out"
nvcc_id=$("$nvcc" --version | tail -1)
want=("$@")
while read -r name sources flags; do
  case $name in ''|'#'*) continue ;; esac
  if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$name"; then continue; fi
  IFS=, read -ra srcs <<< "$sources"
  key=$( { echo "v2|$nvcc_id|$flags${arch:+|$arch}|$name"; cd "$here" && cat common.h "${srcs[@]}"; } | sha256sum | cut -c1-16)
  dest=$cache/$key/$name
  if [ ! -x "$dest" ]; then
    read -ra args <<< "$flags"
    read -ra arch_args <<< "$arch"
    link=()
    if [ "${args[0]:-}" = @cudart12 ]; then
      args=("${args[@]:1}")
      link=(-cudart none -L"$NETGPU_CUDART12" -l:libcudart.so.12)
    fi
    tmp=$cache/tmp-$key-$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    echo "runtime-build: $name (nvcc ${flags:-default}${arch:+ $arch})" >&2
    # From the source folder with relative names, so __FILE__ in messages is "basics.cu".
    if ! (cd "$here" && "$nvcc" -O1 "${arch_args[@]}" "${args[@]}" -o "$tmp/$name" "${srcs[@]}" "${link[@]}") >&2; then
      rm -rf "$tmp"
      echo "runtime-build: nvcc failed for $name" >&2
      exit 1
    fi
    rm -rf "$cache/$key"
    mv "$tmp" "$cache/$key"
  fi
  ln -sfn "$dest" "$out/$name"
done < "$here/programs"
echo "$out"
