#!/usr/bin/env bash
# Builds a guest initramfs: busybox-static from the provisioned chroot, an /init that mounts
# the usual filesystems and runs /payload/run.sh, and the payload directory given.
#   tests/vm/mkinitramfs.sh OUT.cpio.gz PAYLOAD_DIR
# Files under PAYLOAD_DIR/.rootfs go to the guest's root instead of /payload (shared
# libraries, the dynamic loader: lib.sh's vm_payload_bin puts them there). Modules in
# PAYLOAD_DIR/modules/*.ko (vm_payload_kmods) are loaded in name order before run.sh.
# The guest prints "NETGPU-VM: booted <kernel>", runs the payload, prints
# "NETGPU-VM: exit <rc>" and powers off. Result lines of the payload's own checks are
# "NETGPU-TEST: PASS|FAIL <name>" and "NETGPU-TEST: SUMMARY <n> passed, <m> failed"
# (tests/vm/guest/lib.sh).
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || vm_die "usage: $0 OUT.cpio.gz PAYLOAD_DIR"
out=$1
payload=$2
[ -d "$payload" ] || vm_die "payload directory $payload does not exist"
[ -x "$VM_ROOT/bin/busybox" ] || vm_die "busybox missing: run tests/vm/provision.sh"

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
chmod 755 "$tree"   # the guest's / (mktemp makes it 0700: no other user could reach anything)
mkdir -p "$tree"/{bin,sbin,dev,proc,sys,tmp,run,etc,payload}
cp "$VM_ROOT/bin/busybox" "$tree/bin/busybox"
ln -s busybox "$tree/bin/sh"
cp -a "$payload/." "$tree/payload/"
# A payload may bring files for the guest's root (e.g. the dynamic loader and libc).
if [ -d "$payload/.rootfs" ]; then
  cp -a "$payload/.rootfs/." "$tree/"
  rm -rf "$tree/payload/.rootfs"
fi
cat > "$tree/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "NETGPU-VM: booted $(uname -r)"
export PATH=/payload/bin:/bin:/sbin
rc=1
for m in /payload/modules/*.ko; do
  [ -f "$m" ] || continue
  insmod "$m" || echo "NETGPU-VM: cannot load $m"
done
if [ -f /payload/run.sh ]; then
  cd /payload && sh ./run.sh
  rc=$?
fi
if [ "$rc" != 0 ]; then
  echo "NETGPU-VM: kernel log (the payload failed)"
  dmesg | tail -n 80
fi
echo "NETGPU-VM: exit $rc"
sync
poweroff -f
INIT
chmod +x "$tree/init"
(cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
