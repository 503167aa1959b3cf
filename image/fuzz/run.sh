#!/usr/bin/env bash
# Fuzzes netgpu-image's `image_parse` target (module images as a guest sends them).
#
#   image/fuzz/run.sh smoke          a few seconds (CI): the committed seeds plus 20 000 inputs
#   image/fuzz/run.sh runs N         N executions (the figure in docs/testing.md: 10 000 000)
#   image/fuzz/run.sh time SECONDS   for a while
#
# The committed seeds (image/fuzz/seeds/image_parse/) are synthetic images of every kind,
# written by `cargo run -p netgpu-image --features testing --example fuzz_seeds`. The working
# corpus grows under ~/.cache/netgpu/fuzz/image_parse; nvcc-made images from the tests' cache
# (~/.cache/netgpu/image-tests, after `cargo test -p netgpu-image`) are added to it when present.
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode=${1:-smoke}
cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}
corpus=$cache/fuzz/image_parse
mkdir -p "$corpus"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "image-fuzz: installing cargo-fuzz from crates.io (once)" >&2
  cargo +nightly install -q cargo-fuzz --locked
fi
if [ -d "$cache/image-tests" ] && [ "$mode" != smoke ]; then
  (cd "$repo" && cargo run -q -p netgpu-image --features testing --example fuzz_seeds -- \
    "$cache/fuzz/image_parse-nvcc" "$cache/image-tests" >/dev/null)
fi
extra=()
[ -d "$cache/fuzz/image_parse-nvcc" ] && extra+=("$cache/fuzz/image_parse-nvcc")
# Built as scripts/fuzz-smoke.sh builds it (so its build serves both): optimised, debug
# assertions on (integer overflow panics), no AddressSanitizer (netgpu-image has no unsafe code).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}/fuzz
case $mode in
  smoke) args=(-runs=20000) ; corpus_dirs=("$here/seeds/image_parse") ;;
  runs) args=(-runs="${2:?runs N}") ; corpus_dirs=("$corpus" "$here/seeds/image_parse" "${extra[@]}") ;;
  time) args=(-max_total_time="${2:?time SECONDS}") ; corpus_dirs=("$corpus" "$here/seeds/image_parse" "${extra[@]}") ;;
  *) echo "usage: $0 smoke | runs N | time SECONDS" >&2; exit 2 ;;
esac
cd "$here"
# smoke: -runs over the read-only seeds, writing nothing new into the repository.
[ "$mode" = smoke ] && corpus_dirs=("$(mktemp -d)" "${corpus_dirs[@]}")
exec cargo +nightly fuzz run -O -a -s none image_parse "${corpus_dirs[@]}" -- -rss_limit_mb=2048 -timeout=10 "${args[@]}"
