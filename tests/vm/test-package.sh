#!/usr/bin/env bash
# Package test: builds netgpu-guest_*.deb, installs it with apt in the Debian trixie chroot
# (the same distribution as the guest kernel), so its postinst builds the module with DKMS
# for the guest kernel; then boots the guest with the module DKMS built and the package's
# user-space parts, and runs the driver test there. Finally removes the package.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
trap 'vm_stop_netgpu; vm_chroot apt-get remove -y -qq netgpu-guest >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# The package gets the debug libcuda.so and netgpu-smi every other test uses: one build of the
# workspace (scripts/build-bins), not a release build of libcuda for this test alone.
"$REPO_ROOT/scripts/build-bins" || vm_die "cannot build libcuda and netgpu-smi (scripts/build-bins)"
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
deb=$("$REPO_ROOT/guest-tools/pkg/build-deb.sh" --libcuda "$target/debug/libcuda.so" \
  --smi "$target/debug/netgpu-smi" --out "$work")
vm_log "built $(basename "$deb")"
mkdir -p "$work/payload"
vm_build_kmod "$work/payload"     # for the self-test binary; the module is replaced below
rm -f "$work/payload/netgpu.ko"

cp "$deb" "$VM_ROOT/tmp/netgpu-guest.deb"
vm_log "apt install ./netgpu-guest.deb in the chroot (DKMS builds for $KVER)"
vm_chroot apt-get install -y -qq /tmp/netgpu-guest.deb > "$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; vm_die "package install failed"; }
rm -f "$VM_ROOT/tmp/netgpu-guest.deb"
ko=$(find "$VM_ROOT/lib/modules/$KVER/updates" -name 'netgpu.ko*' 2>/dev/null | head -n 1)
[ -n "$ko" ] || { cat "$work/install.log" >&2; vm_die "DKMS did not install netgpu.ko for $KVER"; }
case $ko in
  *.xz) vm_chroot xz -dc "${ko#"$VM_ROOT"}" > "$work/payload/netgpu.ko" ;;
  *.zst) vm_die "zstd-compressed module: unsupported by this test" ;;
  *) cp "$ko" "$work/payload/netgpu.ko" ;;
esac
vm_chroot dpkg -L netgpu-guest > "$work/files"
for f in /usr/src/netgpu-*/netgpu.c /usr/lib/udev/rules.d/99-netgpu.rules /usr/include/netgpu/netgpu.h \
  /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/bin/netgpu-smi; do
  grep -q "^${f//\*/.*}\$" "$work/files" || vm_die "package lacks $f"
done
vm_log "package installed; module from DKMS: ${ko#"$VM_ROOT"}"

vm_start_netgpu "$work"
cp "$(dirname "$0")/guest/kmod.sh" "$work/payload/run.sh"
vm_run_payload "$work" "$work/payload"

vm_chroot apt-get remove -y -qq netgpu-guest > "$work/remove.log" 2>&1 \
  || { cat "$work/remove.log" >&2; vm_die "package removal failed"; }
if find "$VM_ROOT/lib/modules/$KVER/updates" -name 'netgpu.ko*' 2>/dev/null | grep -q .; then
  vm_die "package removal left the DKMS module behind"
fi
vm_log "package removed cleanly"
