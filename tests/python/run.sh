#!/usr/bin/env bash
# Real CUDA clients nobody here wrote, on netgpu: CuPy (cupy-cuda12x) and Numba-CUDA, pinned in
# requirements-*.txt and installed from PyPI into venvs under $NETGPU_CACHE/python-clients
# (once per requirements file), run through netgpu's libcuda.so.1 over TCP against a
# CPU-executor netgpu-backend on 127.0.0.1. Prints a verdict per check; exits non-zero only
# when a check listed in tests/python/expected-pass fails (the others are reported as known
# failures), or when the clients cannot be installed.
#
#   tests/python/run.sh [cupy|numba|torch]...   (default: cupy numba; torch is opt-in, ~5.3 GB)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}/python-clients
mkdir -p "$cache"
clients=("$@")
# shellcheck disable=SC2206 # a space-separated list of names
[ ${#clients[@]} -gt 0 ] || clients=(${NETGPU_PYTHON_CLIENTS:-cupy numba})
venv_for() {
  local req=$here/requirements-$1.txt key dir
  key=$(sha256sum "$req" | cut -c1-16)
  dir=$cache/$1-$key
  if [ ! -f "$dir/.done" ]; then
    echo "python-clients: installing $1 from PyPI into $dir (once)" >&2
    rm -rf "$dir"
    python3 -m venv "$dir" || return 1
    # The NVIDIA wheels the CUDA toolchain already downloaded are reused.
    "$dir/bin/pip" install -q --disable-pip-version-check \
      --find-links "${NETGPU_CACHE:-$HOME/.cache/netgpu}/cuda-toolchain/wheels" -r "$req" >&2 || return 1
    touch "$dir/.done"
  fi
  echo "$dir"
}
target=${CARGO_TARGET_DIR:-$repo/target}
scripts/build-bins || exit 1
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
export LD_LIBRARY_PATH="$work/lib" NETGPU_BACKEND="127.0.0.1:$port" NETGPU_TOKEN_FILE="$work/token"
export CUPY_COMPILE_WITH_PTX=1 CUPY_CACHE_DIR="$work/cupy-cache" NUMBA_CACHE_DIR="$work/numba-cache"
expected=$(grep -v '^#' "$here/expected-pass" | awk 'NF {print $1}')
passed=0; known=0; unexpected=0; newly=()
for c in "${clients[@]}"; do
  case $c in cupy) script=cupy_arrays.py ;; numba) script=numba_kernels.py ;; torch) script=torch_tensors.py ;; *) echo "unknown client $c"; exit 2 ;; esac
  venv=$(venv_for "$c") || { echo "python-clients: cannot install $c (pip install -r $here/requirements-$c.txt)"; exit 1; }
  timeout "${NETGPU_PYTHON_TIMEOUT:-600}" "$venv/bin/python" "$here/$script" > "$work/$c.out" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "python: $c timed out"
  checks=$(grep -oE "^$c-[a-z0-9-]+: (PASS|FAIL)" "$work/$c.out" | sed 's/: / /')
  if [ -z "$checks" ]; then
    # The client died before its first check (an import error, a crash).
    checks="$c-import FAIL"
  fi
  while read -r name verdict; do
    line=$(grep -m1 "^$name: " "$work/$c.out" || tail -n 3 "$work/$c.out" | tr '\n' ' ')
    is_expected=0
    printf '%s\n' "$expected" | grep -qx "$name" && is_expected=1
    if [ "$verdict" = PASS ]; then
      passed=$((passed + 1)); echo "python: PASS $name (${line#*: PASS })"
      [ $is_expected -eq 1 ] || newly+=("$name")
    elif [ $is_expected -eq 1 ]; then
      unexpected=$((unexpected + 1)); echo "python: FAIL $line"
    else
      known=$((known + 1)); echo "python: KNOWN-FAIL $line"
    fi
  done <<< "$checks"
  if [ $rc -ne 0 ]; then
    grep -v -E "^$c-[a-z0-9-]+: PASS" "$work/$c.out" | tail -n 25 | sed 's/^/    /'
  fi
done
if [ ${#newly[@]} -gt 0 ]; then
  echo "python-clients: passing but not yet in tests/python/expected-pass: ${newly[*]}"
fi
echo "python-clients: $passed passing, $known known failures, $unexpected expected-to-pass failures"
[ $unexpected -eq 0 ]
