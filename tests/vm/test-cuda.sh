#!/usr/bin/env bash
# End to end: unmodified CUDA driver-API programs in a QEMU guest (TCG) run on a
# netgpu-backend across TCP: program -> libcuda.so.1 -> /dev/netgpu0 (kernel module) ->
# vfio-user -> netgpu-vdev -> backend (CPU executor). Also two processes at once, and the
# backend stopped mid-run (the program must get a CUDA error within seconds).
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'kill "${watcher:-}" 2>/dev/null || true; vm_stop_netgpu; rm -rf "$work"' EXIT
inc=$("$REPO_ROOT/scripts/fetch-cuda-headers.sh")
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
"$REPO_ROOT/scripts/build-bins" || vm_die "cannot build libcuda and netgpu-smi (scripts/build-bins)"
payload=$work/payload
mkdir -p "$payload/lib"
vm_build_kmod "$payload"
rm -f "$payload/netgpu-selftest"
cp "$target/debug/libcuda.so" "$payload/lib/libcuda.so.1"
cp "$target/debug/netgpu-smi" "$payload/"

# The C programs, built in the chroot (the guest's glibc) against cuda.h and libcuda.so.1,
# with the guest's loader and libraries.
progs=()
for src in "$REPO_ROOT"/tests/cuda/*.c; do progs+=("$(basename "$src" .c)"); done
vm_build_cuda_programs "$payload" "$inc" "${progs[@]}"
cp "$REPO_ROOT"/tests/kernels/{sgemm,reduce}.ptx "$payload/kernels/"

vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/cuda.sh" "$payload/run.sh"
# Stops the backend when the guest asks for it (the backend-lost case).
(
  for _ in $(seq 3000); do
    if grep -q '^NETGPU-HOST: stop-backend' "$work/serial.log" 2>/dev/null; then
      kill -TERM "$NETGPU_BACKEND_PID"
      exit 0
    fi
    sleep 0.1
  done
) &
watcher=$!
VM_TIMEOUT=300 vm_run_payload "$work" "$payload"
