#!/usr/bin/env bash
# Real-VM test of the guest kernel module: built against the guest kernel's headers, loaded
# in a TCG guest with the netgpu device attached (vdev + CPU backend on 127.0.0.1), driven by
# an ioctl self-test, then unloaded.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
# The fuzz harness's seed corpus through the module's own validation code (gcc, ASan/UBSan).
"$REPO_ROOT/guest-tools/kmod/fuzz/run.sh" --replay >&2 || vm_die "kmod fuzz corpus replay failed"
work=$(mktemp -d)
trap 'vm_stop_netgpu; rm -rf "$work"' EXIT
mkdir -p "$work/payload"
vm_build_kmod "$work/payload"
vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/kmod.sh" "$work/payload/run.sh"
vm_run_payload "$work" "$work/payload"
