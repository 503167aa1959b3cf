#!/usr/bin/env bash
# Builds netgpu-host_VERSION_amd64.deb: netgpu-backend, netgpu-vdev, netgpuctl, the systemd
# units (netgpu-backend.service, netgpu-vdev@.service, netgpu-controller.service) and the
# configuration files under /etc/netgpu (conffiles: upgrades keep the operator's edits).
#
#   packaging/build-deb.sh [OUTDIR]          release build (default OUTDIR: target/deb)
#   NETGPU_PROFILE=dev packaging/build-deb.sh   from a debug build (the tests use this)
#   NETGPU_NO_BUILD=1 ...                    package what is already built
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${NETGPU_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
case "$profile" in dev) bindir="$target/debug" ;; *) bindir="$target/$profile" ;; esac
out="${1:-$target/deb}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"

if [ "${NETGPU_NO_BUILD:-0}" != 1 ]; then
  cargo build --profile "$profile" -p netgpu-backend -p netgpu-vdev -p netgpuctl
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/netgpu-host"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
  "$root/etc/netgpu/vdev" "$root/usr/share/doc/netgpu-host"
for b in netgpu-backend netgpu-vdev netgpuctl; do
  [ -x "$bindir/$b" ] || { echo "build-deb: $bindir/$b missing (build first or unset NETGPU_NO_BUILD)" >&2; exit 1; }
  install -m 0755 "$bindir/$b" "$root/usr/bin/$b"
done
install -m 0644 packaging/systemd/*.service "$root/lib/systemd/system/"
install -m 0644 packaging/etc/netgpu/*.toml "$root/etc/netgpu/"
install -m 0644 packaging/etc/netgpu/vdev/example.env "$root/etc/netgpu/vdev/"
for d in operators.md backend.md vdev.md; do
  [ -f "docs/$d" ] && install -m 0644 "docs/$d" "$root/usr/share/doc/netgpu-host/"
done
install -m 0644 qemu-configs/libvirt-domain.xml "$root/usr/share/doc/netgpu-host/"

size_kb="$(du -sk "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<CONTROL
Package: netgpu-host
Version: $version
Architecture: $arch
Maintainer: netgpu developers <netgpu@localhost>
Section: admin
Priority: optional
Installed-Size: $size_kb
Depends: libc6, adduser
Suggests: etcd-server, qemu-system-x86
Description: netgpu GPU host, hypervisor and operator tools
 A VM uses a GPU in another server as if it sat in its own PCIe slot.
 This package has netgpu-backend (GPU hosts), netgpu-vdev (hypervisors, one
 systemd instance per virtual GPU), netgpuctl (pools, hosts, vGPUs) and the
 failover controller, with their systemd units and configuration.
CONTROL
( cd "$root" && find etc -type f | sed 's|^|/|' | sort ) > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd netgpu >/dev/null; then
    adduser --system --group --home /var/lib/netgpu --no-create-home netgpu >/dev/null
  fi
  for g in kvm video render; do
    getent group "$g" >/dev/null && adduser netgpu "$g" >/dev/null 2>&1 || true
  done
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
fi
exit 0
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop netgpu-backend.service netgpu-controller.service 'netgpu-vdev@*.service' >/dev/null 2>&1 || true
fi
exit 0
PRERM
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/netgpu-host_${version}_${arch}.deb"
# Debug builds are large: compress them fast; release packages get xz.
case "$profile" in release) z=(-Zxz) ;; *) z=(-Zgzip -z1) ;; esac
dpkg-deb --root-owner-group "${z[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
