#!/usr/bin/env bash
# Builds netgpu-guest_<version>_amd64.deb: the guest kernel module as DKMS source, its udev
# rule, and (when given) libcuda.so.1 and netgpu-smi.
#   guest-tools/pkg/build-deb.sh [--libcuda FILE] [--smi FILE] [--out DIR]
# Without --libcuda/--smi it builds them (cargo, release) if their crates exist.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$repo/target/deb
libcuda=""
smi=""
while [ $# -gt 0 ]; do
  case $1 in
    --libcuda) libcuda=$2; shift 2 ;;
    --smi) smi=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "build-deb: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
version=$(awk -F'"' '/^version *=/ {print $2; exit}' "$repo/Cargo.toml")
target=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "$libcuda" ] && [ -d "$repo/guest-tools/libcuda" ]; then
  (cd "$repo" && cargo build -q --release -p netgpu-cuda)
  libcuda=$target/release/libcuda.so
fi
if [ -z "$smi" ] && [ -d "$repo/guest-tools/smi" ]; then
  (cd "$repo" && cargo build -q --release -p netgpu-smi)
  smi=$target/release/netgpu-smi
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
src=$stage/usr/src/netgpu-$version
mkdir -p "$src/include/uapi" "$stage/DEBIAN" "$stage/usr/lib/udev/rules.d" "$stage/usr/include/netgpu" \
  "$stage/usr/share/doc/netgpu-guest"
kmod=$repo/guest-tools/kmod
cp "$kmod/netgpu.c" "$kmod/netgpu_abi.h" "$kmod/netgpu_check.h" "$kmod/Makefile" "$src/"
cp "$kmod/include/uapi/netgpu.h" "$src/include/uapi/"
sed "s/@VERSION@/$version/" "$kmod/dkms.conf" > "$src/dkms.conf"
cp "$kmod/99-netgpu.rules" "$stage/usr/lib/udev/rules.d/"
cp "$kmod/include/uapi/netgpu.h" "$kmod/netgpu_abi.h" "$stage/usr/include/netgpu/"
cp "$repo/docs/guest-install.md" "$stage/usr/share/doc/netgpu-guest/README.md"
if [ -n "$libcuda" ]; then
  [ -f "$libcuda" ] || { echo "build-deb: $libcuda not found" >&2; exit 1; }
  mkdir -p "$stage/usr/lib/x86_64-linux-gnu"
  install -m 0644 "$libcuda" "$stage/usr/lib/x86_64-linux-gnu/libcuda.so.1"
  ln -s libcuda.so.1 "$stage/usr/lib/x86_64-linux-gnu/libcuda.so"
fi
if [ -n "$smi" ]; then
  [ -f "$smi" ] || { echo "build-deb: $smi not found" >&2; exit 1; }
  mkdir -p "$stage/usr/bin"
  install -m 0755 "$smi" "$stage/usr/bin/netgpu-smi"
fi

cat > "$stage/DEBIAN/control" <<CTL
Package: netgpu-guest
Version: $version
Architecture: amd64
Maintainer: netgpu developers <dev@netgpu.invalid>
Depends: dkms, kmod
Conflicts: libcuda1
Provides: libcuda.so.1
Section: misc
Priority: optional
Description: netgpu guest driver: use a network-attached GPU from a VM
 The netgpu virtual GPU's kernel module (built by DKMS for every installed kernel),
 its udev rule, a libcuda.so.1 that runs CUDA driver-API programs on the remote GPU,
 and netgpu-smi.
CTL
cat > "$stage/DEBIAN/postinst" <<POST
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
  dkms add -m netgpu -v $version >/dev/null 2>&1 || true
  for build in /lib/modules/*/build; do
    [ -d "\$build" ] || continue
    kver=\$(basename "\$(dirname "\$build")")
    dkms install -m netgpu -v $version -k "\$kver" || echo "netgpu: DKMS build for \$kver failed; see /var/lib/dkms/netgpu/$version/build/make.log" >&2
  done
  if command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
    udevadm control --reload-rules || true
    udevadm trigger --subsystem-match=netgpu || true
  fi
  ldconfig
  if [ -d "/lib/modules/\$(uname -r)/updates/dkms" ] && [ -z "\${DPKG_ROOT:-}" ]; then
    modprobe netgpu 2>/dev/null || true
  fi
fi
POST
cat > "$stage/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = upgrade ]; then
  rmmod netgpu 2>/dev/null || true
  dkms remove -m netgpu -v $version --all >/dev/null 2>&1 || true
fi
PRERM
cat > "$stage/DEBIAN/postrm" <<POSTRM
#!/bin/sh
set -e
[ "\$1" = remove ] && ldconfig || true
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb=$out/netgpu-guest_${version}_amd64.deb
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
