#!/usr/bin/env bash
# Provisions everything the VM tests need, cached under $NETGPU_CACHE/vm (default
# ~/.cache/netgpu/vm); a second run skips finished steps:
#   - a Debian trixie chroot (debootstrap) with QEMU 11 from trixie-backports
#     (Debian 12's QEMU 7.2 has no vfio-user-pci);
#   - the Debian cloud guest kernel (vmlinuz + modules) and its headers, make and gcc, to build
#     the guest kernel module against it;
#   - busybox-static for the guest initramfs.
# The Debian mirror is read from the host's apt sources. Needs root (debootstrap, chroot).
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || vm_die "provisioning needs root (debootstrap and chroot)"
mkdir -p "$VM_DIR"
exec 9>"$VM_DIR/.lock"
flock 9

stamp() { [ -f "$VM_DIR/.done-$1" ]; }
mark() { touch "$VM_DIR/.done-$1"; }
t0=$SECONDS

mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || vm_die "cannot find a Debian mirror in the host's apt sources"
  echo "$m"
}

if ! stamp host-tools; then
  vm_log "installing host tools (debootstrap, cpio)"
  if ! command -v debootstrap >/dev/null || ! command -v cpio >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap cpio >/dev/null \
      || vm_die "cannot install debootstrap and cpio on the host (apt-get); install them and rerun"
  fi
  unshare --mount --propagation private -- true \
    || vm_die "unshare --mount failed: the VM tests need root with mount rights (CAP_SYS_ADMIN)"
  mark host-tools
fi

MIRROR=$(mirror)
if ! stamp debootstrap; then
  vm_log "debootstrap trixie from $MIRROR (about 20-60 s)"
  for d in proc dev sys; do   # mounts left by versions of these scripts before vm_chroot
    if mountpoint -q "$VM_ROOT/$d"; then umount -l "$VM_ROOT/$d"; fi
  done
  rm -rf "$VM_ROOT"
  debootstrap --variant=minbase trixie "$VM_ROOT" "$MIRROR" > "$VM_DIR/debootstrap.log" 2>&1 \
    || vm_die "debootstrap failed; see $VM_DIR/debootstrap.log"
  mark debootstrap
fi

if ! stamp sources; then
  cat > "$VM_ROOT/etc/apt/sources.list.d/trixie.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: trixie trixie-updates trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f "$VM_ROOT/etc/apt/sources.list"
  mark sources
fi

if ! stamp packages; then
  vm_log "installing QEMU 11 (trixie-backports), busybox, build tools in the chroot (a few minutes)"
  vm_chroot apt-get update -qq
  vm_chroot apt-get install -y -qq --no-install-recommends -t trixie-backports \
    qemu-system-x86 busybox-static cpio make gcc libc6-dev kmod > "$VM_DIR/apt.log" 2>&1 \
    || vm_die "apt-get install in the chroot failed; see $VM_DIR/apt.log"
  mark packages
fi

if ! stamp dkms; then
  vm_log "installing dkms in the chroot (package install test)"
  vm_chroot apt-get install -y -qq --no-install-recommends -t trixie-backports dkms xz-utils \
    >> "$VM_DIR/apt.log" 2>&1 || vm_die "cannot install dkms; see $VM_DIR/apt.log"
  mark dkms
fi

if ! stamp kernel; then
  kpkg=$(vm_chroot apt-cache search --names-only '^linux-image-6\.12\.[0-9a-z.+~-]*-cloud-amd64-unsigned$' \
    | awk '{print $1}' | sort -V | tail -n 1)
  [ -n "$kpkg" ] || vm_die "no linux-image-6.12.*-cloud-amd64-unsigned package found in trixie"
  kver=${kpkg#linux-image-}
  kver=${kver%-unsigned}
  vm_log "guest kernel $kver: image and headers"
  vm_chroot sh -c "cd /tmp && rm -f linux-image-*.deb && apt-get download -qq $kpkg" \
    || vm_die "cannot download $kpkg"
  rm -rf "$VM_ROOT/guest-kernel"
  mkdir -p "$VM_ROOT/guest-kernel"
  vm_chroot sh -c "dpkg -x /tmp/$kpkg*.deb /guest-kernel && rm -f /tmp/$kpkg*.deb"
  vm_chroot apt-get install -y -qq --no-install-recommends -t trixie-backports \
    "linux-headers-$kver" >> "$VM_DIR/apt.log" 2>&1 \
    || vm_die "cannot install linux-headers-$kver; see $VM_DIR/apt.log"
  echo "$kver" > "$VM_DIR/kernel-version"
  mark kernel
fi

if [ ! -f "$VM_DIR/kernel-version" ] && [ -f "$VM_ENV" ]; then   # caches made before kernel-version
  sed -n 's/^KVER=//p' "$VM_ENV" > "$VM_DIR/kernel-version"
fi
kver=$(cat "$VM_DIR/kernel-version")
if ! stamp depmod; then
  # The image was unpacked with dpkg -x, which runs no depmod: make modules.dep so tests can
  # resolve guest modules and their dependencies (vm_payload_kmods).
  vm_log "depmod for the guest kernel's modules"
  vm_chroot depmod -b /guest-kernel/usr "$kver" || vm_die "depmod failed for $kver"
  mark depmod
fi

# The environment file other scripts source (written every run: cheap, and never stale).
cat > "$VM_ENV.tmp" <<ENV
# Written by tests/vm/provision.sh. Paths inside the chroot unless they start with \$VM_ROOT.
KVER=$kver
VM_ROOT=$VM_ROOT
VM_KERNEL=/guest-kernel/boot/vmlinuz-$kver
VM_MODBASE=/guest-kernel/usr
VM_MODULES=/guest-kernel/usr/lib/modules/$kver
VM_KBUILD=/usr/src/linux-headers-$kver
VM_BUSYBOX=/bin/busybox
VM_SOCKET_DIR=/run/netgpu
ENV
mv "$VM_ENV.tmp" "$VM_ENV"

vm_load_env
[ -f "$VM_ROOT$VM_KERNEL" ] || vm_die "kernel image missing at $VM_ROOT$VM_KERNEL; delete $VM_DIR/.done-kernel and rerun"
[ -d "$VM_ROOT$VM_MODULES/kernel" ] || vm_die "guest modules missing at $VM_ROOT$VM_MODULES; delete $VM_DIR/.done-kernel and rerun"
vm_log "ready in $((SECONDS - t0)) s: QEMU $(vm_chroot qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), guest kernel $KVER"
# What other scripts need, as host paths (source $VM_ENV for the in-chroot ones).
cat <<OUT
VM_ENV=$VM_ENV
VM_ROOT=$VM_ROOT
kernel: $VM_ROOT$VM_KERNEL
headers: $VM_ROOT$VM_KBUILD
vfio-user sockets: $VM_ROOT$VM_SOCKET_DIR (QEMU sees $VM_SOCKET_DIR)
OUT
