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
trap 'kill "${watcher:-}" 2>/dev/null || true; vm_stop_netgpu; rm -rf "$work" "$VM_ROOT/build/cuda-$$"' EXIT
inc=$("$REPO_ROOT/scripts/fetch-cuda-headers.sh")
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
"$REPO_ROOT/scripts/build-bins" || vm_die "cannot build libcuda and netgpu-smi (scripts/build-bins)"
payload=$work/payload
mkdir -p "$payload/lib" "$payload/kernels" "$payload/.rootfs/lib64" "$payload/.rootfs/lib/x86_64-linux-gnu"
vm_build_kmod "$payload"
rm -f "$payload/netgpu-selftest"
cp "$target/debug/libcuda.so" "$payload/lib/libcuda.so.1"
cp "$target/debug/netgpu-smi" "$payload/"

# Build the C programs in the chroot (the guest's glibc) against cuda.h and libcuda.so.1.
b="/build/cuda-$$"
mkdir -p "$VM_ROOT$b/include" "$VM_ROOT$b/lib"
cp -r "$inc/." "$VM_ROOT$b/include/"
cp "$REPO_ROOT"/tests/cuda/*.c "$REPO_ROOT"/tests/cuda/*.h "$VM_ROOT$b/"
cp "$payload/lib/libcuda.so.1" "$VM_ROOT$b/lib/libcuda.so"
for src in "$VM_ROOT$b"/*.c; do
  n=$(basename "$src" .c)
  vm_chroot gcc -O1 -Wall -Werror -I"$b/include" -o "$b/$n" "$b/$n.c" -L"$b/lib" -lcuda -lm \
    || vm_die "cannot build $n.c in the guest environment"
  cp "$VM_ROOT$b/$n" "$payload/"
done
for k in vector_add:vector_add.ptx sgemm_tiled:sgemm.ptx reduce:reduce.ptx; do
  if [ -f "$REPO_ROOT/tests/kernels/${k#*:}" ]; then
    cp "$REPO_ROOT/tests/kernels/${k#*:}" "$payload/kernels/"
  else
    rm -f "$payload/${k%%:*}"
    vm_log "skipping ${k%%:*}: tests/kernels/${k#*:} not present"
  fi
done
# The guest's dynamic loader and the libraries the programs need, from the same distribution.
cp "$VM_ROOT/lib64/ld-linux-x86-64.so.2" "$payload/.rootfs/lib64/"
for l in libc.so.6 libm.so.6 libgcc_s.so.1; do
  cp -L "$VM_ROOT/lib/x86_64-linux-gnu/$l" "$payload/.rootfs/lib/x86_64-linux-gnu/"
done

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
