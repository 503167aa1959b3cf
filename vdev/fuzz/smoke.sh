#!/usr/bin/env bash
# Fuzz smoke run for CI: every vdev fuzz target for a few seconds from its seed corpus
# (vdev/fuzz/seeds/<target>), failing on the first crash, leak or timeout.
#
#   vdev/fuzz/smoke.sh [SECONDS]          (default 10 per target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Long runs: see
# docs/testing.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
targets=(vfio_messages scatter_lists registers command_rings codec)
cargo +nightly fuzz build -O -a
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  if ! cargo +nightly fuzz run -O -a "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 > "$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz smoke: $t failed (input in vdev/fuzz/artifacts/$t)" >&2
    exit 1
  fi
  echo "fuzz smoke: $t: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions in ${secs}s, no failure"
done
echo "fuzz smoke: all targets clean"
