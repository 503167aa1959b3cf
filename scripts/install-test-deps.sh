#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond Rust and gcc, only if missing:
#   etcd-server        a real etcd for the control-plane tests (started on 127.0.0.1 by the tests)
#   protobuf-compiler  protoc, which the etcd-client crate's build script runs
#   systemd            systemd-analyze, which verifies the packaged units (systemd need not run)
# Runs as root (CI and the developer machines are root); apt-get update only when needed.
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
if [ ${#need[@]} -eq 0 ]; then
  echo "all present (etcd, protoc, systemd-analyze, dpkg-deb)"
  exit 0
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${need[@]}" >/tmp/netgpu-apt.log 2>&1; then
  apt-get update >>/tmp/netgpu-apt.log 2>&1
  apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/netgpu-apt.log 2>&1 || {
    tail -20 /tmp/netgpu-apt.log; exit 1; }
fi
# Debian's etcd-server package may start a service where systemd runs; the tests start their own.
