#!/usr/bin/env bash
# Fuzz smoke run (CI, issue 12): builds every cargo-fuzz target in the repository (each
# `*/fuzz/Cargo.toml` with `cargo-fuzz = true`) into one shared target directory, and the kernel
# module's libFuzzer harness (guest-tools/kmod/fuzz, clang), then runs each target for a few
# seconds over its committed seed corpus. Fails on any crash, panic, leak, timeout or
# out-of-memory, on a seed that does not run, and on a target that does not build.
#
#   scripts/fuzz-smoke.sh [SECONDS]   seconds per target (default 5, or NETGPU_FUZZ_SMOKE_SECONDS)
#   scripts/fuzz-smoke.sh --list      the targets and their seed directories
#
# cargo-fuzz (the pinned version, when PATH lacks it) is installed once from crates.io into
# $NETGPU_CACHE/cargo-fuzz (default ~/.cache/netgpu); the nightly toolchain must be installed
# (rustup; scripts/test's deps step installs it). The targets are built with
# `cargo +nightly fuzz build -O -a -s none`: optimised, with debug assertions (integer overflow
# checks) and without AddressSanitizer (the fuzzed code is safe Rust apart from a few audited
# blocks), except vdev/fuzz, built with ASan as its own smoke.sh does (vdev builds iovecs
# over guest memory with unsafe code). The targets' build directory is
# ${NETGPU_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}[-address]. New inputs found in a
# smoke run are thrown away; a failing input is kept under $NETGPU_CACHE/fuzz-smoke/artifacts.
# Long campaigns (10 M executions per target) are separate commands: docs/testing.md, "Fuzzing".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cache=${NETGPU_CACHE:-$HOME/.cache/netgpu}
secs=${NETGPU_FUZZ_SMOKE_SECONDS:-5}
list_only=0
case ${1:-} in
  --list) list_only=1 ;;
  -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
  '') ;;
  *) [[ $1 =~ ^[0-9]+$ ]] || { echo "fuzz-smoke: usage: $0 [SECONDS] | --list" >&2; exit 2; }; secs=$1 ;;
esac
CARGO_FUZZ_VERSION=0.13.2

# The committed seeds of a target: <fuzz dir>/seeds/<target>, except where a crate names them
# after what they hold.
seeds_of() {   # fuzz dir, target
  case $2 in
    ptx_load) echo "$1/seeds/ptx" ;;
    ptx_link) echo "$1/seeds/link" ;;
    printf_format) echo "$1/seeds/printf" ;;
    *) echo "$1/seeds/$2" ;;
  esac
}

mapfile -t fuzz_dirs < <(git ls-files '*fuzz/Cargo.toml' | xargs grep -l '^cargo-fuzz = true' | xargs -n1 dirname | sort)
[ ${#fuzz_dirs[@]} -gt 0 ] || { echo "fuzz-smoke: no cargo-fuzz crates found" >&2; exit 1; }
kmod=guest-tools/kmod/fuzz

# The sanitizer a crate's smoke build uses (see above).
sanitizer_of() {
  case $1 in
    vdev/fuzz) echo address ;;
    *) echo none ;;
  esac
}

# Targets from each crate's Cargo.toml ([[bin]] names), without running cargo.
targets_of() {
  awk '/^\[\[bin\]\]/ { b = 1; next } /^\[/ { b = 0 } b && /^name *=/ { gsub(/[" ]/, "", $0); sub(/^name=/, ""); print }' "$1/Cargo.toml"
}

if [ $list_only = 1 ]; then
  for d in "${fuzz_dirs[@]}"; do
    for t in $(targets_of "$d"); do
      s=$(seeds_of "$d" "$t")
      printf '%-16s %-22s %s\n' "$t" "$d" "$( [ -d "$s" ] && echo "$s ($(find "$s" -type f | wc -l) seeds)" || echo "no committed seeds")"
    done
  done
  printf '%-16s %-22s %s\n' fuzz_check "$kmod" "$kmod/corpus ($(find "$kmod/corpus" -type f | wc -l) seeds)"
  exit 0
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz-smoke: the nightly toolchain is missing (rustup toolchain install nightly --profile minimal)" >&2
  exit 1
fi
fuzz_root=$cache/cargo-fuzz
if [ "$(cargo-fuzz --version 2>/dev/null)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  :   # this version is on PATH already
elif [ "$("$fuzz_root/bin/cargo-fuzz" --version 2>/dev/null)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  export PATH=$fuzz_root/bin:$PATH
else
  echo "fuzz-smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io into $fuzz_root (once)" >&2
  cargo install -q --locked --force --root "$fuzz_root" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  export PATH=$fuzz_root/bin:$PATH
fi
target_dir=${NETGPU_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}/fuzz}
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
artifacts=$cache/fuzz-smoke/artifacts
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
passed=0
report() { echo "fuzz-smoke: $*"; }
for d in "${fuzz_dirs[@]}"; do
  san=$(sanitizer_of "$d")
  tdir=$target_dir
  [ "$san" = none ] || tdir=$target_dir-$san
  report "building $d ($(targets_of "$d" | tr '\n' ' '), sanitizer $san)"
  if ! (cd "$d/.." && cargo +nightly fuzz build -O -a -s "$san" --fuzz-dir "$repo/$d" \
        --target-dir "$tdir") > "$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    report "FAIL $d: the fuzz targets do not build"
    failed+=("$d")
    continue
  fi
  for t in $(targets_of "$d"); do
    seeds=$(seeds_of "$d" "$t")
    corpus=$work/corpus-$t
    mkdir -p "$corpus" "$artifacts/$t"
    dirs=("$corpus")
    nseeds=0
    if [ -d "$seeds" ]; then dirs+=("$seeds"); nseeds=$(find "$seeds" -type f | wc -l); fi
    log=$work/$t.log
    rc=0
    "$tdir/$triple/release/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/$t/" "${dirs[@]}" > "$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ $rc -ne 0 ] || ! grep -Eq '^#[0-9]+[[:space:]]+INITED' "$log"; then
      tail -n 40 "$log" >&2
      report "FAIL $t (exit status $rc after ${runs:-?} executions; the input is in $artifacts/$t)"
      failed+=("$t")
    else
      passed=$((passed + 1))
      note=""
      [ "$nseeds" -gt 0 ] || note=" (no committed seeds: started from an empty corpus)"
      report "PASS $t: ${runs:-?} executions in ${secs}s over $nseeds seeds, 0 crashes$note"
    fi
  done
done

# The kernel module's descriptor validation (C, libFuzzer with ASan+UBSan; installs clang).
if "$kmod/run.sh" --smoke "$secs" > "$work/kmod.log" 2>&1; then
  passed=$((passed + 1))
  report "PASS fuzz_check ($kmod): $(grep -o '[0-9]* runs, 0 crashes' "$work/kmod.log" | tail -n 1) in ${secs}s over $(find "$kmod/corpus" -type f | wc -l) seeds"
else
  tail -n 40 "$work/kmod.log" >&2
  report "FAIL fuzz_check ($kmod)"
  failed+=(fuzz_check)
fi

report "${passed} targets clean, ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
