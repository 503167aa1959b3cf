#!/usr/bin/env bash
# Real-VM test of the guest driver's lifecycle under load: processes killed mid-command,
# function-level reset and hot-unplug (PCI remove + rescan) while a process is mid-command,
# module unload while in use, and the INTx fallback. The device has a 256 MiB memory quota
# so the guest can see that killed processes leave no device memory behind.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'vm_stop_netgpu; rm -rf "$work"' EXIT
mkdir -p "$work/payload"
vm_build_kmod "$work/payload"
NETGPU_VDEV_ARGS="--memory 256MiB" vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/lifecycle.sh" "$work/payload/run.sh"
VM_TIMEOUT=240 vm_run_payload "$work" "$work/payload"
