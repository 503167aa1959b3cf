#!/usr/bin/env bash
# Builds the C test programs against NVIDIA's cuda.h and netgpu's libcuda.so.1 and runs them
# on this host against a CPU-executor netgpu-backend on 127.0.0.1 (libcuda's TCP transport).
# The same programs run inside a VM through the kernel module in tests/vm/test-cuda.sh.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
inc=$(scripts/fetch-cuda-headers.sh) || exit 1
target=${CARGO_TARGET_DIR:-$repo/target}
cargo build -q -p netgpu-cuda -p netgpu-backend || exit 1
work=$(mktemp -d)
backend=""
trap 'kill $backend 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/lib"
cp "$target/debug/libcuda.so" "$work/lib/libcuda.so.1"
ln -s libcuda.so.1 "$work/lib/libcuda.so"
for src in tests/cuda/*.c; do
  gcc -O1 -Wall -Werror -I"$inc" -o "$work/$(basename "$src" .c)" "$src" -L"$work/lib" -lcuda -lm \
    || { echo "cuda-host-tests: cannot build $src"; exit 1; }
done
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_backend() {
  "$target/debug/netgpu-backend" --listen "127.0.0.1:$port" --executor cpu --token-file "$work/token" --insecure-plain-loopback \
    --log warn >> "$work/backend.log" 2>&1 &
  backend=$!
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.05; done
  echo "backend did not start"; cat "$work/backend.log"; exit 1
}
start_backend
export LD_LIBRARY_PATH="$work/lib" NETGPU_BACKEND="127.0.0.1:$port" NETGPU_TOKEN_FILE="$work/token"
export NETGPU_KERNELS="$repo/tests/kernels"
passed=0; failed=0
run() {
  local name=$1; shift
  if timeout 120 "$@" > "$work/$name.out" 2>&1; then
    passed=$((passed + 1)); echo "cuda: PASS $name"
  else
    failed=$((failed + 1)); echo "cuda: FAIL $name"; sed 's/^/    /' "$work/$name.out"
  fi
}
run device_memory "$work/device_memory"
run streams_events "$work/streams_events"
run jit_link "$work/jit_link"
run launch_config "$work/launch_config"
for k in vector_add:vector_add.ptx sgemm_tiled:sgemm.ptx reduce:reduce.ptx; do
  if [ -f "tests/kernels/${k#*:}" ]; then
    run "${k%%:*}" "$work/${k%%:*}"
  else
    echo "cuda: SKIP ${k%%:*} (tests/kernels/${k#*:} not present)"
  fi
done
# The backend goes away mid-run: the program must get a CUDA error within seconds, not hang.
("$work/backend_lost" > "$work/backend_lost.out" 2>&1; echo $? > "$work/backend_lost.rc") &
prog=$!
for _ in $(seq 200); do grep -q READY "$work/backend_lost.out" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
kill -TERM "$backend"
if timeout 30 tail --pid=$prog -f /dev/null && [ "$(cat "$work/backend_lost.rc" 2>/dev/null)" = 0 ]; then
  passed=$((passed + 1)); echo "cuda: PASS backend_lost ($(grep 'first failure' "$work/backend_lost.out"))"
else
  failed=$((failed + 1)); echo "cuda: FAIL backend_lost"; sed 's/^/    /' "$work/backend_lost.out"
  kill -9 $prog 2>/dev/null
fi
echo "cuda-host-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
