#!/usr/bin/env bash
# The real-GPU suite (issue 8.6): everything a physical-GPU run needs, built here into one
# directory, then run on the GPU host from that directory alone (no compiler, no network).
#
#   scripts/gpu-suite.sh bundle [DIR]   build the bundle (default DIR: build/gpu-suite; < 64 MiB)
#   DIR/gpu-suite.sh run [DIR]          on the GPU host: netgpu-backend --executor cuda + every test
#   scripts/gpu-suite.sh check [DIR]    bundle, then run it here against the CPU executor (CI)
#
# The bundle holds: netgpu-backend (its CUDA executor loads the host's libcuda.so.1 at run
# time), netgpu's guest libcuda.so.1, the backend's CUDA-executor tests as test binaries
# (`conformance` with NETGPU_REQUIRE_CUDA=1, and the library's `executor::cuda` unit tests),
# the tests/cuda C programs with the PTX kernels they load, and the tests/runtime programs
# built by nvcc 13.5 with SASS for sm_90 and PTX (compute_90, and compute_80 for the CPU
# executor, which reports CC 8.0), with cudart 13 and 12 for the programs that link them
# shared. `run` prints one PASS/FAIL line per test and a summary; with a GPU it also runs each
# runtime program on the host's own driver ("native"), so a failure through netgpu can be told
# from a test-program bug. Exit status 1 when a test that must pass failed: the backend's tests
# and C programs always, runtime programs when listed in runtime/expected-pass.
#   NETGPU_GPU_SUITE_EXECUTOR=cpu|cuda   run's executor (default cuda; check uses cpu)
#   NETGPU_GPU_SUITE_TIMEOUT=SECONDS     per test (default 300)
# docs/testing.md ("Real GPU") says how to run it and what has run on a GPU.
set -uo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
mode=${1:-}
# The architectures of the runtime programs: SASS for Hopper (H100/H200), PTX for it (JIT on
# later GPUs) and compute_80 PTX, which the CPU executor (CC 8.0) takes.
RUNTIME_ARCH="-gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 -gencode arch=compute_80,code=compute_80"
MAX_BUNDLE_BYTES=$((64 << 20))

die() { echo "gpu-suite: $*" >&2; exit 1; }

bundle() {
  local dir=$1 repo target
  repo=$(cd "$(dirname "$self")/.." && pwd)
  [ -f "$repo/Cargo.toml" ] || die "bundle runs from the repository's scripts/gpu-suite.sh"
  cd "$repo" || exit 1
  target=${CARGO_TARGET_DIR:-$repo/target}
  rm -rf "$dir"
  mkdir -p "$dir"/{bin,lib,cudart13,cudart12,backend-tests,cuda,kernels,runtime} || exit 1
  dir=$(cd "$dir" && pwd)
  scripts/build-bins || die "cargo build failed (scripts/build-bins)"
  strip_to() { objcopy --strip-all "$1" "$2" || die "cannot copy $1"; }
  strip_to "$target/debug/netgpu-backend" "$dir/bin/netgpu-backend"
  strip_to "$target/debug/libcuda.so" "$dir/lib/libcuda.so.1"
  # The backend's test binaries, as `cargo test --workspace` builds them (scripts/build-bins
  # resolves the same way, so this compiles nothing new).
  local exes
  exes=$(cargo build -q --workspace --all-targets --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]: continue
    if not m["package_id"].split("#")[0].endswith("/backend") and "netgpu-backend" not in m["package_id"]: continue
    t = m["target"]
    if t["name"] == "conformance" or (t["name"] == "netgpu_backend" and "lib" in t["kind"]):
        print(t["name"], m["executable"])
')
  [ "$(echo "$exes" | grep -c .)" = 2 ] || die "cannot find the backend's test binaries (got: $exes)"
  while read -r name exe; do strip_to "$exe" "$dir/backend-tests/$name"; done <<< "$exes"
  # tests/cuda: C programs against NVIDIA's cuda.h and netgpu's libcuda.so.1.
  local inc src
  inc=$(scripts/fetch-cuda-headers.sh) || die "cannot fetch cuda.h"
  ln -sf libcuda.so.1 "$dir/lib/libcuda.so"
  for src in tests/cuda/*.c; do
    gcc -O1 -Wall -Werror -I"$inc" -o "$dir/cuda/$(basename "$src" .c)" "$src" -L"$dir/lib" -lcuda -lm \
      || die "cannot build $src"
  done
  rm "$dir/lib/libcuda.so"
  cp tests/kernels/*.ptx "$dir/kernels/" 2>/dev/null || true
  # tests/runtime: nvcc programs (cached by tests/runtime/build.sh).
  local bin
  bin=$(NETGPU_RUNTIME_ARCH=$RUNTIME_ARCH tests/runtime/build.sh) || die "cannot build the runtime programs"
  eval "$(scripts/cuda-toolchain.sh --env)"
  for p in "$bin"/*; do cp -L "$p" "$dir/runtime/"; done
  cp tests/runtime/programs tests/runtime/expected-pass "$dir/runtime/"
  cp tests/runtime/*.expect "$dir/runtime/" 2>/dev/null || true
  cp -L "$NETGPU_CUDA_HOME/lib/libcudart.so.13" "$dir/cudart13/"
  cp -L "$NETGPU_CUDART12/libcudart.so.12" "$dir/cudart12/"
  cp "$self" "$dir/gpu-suite.sh"
  {
    echo "netgpu gpu-suite bundle"
    echo "commit $(git rev-parse HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%FT%TZ) on $(uname -n), $(ldd --version | head -1)"
    echo "runtime programs: nvcc $("$NETGPU_CUDA_HOME/bin/nvcc" --version | tail -1) $RUNTIME_ARCH"
  } > "$dir/MANIFEST"
  local bytes
  bytes=$(du -sb "$dir" | cut -f1)
  echo "gpu-suite: bundle $dir: $((bytes >> 20)) MiB ($(find "$dir" -type f | wc -l) files)" >&2
  [ "$bytes" -lt $MAX_BUNDLE_BYTES ] || die "the bundle is $bytes bytes, over the 64 MiB limit"
}

run() {
  local dir=$1 executor=${NETGPU_GPU_SUITE_EXECUTOR:-cuda} tmo=${NETGPU_GPU_SUITE_TIMEOUT:-300}
  [ -f "$dir/MANIFEST" ] || die "$dir is not a bundle (scripts/gpu-suite.sh bundle)"
  dir=$(cd "$dir" && pwd)
  local port
  # Globals: the EXIT trap and summary use them after run returns.
  backend="" passed=0 failed=0 known=0 failures=()
  work=$(mktemp -d)
  trap 'kill ${backend:-} 2>/dev/null; wait 2>/dev/null; rm -rf "${work:-}"' EXIT
  echo "gpu-suite: $(head -3 "$dir/MANIFEST" | tail -2 | tr '\n' ';') executor $executor on $(uname -n)"
  if [ "$executor" = cuda ]; then
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  fi
  ok() { passed=$((passed + 1)); echo "gpu-suite: PASS $1${2:+ ($2)}"; }
  bad() {   # name, reason, output file
    failed=$((failed + 1)); failures+=("$1"); echo "gpu-suite: FAIL $1: $2"
    [ -f "${3:-}" ] && tail -n 20 "$3" | sed 's/^/    /'
  }
  known_bad() { known=$((known + 1)); echo "gpu-suite: KNOWN-FAIL $1: $2"; }

  # 1. The backend's own tests, in process (the CUDA executor directly, no netgpu-backend).
  local t out
  for t in conformance netgpu_backend; do
    out=$work/test-$t.out
    local args=()
    [ "$t" = netgpu_backend ] && args=(executor::cuda)
    if [ "$executor" = cuda ]; then
      env -u LD_LIBRARY_PATH NETGPU_REQUIRE_CUDA=1 timeout "$tmo" "$dir/backend-tests/$t" "${args[@]}" > "$out" 2>&1
    else
      env -u LD_LIBRARY_PATH timeout "$tmo" "$dir/backend-tests/$t" "${args[@]}" > "$out" 2>&1
    fi
    if [ $? -eq 0 ]; then ok "backend-tests/$t" "$(grep -o '[0-9]* passed' "$out" | tail -1)"
    else bad "backend-tests/$t" "see below" "$out"; fi
  done

  # 2. netgpu-backend on loopback; its CUDA executor must load the host's driver, never the
  # bundle's libcuda.so.1, so it starts without LD_LIBRARY_PATH.
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)))
  start_backend() {
    env -u LD_LIBRARY_PATH "$dir/bin/netgpu-backend" --listen "127.0.0.1:$port" --executor "$executor" \
      --token-file "$work/token" --insecure-plain-loopback --log warn >> "$work/backend.log" 2>&1 &
    backend=$!
    local i
    for i in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.05; done
    bad netgpu-backend "did not start" "$work/backend.log"
    return 1
  }
  start_backend || { summary; return 1; }
  export NETGPU_BACKEND="127.0.0.1:$port" NETGPU_TOKEN_FILE="$work/token" NETGPU_KERNELS="$dir/kernels"
  local lib=$dir/lib:$dir/cudart13:$dir/cudart12

  # 3. tests/cuda C programs through netgpu's libcuda.so.1 (as tests/cuda/run-host.sh).
  local p name
  for p in device_memory streams_events jit_link launch_config vector_add sgemm_tiled reduce; do
    [ -x "$dir/cuda/$p" ] || continue
    out=$work/cuda-$p.out
    if LD_LIBRARY_PATH=$lib timeout "$tmo" "$dir/cuda/$p" > "$out" 2>&1; then ok "cuda/$p"
    else bad "cuda/$p" "exit status $?" "$out"; fi
  done

  # 4. tests/runtime programs: through netgpu, and natively on the host's driver.
  local expected rc verdict reason line
  expected=$(grep -v '^#' "$dir/runtime/expected-pass" | awk '{print $1}')
  while read -r name _; do
    case $name in ''|'#'*) continue ;; esac
    for how in netgpu native; do
      [ "$how" = native ] && [ "$executor" != cuda ] && continue
      out=$work/runtime-$how-$name.out
      if [ "$how" = netgpu ]; then
        LD_LIBRARY_PATH=$lib timeout "$tmo" "$dir/runtime/$name" > "$out" 2>&1
      else
        LD_LIBRARY_PATH=$dir/cudart13:$dir/cudart12 timeout "$tmo" "$dir/runtime/$name" > "$out" 2>&1
      fi
      rc=$?
      verdict=$(grep -E '^[a-z_0-9]+: (PASS|FAIL)' "$out" | tail -1)
      reason=""
      if [ $rc -eq 124 ]; then reason="timed out after ${tmo}s"
      elif [ $rc -ne 0 ]; then reason=${verdict:-"exit status $rc, no verdict"}
      elif ! printf '%s' "$verdict" | grep -q ': PASS'; then reason="exit status 0 but no PASS verdict"
      elif [ -f "$dir/runtime/$name.expect" ]; then
        while IFS= read -r line; do
          grep -qxF -- "$line" "$out" || { reason="output lacks: $line"; break; }
        done < "$dir/runtime/$name.expect"
      fi
      if [ -z "$reason" ]; then ok "runtime/$how/$name"
      elif [ "$how" = netgpu ] && printf '%s\n' "$expected" | grep -qx "$name"; then bad "runtime/$how/$name" "$reason" "$out"
      else known_bad "runtime/$how/$name" "$reason"; fi
    done
  done < "$dir/runtime/programs"

  # 5. The backend goes away mid-run: the program gets a CUDA error within seconds (last: it
  # stops the backend).
  if [ -x "$dir/cuda/backend_lost" ]; then
    out=$work/cuda-backend_lost.out
    (LD_LIBRARY_PATH=$lib "$dir/cuda/backend_lost" > "$out" 2>&1; echo $? > "$work/backend_lost.rc") &
    local prog=$!
    for _ in $(seq 200); do grep -q READY "$out" 2>/dev/null && break; sleep 0.05; done
    sleep 0.3
    kill -TERM "$backend"
    if timeout 30 tail --pid=$prog -f /dev/null && [ "$(cat "$work/backend_lost.rc" 2>/dev/null)" = 0 ]; then
      ok cuda/backend_lost
    else
      bad cuda/backend_lost "no error within 30 s" "$out"; kill -9 $prog 2>/dev/null
    fi
  fi
  summary
  [ "$failed" -eq 0 ]
}

summary() {
  [ "$failed" -eq 0 ] || { echo "--- netgpu-backend log"; tail -n 30 "$work/backend.log" 2>/dev/null; }
  echo "gpu-suite: executor $executor: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}, $known known failures"
}

case $mode in
  bundle) bundle "${2:-$(dirname "$self")/../build/gpu-suite}" ;;
  run)
    d=${2:-}
    if [ -z "$d" ]; then
      if [ -f "$(dirname "$self")/MANIFEST" ]; then d=$(dirname "$self"); else d=$(dirname "$self")/../build/gpu-suite; fi
    fi
    run "$d"
    ;;
  check)
    d=${2:-$(dirname "$self")/../build/gpu-suite}
    ( bundle "$d" ) || exit 1
    NETGPU_GPU_SUITE_EXECUTOR=cpu run "$d"
    ;;
  -h|--help) sed -n '2,20p' "$self" ;;
  *) echo "usage: $0 bundle [DIR] | run [DIR] | check [DIR]" >&2; exit 2 ;;
esac
