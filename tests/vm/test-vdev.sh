#!/usr/bin/env bash
# Real-VM test of netgpu-vdev: QEMU 11's vfio-user-pci attaches to a vdev that is connected
# to a CPU-executor backend on 127.0.0.1; the guest (Debian cloud kernel, TCG, busybox, no
# netgpu driver) checks the device's ids, class, BARs and capabilities and reads its registers.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'vm_stop_netgpu; rm -rf "$work"' EXIT
vm_start_netgpu "$work"
mkdir -p "$work/payload"
cp "$(dirname "$0")/guest/vdev-enumeration.sh" "$work/payload/run.sh"
vm_run_payload "$work" "$work/payload"
