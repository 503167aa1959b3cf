#!/usr/bin/env bash
# Real-VM test of surviving the network (issue 9; guest side tests/vm/guest/reconnect.sh): the
# guest runs a busy copy loop while the host wedges the backend (SIGSTOP) and later kills it
# (SIGKILL) and restarts it on the same address. The waiting calls fail within 5 s, the
# guest's next processes run without a device reset, vdev and its device stay up.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
cleanup() {
  kill "${watcher:-}" 2>/dev/null || true
  if [ -f "$work/backend2.pid" ]; then kill -TERM "$(cat "$work/backend2.pid")" 2>/dev/null || true; fi
  kill -CONT "${NETGPU_BACKEND_PID:-}" 2>/dev/null || true
  vm_stop_netgpu
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/payload"
vm_build_kmod "$work/payload"
vm_start_netgpu "$work"
# The backend's own command line, to restart it exactly as lib.sh started it.
mapfile -d '' backend_cmd < "/proc/$NETGPU_BACKEND_PID/cmdline"
cp "$(dirname "$0")/guest/reconnect.sh" "$work/payload/run.sh"
# Acts on the guest's requests, in order.
(
  serial=$work/serial.log
  step() {   # waits for the guest's line $1 (up to 5 minutes)
    for _ in $(seq 3000); do
      grep -q "^NETGPU-HOST: $1" "$serial" 2>/dev/null && return 0
      sleep 0.1
    done
    exit 1
  }
  step stop-backend
  # The module has reset the device when it loaded; from now on no reset may happen.
  grep -c 'backend ready' "$work/vdev.log" > "$work/probes-before" || true
  kill -STOP "$NETGPU_BACKEND_PID"; echo "host: backend stopped" >&2
  step cont-backend; kill -CONT "$NETGPU_BACKEND_PID"; echo "host: backend continued" >&2
  step kill-backend; kill -KILL "$NETGPU_BACKEND_PID"; echo "host: backend killed" >&2
  step restart-backend
  "${backend_cmd[@]}" >> "$work/backend.log" 2>&1 &
  echo $! > "$work/backend2.pid"
  echo "host: backend restarted (pid $!)" >&2
  wait
) &
watcher=$!
rc=0
VM_TIMEOUT=300 vm_run_payload "$work" "$work/payload" || rc=1
tr -d '\r' < "$work/serial.log" | grep 'busy call failed' || true
# No device reset: vdev probed the backend no more after the guest started its first
# process (each reset probes again).
before=$(cat "$work/probes-before" 2>/dev/null || echo none)
probes=$(grep -c 'backend ready' "$work/vdev.log" || true)
echo "vdev probes of the backend: $before before the faults, $probes at the end"
if [ "$probes" != "$before" ]; then echo "NETGPU-TEST: FAIL host-no-device-reset"; rc=1; else echo "NETGPU-TEST: PASS host-no-device-reset"; fi
if ! kill -0 "$NETGPU_VDEV_PID" 2>/dev/null; then echo "NETGPU-TEST: FAIL host-vdev-alive"; rc=1; else echo "NETGPU-TEST: PASS host-vdev-alive"; fi
grep -E 'session ended|stopped on an error' "$work/vdev.log" | cut -c1-300 || true
exit $rc
