#!/usr/bin/env bash
# Runs netgpu's CUDA runtime test programs (tests/runtime/programs, built by build.sh with
# NVIDIA's nvcc, cached) on this host through netgpu's libcuda.so.1 over TCP against a
# CPU-executor netgpu-backend on 127.0.0.1. Prints PASS/FAIL per program with the reason;
# exits non-zero only when a program listed in tests/runtime/expected-pass fails (the others
# are reported as known failures), or when the programs cannot be built.
#
#   tests/runtime/run.sh [NAME...]
# The same programs run inside a VM through the kernel module in tests/vm/test-runtime.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
bin=$("$here/build.sh" "$@") || { echo "runtime-tests: cannot build the programs"; exit 1; }
eval "$(scripts/cuda-toolchain.sh --env)"
target=${CARGO_TARGET_DIR:-$repo/target}
cargo build -q -p netgpu-cuda -p netgpu-backend || exit 1
work=$(mktemp -d)
backend=""
trap 'kill $backend 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/lib"
cp "$target/debug/libcuda.so" "$work/lib/libcuda.so.1"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$target/debug/netgpu-backend" --listen "127.0.0.1:$port" --executor cpu --token-file "$work/token" --insecure-plain-loopback \
  --log warn > "$work/backend.log" 2>&1 &
backend=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
export LD_LIBRARY_PATH="$work/lib:$NETGPU_CUDA_HOME/lib:$NETGPU_CUDART12"
export NETGPU_BACKEND="127.0.0.1:$port" NETGPU_TOKEN_FILE="$work/token"
timeout_s=${NETGPU_RUNTIME_TIMEOUT:-300}
expected=$(grep -v '^#' "$here/expected-pass" | awk '{print $1}')
want=("$@")
passed=0; known=0; unexpected=0; newly=()
while read -r name _; do
  case $name in ''|'#'*) continue ;; esac
  if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$name"; then continue; fi
  out=$work/$name.out
  log_at=$(wc -l < "$work/backend.log")
  timeout "$timeout_s" "$bin/$name" > "$out" 2>&1
  rc=$?
  verdict=$(grep -E '^[a-z_0-9]+: (PASS|FAIL)' "$out" | tail -1)
  reason=""
  if [ $rc -eq 124 ]; then
    reason="timed out after ${timeout_s}s"
  elif [ $rc -ne 0 ]; then
    reason=${verdict:-"exit status $rc, no verdict"}
  elif ! printf '%s' "$verdict" | grep -q ': PASS'; then
    reason="exit status 0 but no PASS verdict"
  elif [ -f "$here/$name.expect" ]; then
    while IFS= read -r line; do
      grep -qxF -- "$line" "$out" || { reason="output lacks: $line"; break; }
    done < "$here/$name.expect"
  fi
  is_expected=0
  printf '%s\n' "$expected" | grep -qx "$name" && is_expected=1
  if [ -z "$reason" ]; then
    passed=$((passed + 1))
    echo "runtime: PASS $name (${verdict#*: PASS })"
    [ $is_expected -eq 1 ] || newly+=("$name")
  else
    if [ $is_expected -eq 1 ]; then
      unexpected=$((unexpected + 1)); echo "runtime: FAIL $name: $reason"
    else
      known=$((known + 1)); echo "runtime: KNOWN-FAIL $name: $reason"
    fi
    grep -vxF -- "${verdict:-}" "$out" | tail -n 15 | sed 's/^/    /'
    # What the backend said meanwhile (module load errors name the PTX construct).
    tail -n +"$((log_at + 1))" "$work/backend.log" | tail -n 5 | sed 's/^/    backend: /'
  fi
done < "$here/programs"
if [ ${#newly[@]} -gt 0 ]; then
  echo "runtime-tests: passing but not yet in tests/runtime/expected-pass: ${newly[*]}"
fi
if [ $unexpected -gt 0 ]; then
  echo "--- backend log"; tail -n 30 "$work/backend.log"
fi
echo "runtime-tests: $passed passing, $known known failures, $unexpected expected-to-pass failures"
[ $unexpected -eq 0 ]
