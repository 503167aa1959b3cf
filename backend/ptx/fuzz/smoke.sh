#!/usr/bin/env bash
# A short fuzz run of every PTX target (ptx_load, ptx_link, printf_format), seeded from the
# committed corpora under seeds/, each in a throwaway corpus directory. Fails on the first
# crash (libFuzzer writes the input to artifacts/). Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`).
#
#   backend/ptx/fuzz/smoke.sh [SECONDS_PER_TARGET]      (default 10)
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
mkdir -p artifacts
for t in ptx_load:ptx ptx_link:link printf_format:printf; do
  target=${t%%:*}
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  cargo +nightly fuzz run --sanitizer none "$target" "$corpus" "seeds/${t##*:}" -- \
    -max_total_time="$secs" -max_len=16384 -artifact_prefix=artifacts/ -print_final_stats=1 2>&1 |
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|thread .* panicked|SUMMARY)' || true
  test -z "$(ls artifacts/ 2>/dev/null)" || { echo "fuzz smoke: $target crashed, see $PWD/artifacts" >&2; exit 1; }
  rm -rf "$corpus"
done
echo "fuzz smoke: no crashes"
