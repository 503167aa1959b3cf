#!/usr/bin/env bash
# Packaging checks: builds the host .deb from the debug binaries, checks its contents and
# maintainer scripts, and runs `systemd-analyze verify` on the units exactly as shipped (in a
# root made of the package plus this machine's system units; systemd need not be running).
# Any warning from systemd-analyze fails the test. Needs dpkg-deb and systemd-analyze
# (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "FAIL: $*" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-$PWD/target}"
# The debug binaries of this tree (a no-op under scripts/test, which built them already).
scripts/build-bins
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
deb="$(NETGPU_PROFILE=dev NETGPU_NO_BUILD=1 packaging/build-deb.sh "$work/out")"
[ -f "$deb" ] || fail "no .deb built"
contents="$(dpkg-deb -c "$deb")"
for f in ./usr/bin/netgpu-backend ./usr/bin/netgpu-vdev ./usr/bin/netgpuctl \
         ./lib/systemd/system/netgpu-backend.service ./lib/systemd/system/netgpu-vdev@.service \
         ./lib/systemd/system/netgpu-controller.service ./etc/netgpu/backend.toml \
         ./etc/netgpu/vdev.toml ./etc/netgpu/netgpuctl.toml; do
  grep -q " $f\$" <<<"$contents" || fail "$f missing from $deb"
done
[ "$(dpkg-deb -f "$deb" Package)" = netgpu-host ] || fail "package name"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/netgpu/backend.toml || fail "backend.toml is not a conffile"
root="$work/root"
mkdir -p "$root/lib/systemd/system" "$root/etc"
cp -r /lib/systemd/system/. "$root/lib/systemd/system/"
cp /etc/passwd /etc/group "$root/etc/"
dpkg-deb -x "$deb" "$root"
for s in postinst prerm postrm; do
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO "./$s" > "$work/$s"
  sh -n "$work/$s" || fail "$s has a syntax error"
done
out="$(systemd-analyze verify --root="$root" \
  /lib/systemd/system/netgpu-backend.service \
  /lib/systemd/system/netgpu-vdev@vm1.service \
  /lib/systemd/system/netgpu-controller.service 2>&1)" || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned: $out"
# Every ExecStart's options exist in the packaged binary (clap refuses unknown ones before
# it prints --help); %i becomes an instance name, $VDEV_ARGS is empty.
for unit in "$root"/lib/systemd/system/netgpu-*.service; do
  line=$(sed -n 's/^ExecStart=//p' "$unit" | sed 's/%i/vm1/g; s/\$VDEV_ARGS//')
  read -r -a argv <<< "$line"
  "$root${argv[0]}" "${argv[@]:1}" --help > /dev/null 2>"$work/err" \
    || fail "$(basename "$unit"): ExecStart options refused: $(cat "$work/err")"
done
echo "packaging: $(basename "$deb") ok, units verified"
echo "1 passed, 0 failed"
