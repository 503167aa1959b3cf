#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Fuzzes the kernel module's descriptor validation and scatter-list layout (netgpu_check.h,
# the same code the module compiles) with libFuzzer + AddressSanitizer + UBSan.
#   guest-tools/kmod/fuzz/run.sh --smoke [SECONDS]   CI: replay the seeds, fuzz SECONDS (10)
#   guest-tools/kmod/fuzz/run.sh --runs N            a long run of N executions (10000000)
#   guest-tools/kmod/fuzz/run.sh --replay            only replay the seeds (gcc, no clang)
# clang is installed with apt-get when missing (Debian: clang ships libFuzzer). New inputs
# found go to $NETGPU_CACHE/kmod-fuzz/corpus (default ~/.cache/netgpu), never into the repo's
# seed corpus (corpus/, written by gen-seeds.py). Prints "kmod-fuzz: N runs, 0 crashes" at
# the end; exits non-zero on any crash (the crashing input is kept in the work directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:---smoke}
work=${NETGPU_CACHE:-$HOME/.cache/netgpu}/kmod-fuzz
mkdir -p "$work/corpus"
src=$here/fuzz_check.c
cflags=(-std=gnu11 -g -O1 -Wall -Wextra -Werror)

replay() {
  local cc=${CC:-cc}
  "$cc" "${cflags[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all \
    -DNETGPU_REPLAY_MAIN -o "$work/replay" "$src"
  "$work/replay" "$here"/corpus/*
}

need_clang() {
  if ! command -v clang > /dev/null; then
    echo "kmod-fuzz: installing clang (apt-get)" >&2
    apt-get install -y -qq clang > "$work/apt.log" 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq clang > "$work/apt.log" 2>&1; } \
      || { cat "$work/apt.log" >&2; echo "kmod-fuzz: cannot install clang" >&2; exit 1; }
  fi
  clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -o "$work/fuzz_check" "$src"
}

fuzz() {   # extra libFuzzer arguments
  local log=$work/fuzz.log rc=0
  (cd "$work" && ./fuzz_check -print_final_stats=1 "$@" corpus "$here/corpus") > "$log" 2>&1 || rc=$?
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ "$rc" != 0 ]; then
    tail -n 40 "$log" >&2
    echo "kmod-fuzz: FAILED after ${runs:-?} runs (log $log, crash input in $work)" >&2
    exit 1
  fi
  grep -E '^#[0-9]+ *DONE|stat::' "$log" || true
  echo "kmod-fuzz: ${runs:-0} runs, 0 crashes"
}

case $mode in
  --replay) replay ;;
  --smoke)
    replay
    need_clang
    fuzz -max_total_time="${2:-10}"
    ;;
  --runs)
    need_clang
    fuzz -runs="${2:-10000000}"
    ;;
  -h|--help) sed -n '3,11p' "$0" ;;
  *) echo "usage: $0 --smoke [SECONDS] | --runs N | --replay" >&2; exit 2 ;;
esac
