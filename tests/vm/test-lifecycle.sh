#!/usr/bin/env bash
# Real-VM test of the guest driver's lifecycle under load (tests/vm/guest/lifecycle.sh):
# processes killed mid-command, function-level reset with racing opens, a device reading all
# ones, netgpu-vdev killed (a dead device), driver unbind and hot-unplug (PCI remove + rescan) with files held open, module
# unload while in use, and the INTx fallback. The device has a 256 MiB memory quota
# so the guest can see that killed processes leave no device memory behind.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'kill "${watcher:-}" 2>/dev/null || true; vm_stop_netgpu; rm -rf "$work"' EXIT
mkdir -p "$work/payload"
vm_build_kmod "$work/payload"
NETGPU_VDEV_ARGS="--memory 256MiB" vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/lifecycle.sh" "$work/payload/run.sh"
# Kills netgpu-vdev when the guest asks (the dead-device case: registers read all ones).
(
  for _ in $(seq 3000); do
    if grep -q '^NETGPU-HOST: kill-vdev' "$work/serial.log" 2>/dev/null; then
      kill -KILL "$NETGPU_VDEV_PID"
      exit 0
    fi
    sleep 0.1
  done
) &
watcher=$!
# slub_debug poisons freed objects and checks red zones: a use-after-free shows in the log.
VM_TIMEOUT=240 VM_APPEND="slub_debug=FZPU" vm_run_payload "$work" "$work/payload"
