#!/usr/bin/env bash
# Boots the guest kernel under QEMU 11 (TCG) from the provisioned chroot with an initramfs,
# prints the serial console, and fails unless the guest reported "NETGPU-VM: exit 0".
#   tests/vm/run-vm.sh --initrd FILE [--device JSON]... [--timeout SECONDS] [--log FILE] [--mem MiB]
# vfio-user sockets must live under $VM_ROOT/run/netgpu (QEMU runs inside the chroot and sees
# them as /run/netgpu/...).
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

initrd=""; timeout_s=120; log=""; mem=512; devices=()
while [ $# -gt 0 ]; do
  case $1 in
    --initrd) initrd=$2; shift 2 ;;
    --device) devices+=(-device "$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    *) vm_die "unknown argument $1" ;;
  esac
done
[ -f "$initrd" ] || vm_die "--initrd FILE is required"
vm_load_env
[ -n "$log" ] || log=$(mktemp)

inside=/tmp/netgpu-initrd-$$.cpio.gz
cp "$initrd" "$VM_ROOT$inside"
cleanup() { rm -f "$VM_ROOT$inside"; vm_umount; }
trap cleanup EXIT
vm_mount

set +e
timeout --kill-after=5 "$timeout_s" chroot "$VM_ROOT" qemu-system-x86_64 \
  -accel tcg -cpu max -smp 1 -m "$mem" \
  -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -machine q35,memory-backend=mem \
  -kernel "$VM_KERNEL" -initrd "$inside" \
  -append "console=ttyS0 panic=-1 loglevel=4" \
  -nographic -no-reboot -nic none "${devices[@]}" < /dev/null 2>&1 | tee "$log"
qemu_rc=${PIPESTATUS[0]}
set -e
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  vm_die "guest timed out after ${timeout_s}s (log: $log)"
fi
grep -q '^NETGPU-VM: exit 0' "$log" || vm_die "guest did not finish cleanly (qemu exit $qemu_rc, log: $log)"
