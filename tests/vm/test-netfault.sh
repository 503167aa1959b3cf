#!/usr/bin/env bash
# Whole stack through a real guest while the network between vdev and the backend fails:
# program -> libcuda.so.1 -> /dev/netgpu0 -> vfio-user -> netgpu-vdev -> netgpu-netfault
# proxy -> backend (CPU executor, plain TCP on loopback). The guest asks for a partition
# (the proxy forwards nothing and keeps every connection open: no FIN, no RST) in the middle
# of a 32 MiB copy and of a long kernel; the waiting call must return a CUDA error, not hang.
# Then the link heals and the guest's next program must run (vdev opens new connections).
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'kill "${watcher:-}" "${NETFAULT_PROXY_PID:-}" 2>/dev/null || true; vm_stop_netgpu; rm -rf "$work"' EXIT
inc=$("$REPO_ROOT/scripts/fetch-cuda-headers.sh")
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
if [ -z "${NETGPU_VM_BIN_DIR:-}" ]; then
  (cd "$REPO_ROOT" && cargo build -q -p netgpu-cuda -p netgpu-netfault --bin netfault-proxy) \
    || vm_die "cannot build libcuda and netfault-proxy"
fi
bins=${NETGPU_VM_BIN_DIR:-$target}
payload=$work/payload
mkdir -p "$payload/lib" "$payload/kernels"
vm_build_kmod "$payload"
rm -f "$payload"/netgpu-[a-z]*
cp "$bins/debug/libcuda.so" "$payload/lib/libcuda.so.1"
cp "$REPO_ROOT/tests/kernels/sgemm.ptx" "$payload/kernels/"

# The guest program, built in the chroot (the guest's glibc) against cuda.h and libcuda.so.1.
vm_build_cuda_programs "$payload" "$inc" "$(dirname "$0")/guest/netfault.c"

# vm_start_netgpu calls this once the backend runs: vdev connects through the proxy, which
# takes its commands from a FIFO this script holds open (fd 7).
vm_hook_backend_started() {
  mkfifo "$1/proxy.cmd"
  exec 7<> "$1/proxy.cmd"
  "$bins/debug/netfault-proxy" 127.0.0.1:0 "$NETGPU_BACKEND_ADDR" < "$1/proxy.cmd" > "$1/proxy.log" 2>&1 &
  NETFAULT_PROXY_PID=$!
  for _ in $(seq 100); do grep -q '^listening ' "$1/proxy.log" && break; sleep 0.05; done
  NETGPU_VDEV_BACKEND_ADDR=$(sed -n 's/^listening //p' "$1/proxy.log")
  [ -n "$NETGPU_VDEV_BACKEND_ADDR" ] || { cat "$1/proxy.log" >&2; vm_die "netfault-proxy did not start"; }
}
vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/netfault.sh" "$payload/run.sh"
# Partitions and heals the link when the guest asks (one NETGPU-HOST line each).
(
  done_p=0 done_h=0
  for _ in $(seq 6000); do
    p=$(grep -c '^NETGPU-HOST: partition' "$work/serial.log" 2>/dev/null || true)
    h=$(grep -c '^NETGPU-HOST: heal' "$work/serial.log" 2>/dev/null || true)
    if [ "${p:-0}" -gt "$done_p" ]; then echo stall >&7; done_p=$p; vm_log "partition $p"; fi
    if [ "${h:-0}" -gt "$done_h" ]; then echo pass >&7; done_h=$h; vm_log "heal $h"; fi
    sleep 0.1
  done
) &
watcher=$!
rc=0
VM_TIMEOUT=420 vm_run_payload "$work" "$payload" || rc=$?
echo "--- proxy" >&2; cat "$work/proxy.log" >&2
exit $rc
