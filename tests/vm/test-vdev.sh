#!/usr/bin/env bash
# Real-VM test of netgpu-vdev: QEMU 11's vfio-user-pci attaches to a vdev that is connected
# to a CPU-executor backend on 127.0.0.1; the guest (Debian cloud kernel, TCG, busybox)
# checks the device's ids, class, BARs and capabilities and reads its registers.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env

target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
vm_log "building netgpu-backend and netgpu-vdev"
(cd "$REPO_ROOT" && cargo build -q -p netgpu-backend -p netgpu-vdev)

work=$(mktemp -d)
sockdir="$VM_ROOT/run/netgpu"
mkdir -p "$sockdir"
sock="$sockdir/vdev-$$.sock"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" "$sock"
}
trap cleanup EXIT

head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$target/debug/netgpu-backend" --listen "127.0.0.1:$port" --executor cpu --token-file "$work/token" \
  > "$work/backend.log" 2>&1 &
pids+=($!)
"$target/debug/netgpu-vdev" --socket "$sock" --backend "127.0.0.1:$port" --token-file "$work/token" \
  > "$work/vdev.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/vdev.log" >&2; vm_die "netgpu-vdev did not create its socket"; }

mkdir -p "$work/payload"
cp "$(dirname "$0")/guest/lib.sh" "$work/payload/lib.sh"
cp "$(dirname "$0")/guest/vdev-enumeration.sh" "$work/payload/run.sh"
"$(dirname "$0")/mkinitramfs.sh" "$work/initrd.cpio.gz" "$work/payload"
device="{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"/run/netgpu/$(basename "$sock")\"}}"
if ! "$(dirname "$0")/run-vm.sh" --initrd "$work/initrd.cpio.gz" --device "$device" --timeout 120 --log "$work/serial.log" > /dev/null; then
  cat "$work/serial.log" >&2
  echo "--- vdev log" >&2; cat "$work/vdev.log" >&2
  echo "--- backend log" >&2; cat "$work/backend.log" >&2
fi
grep '^NETGPU-TEST:' "$work/serial.log" || true
grep -q '^NETGPU-TEST: SUMMARY .* 0 failed' "$work/serial.log"
