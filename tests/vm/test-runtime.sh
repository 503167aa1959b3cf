#!/usr/bin/env bash
# End to end: the CUDA runtime programs of tests/runtime (built by NVIDIA's nvcc, static and
# shared cudart 13.5 and cudart 12.9) in a QEMU guest (TCG) on a netgpu-backend across TCP:
# program -> cudart -> libcuda.so.1 -> /dev/netgpu0 (kernel module) -> vfio-user ->
# netgpu-vdev -> backend (CPU executor). Fails when the guest cannot run them at all, or
# when a program listed in tests/runtime/expected-pass-vm (or, without it, expected-pass)
# fails; the others are reported.
#   tests/vm/test-runtime.sh [NAME...]    all programs, or the named ones
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'vm_stop_netgpu; rm -rf "$work"' EXIT
rt=$REPO_ROOT/tests/runtime
bin=$("$rt/build.sh") || vm_die "cannot build the runtime test programs"
eval "$("$REPO_ROOT/scripts/cuda-toolchain.sh" --env)"
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
(cd "$REPO_ROOT" && cargo build -q -p netgpu-cuda) || vm_die "cannot build libcuda"
payload=$work/payload
mkdir -p "$payload/lib" "$payload/runtime"
vm_build_kmod "$payload"
rm -f "$payload/netgpu-selftest"
cp "$target/debug/libcuda.so" "$payload/lib/libcuda.so.1"
cp -L "$NETGPU_CUDA_HOME/lib/libcudart.so.13" "$NETGPU_CUDART12/libcudart.so.12" "$payload/lib/"
want=("$@")
progs=()
while read -r name _; do
  case $name in ''|'#'*) continue ;; esac
  if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$name"; then continue; fi
  progs+=("$(readlink -f "$bin/$name")")
done < "$rt/programs"
# The programs and the host libraries they and the libraries they load were linked against
# (glibc, libstdc++; cudart's libdl, librt, libpthread).
vm_payload_bin "$payload" "${progs[@]}" "$payload/lib/libcudart.so.13" "$payload/lib/libcudart.so.12" \
  "$payload/lib/libcuda.so.1"
for p in "${progs[@]}"; do
  n=$(basename "$p")
  [ -f "$rt/$n.expect" ] && cp "$rt/$n.expect" "$payload/runtime/"
done
for p in "${progs[@]}"; do basename "$p"; done > "$payload/runtime/programs"
vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/runtime.sh" "$payload/run.sh"
VM_TIMEOUT=${VM_TIMEOUT:-1500} vm_run_payload "$work" "$payload" > "$work/results" || true
cat "$work/results"
# The guest must have got as far as running the programs and finished.
grep -q '^NETGPU-TEST: PASS device-node$' "$work/results" || vm_die "the guest found no /dev/netgpu0"
grep -q '^NETGPU-TEST: SUMMARY' "$work/results" || vm_die "the guest did not finish (see the serial log above)"
expected=$rt/expected-pass-vm
[ -f "$expected" ] || expected=$rt/expected-pass
failed=0
for n in $(grep -v '^#' "$expected" | awk 'NF {print $1}'); do
  grep -qx "$n" "$payload/runtime/programs" || continue
  if ! grep -q "^NETGPU-TEST: PASS runtime-$n\$" "$work/results"; then
    echo "[vm] runtime program $n is expected to pass and did not"
    failed=1
  fi
done
[ $failed -eq 0 ]
