#!/usr/bin/env bash
# Boots the guest kernel under QEMU 11 (TCG) from the provisioned chroot with an initramfs
# (tests/vm/mkinitramfs.sh), copies the serial console to stdout and --log, and fails unless
# the guest reported "NETGPU-VM: exit 0" in time.
#   tests/vm/run-vm.sh --initrd FILE [--device JSON]... [--timeout SECONDS] [--log FILE]
#                      [--mem MiB] [--net] [--hostfwd HOSTPORT:GUESTPORT]... [--append ARGS]
#                      [--pidfile FILE]
#   --device   an extra QEMU -device, e.g. the vfio-user one:
#              '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/netgpu/vm1.sock"}}'
#              QEMU runs inside the chroot: vfio-user sockets must live under
#              $VM_ROOT/run/netgpu (QEMU sees them as /run/netgpu/...).
#   --net      a virtio-net NIC on QEMU's user-mode network (slirp): the guest is 10.0.2.15 and
#              reaches the host's 127.0.0.1:PORT as 10.0.2.2:PORT (guest lib.sh: net_up).
#   --hostfwd  forwards the host's 127.0.0.1:HOSTPORT to the guest's GUESTPORT (implies --net).
#   --pidfile  QEMU writes its pid (as the host sees it) to FILE once it runs.
# Exit status: 0 guest ran its payload and it exited 0; 1 it failed or did not finish;
# 124 timeout.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

initrd=""; timeout_s=120; log=""; mem=512; devices=(); net=0; fwds=""; append=""; pidfile=""
while [ $# -gt 0 ]; do
  case $1 in
    --initrd) initrd=$2; shift 2 ;;
    --device) devices+=(-device "$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --net) net=1; shift ;;
    --hostfwd) net=1; fwds="$fwds,hostfwd=tcp:127.0.0.1:${2%%:*}-:${2#*:}"; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --pidfile) pidfile=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) vm_die "unknown argument $1 (see --help)" ;;
  esac
done
[ -f "$initrd" ] || vm_die "--initrd FILE is required (build one with tests/vm/mkinitramfs.sh)"
vm_load_env
[ -n "$log" ] || log=$(mktemp)
nic=(-nic none)
if [ "$net" = 1 ]; then
  nic=(-nic "user,model=virtio-net-pci$fwds")
fi

inside=/tmp/netgpu-initrd-$$.cpio.gz
cp "$initrd" "$VM_ROOT$inside"
pidopt=()
if [ -n "$pidfile" ]; then
  rm -f "$pidfile" "$VM_ROOT/tmp/netgpu-qemu-$$.pid"
  pidopt=(-pidfile "/tmp/netgpu-qemu-$$.pid")
  # QEMU writes the pid inside the chroot; same pid namespace, so it is the host's pid.
  ( for _ in $(seq 600); do
      if [ -s "$VM_ROOT/tmp/netgpu-qemu-$$.pid" ]; then cp "$VM_ROOT/tmp/netgpu-qemu-$$.pid" "$pidfile"; exit 0; fi
      sleep 0.05
    done ) &
fi
trap 'rm -f "$VM_ROOT$inside" "$VM_ROOT/tmp/netgpu-qemu-$$.pid"' EXIT

start=$SECONDS
# no_timer_check: the IO-APIC timer check can stall a TCG guest on a loaded host for minutes
# ("MP-BIOS bug: 8254 timer not connected"); QEMU's timer needs no check.
set +e
timeout --kill-after=5 "$timeout_s" "${VM_CHROOT[@]}" qemu-system-x86_64 \
  -accel tcg -cpu max -smp 1 -m "$mem" \
  -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -machine q35,memory-backend=mem \
  -kernel "$VM_KERNEL" -initrd "$inside" \
  -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check $append" \
  -nographic -no-reboot "${nic[@]}" "${devices[@]}" "${pidopt[@]}" < /dev/null 2>&1 | tee "$log"
qemu_rc=${PIPESTATUS[0]}
set -e
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  vm_log "guest timed out after ${timeout_s}s (log: $log)"
  exit 124
fi
grep -q '^NETGPU-VM: exit 0' "$log" \
  || vm_die "guest did not finish cleanly (qemu exit $qemu_rc, log: $log)"
vm_log "guest ran in $((SECONDS - start)) s"
