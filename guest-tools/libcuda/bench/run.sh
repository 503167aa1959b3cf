#!/usr/bin/env bash
# The CUDA runtime against the driver API on netgpu (issue 8.7): builds libcuda.so.1 and a
# CPU-executor backend (release), builds runtime_vs_driver.cu with the provisioned nvcc
# (scripts/cuda-toolchain.sh), runs it over TCP on 127.0.0.1 and prints the ratios.
#   guest-tools/libcuda/bench/run.sh [launches] [copies]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$repo"
eval "$(scripts/cuda-toolchain.sh --env)"
target=${CARGO_TARGET_DIR:-$repo/target}
cargo build -q --release -p netgpu-cuda -p netgpu-backend
work=$(mktemp -d)
backend=""
trap 'kill $backend 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/lib"
cp "$target/release/libcuda.so" "$work/lib/libcuda.so.1"
ln -s libcuda.so.1 "$work/lib/libcuda.so"
nvcc -O2 -o "$work/runtime_vs_driver" guest-tools/libcuda/bench/runtime_vs_driver.cu \
  -L"$work/lib" -lcuda -ldl
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$target/release/netgpu-backend" --listen "127.0.0.1:$port" --executor cpu \
  --token-file "$work/token" --log warn > "$work/backend.log" 2>&1 &
backend=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
echo "runtime_vs_driver: $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
LD_LIBRARY_PATH="$work/lib" NETGPU_BACKEND="127.0.0.1:$port" NETGPU_TOKEN_FILE="$work/token" \
  "$work/runtime_vs_driver" "${1:-100000}" "${2:-2000}"
