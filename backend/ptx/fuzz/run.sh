#!/usr/bin/env bash
# Fuzzes the PTX executor (crate netgpu-ptx): `ptx_load` (a module from text, then each of
# its kernels launched, bounded), `ptx_link` (up to four modules linked, NUL-separated, then
# launched) and `printf_format` (device printf formatting).
#
#   backend/ptx/fuzz/run.sh smoke [TARGET]           seconds (CI): the committed seeds plus
#                                                    20 000 inputs per target, all targets
#   backend/ptx/fuzz/run.sh runs N [TARGET]          N executions (docs/testing.md: 10 000 000)
#   backend/ptx/fuzz/run.sh time SECONDS [TARGET]    for a while
#
# TARGET defaults to all three. Seeds (seeds/ptx, seeds/link, seeds/printf) are written from
# the fixtures by make-seeds.py; the working corpus grows under ~/.cache/netgpu/fuzz/<target>.
# Built without AddressSanitizer and compare tracing by default (the interpreter's unsafe code
# is a few audited atomic accesses; this runs 4-5x faster); SANITIZER=address for an ASan
# build. Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
mode=${1:-smoke}
cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}
sanitizer=${SANITIZER:-none}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "ptx-fuzz: installing cargo-fuzz from crates.io (once)" >&2
  cargo +nightly install -q cargo-fuzz --locked
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}/fuzz-ptx-$sanitizer
case $mode in
  smoke) args=(-runs=20000); targets=${2:-all} ;;
  runs) args=(-runs="${2:?runs N}"); targets=${3:-all} ;;
  time) args=(-max_total_time="${2:?time SECONDS}"); targets=${3:-all} ;;
  *) echo "usage: $0 smoke [TARGET] | runs N [TARGET] | time SECONDS [TARGET]" >&2; exit 2 ;;
esac
[ "$targets" = all ] && targets="ptx_load ptx_link printf_format"
flags=(--sanitizer "$sanitizer")
[ "$sanitizer" = none ] && flags+=(--no-trace-compares)
cd "$here"
for t in $targets; do
  case $t in
    ptx_load) seeds=seeds/ptx ;;
    ptx_link) seeds=seeds/link ;;
    printf_format) seeds=seeds/printf ;;
    *) echo "ptx-fuzz: no target $t" >&2; exit 2 ;;
  esac
  corpus=$cache/fuzz/$t
  # smoke: over the read-only seeds, writing nothing new into the repository.
  [ "$mode" = smoke ] && corpus=$(mktemp -d)
  mkdir -p "$corpus"
  echo "ptx-fuzz: $t ${args[*]}" >&2
  cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" "$seeds" -- \
    -max_len=16384 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 "${args[@]}"
  [ "$mode" = smoke ] && rm -rf "$corpus"
done
