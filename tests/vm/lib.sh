# shellcheck shell=bash
# Shared helpers for the VM tests: paths of the provisioned environment, chroot mounts, and
# result parsing. Source it; do not run it.

NETGPU_CACHE="${NETGPU_CACHE:-$HOME/.cache/netgpu}"
VM_DIR="$NETGPU_CACHE/vm"
VM_ROOT="$VM_DIR/root"
VM_ENV="$VM_DIR/vm.env"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

vm_log() { printf '[vm] %s\n' "$*" >&2; }
vm_die() { printf '[vm] error: %s\n' "$*" >&2; exit 1; }

# Loads the paths the provisioning step wrote (KVER, VM_KERNEL, ...).
vm_load_env() {
  [ -f "$VM_ENV" ] || vm_die "VM environment not provisioned: run tests/vm/provision.sh"
  # shellcheck disable=SC1090
  . "$VM_ENV"
}

# Bind-mounts /proc, /dev and /sys into the chroot (idempotent). The mounts stay until
# vm_umount; callers pair them with a trap.
vm_mount() {
  local d
  for d in proc dev sys; do
    mkdir -p "$VM_ROOT/$d"
    mountpoint -q "$VM_ROOT/$d" || mount --bind "/$d" "$VM_ROOT/$d"
  done
}

vm_umount() {
  local d
  for d in sys dev proc; do
    mountpoint -q "$VM_ROOT/$d" && umount -l "$VM_ROOT/$d" || true
  done
}

vm_chroot() {
  chroot "$VM_ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# Starts a CPU-executor netgpu-backend on 127.0.0.1 and a netgpu-vdev connected to it, with
# logs and token under $1. Sets NETGPU_DEVICE_JSON (the QEMU -device argument) and
# NETGPU_PIDS; vm_stop_netgpu stops them.
vm_start_netgpu() {
  local work=$1 target port sock
  target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
  vm_log "building netgpu-backend and netgpu-vdev"
  (cd "$REPO_ROOT" && cargo build -q -p netgpu-backend -p netgpu-vdev) || vm_die "cargo build failed"
  mkdir -p "$VM_ROOT/run/netgpu"
  sock="$VM_ROOT/run/netgpu/vdev-$$.sock"
  NETGPU_SOCK=$sock
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  NETGPU_BACKEND_ADDR="127.0.0.1:$port"
  "$target/debug/netgpu-backend" --listen "$NETGPU_BACKEND_ADDR" --executor cpu \
    --token-file "$work/token" > "$work/backend.log" 2>&1 &
  NETGPU_BACKEND_PID=$!
  "$target/debug/netgpu-vdev" --socket "$sock" --backend "$NETGPU_BACKEND_ADDR" \
    --token-file "$work/token" > "$work/vdev.log" 2>&1 &
  NETGPU_VDEV_PID=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || { cat "$work/vdev.log" >&2; vm_die "netgpu-vdev did not create its socket"; }
  NETGPU_DEVICE_JSON="{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"/run/netgpu/$(basename "$sock")\"}}"
}

vm_stop_netgpu() {
  kill -TERM "${NETGPU_VDEV_PID:-}" "${NETGPU_BACKEND_PID:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -f "${NETGPU_SOCK:-}"
}

# Builds the guest kernel module and its static self-test in the chroot against the guest
# kernel's headers; copies netgpu.ko and netgpu-selftest into $1.
vm_build_kmod() {
  local out=$1 b="/build/kmod-$$"
  rm -rf "$VM_ROOT$b"
  mkdir -p "$VM_ROOT/build"
  cp -r "$REPO_ROOT/guest-tools/kmod" "$VM_ROOT$b"
  vm_mount
  vm_chroot make -s -C "$b" KDIR="$VM_KBUILD" > "$out/kmod-build.log" 2>&1 \
    || { cat "$out/kmod-build.log" >&2; vm_die "kernel module build failed"; }
  vm_chroot gcc -O2 -Wall -Werror -static -o "$b/netgpu-selftest" "$b/tests/netgpu-selftest.c" \
    >> "$out/kmod-build.log" 2>&1 || { cat "$out/kmod-build.log" >&2; vm_die "selftest build failed"; }
  cp "$VM_ROOT$b/netgpu.ko" "$VM_ROOT$b/netgpu-selftest" "$out/"
  rm -rf "$VM_ROOT$b"
}

# Boots the guest with payload directory $2 (its run.sh runs in the guest) and the netgpu
# device attached; serial log in $1/serial.log. Fails unless the guest summary has 0 failed.
vm_run_payload() {
  local work=$1 payload=$2
  cp "$(dirname "${BASH_SOURCE[0]}")/guest/lib.sh" "$payload/lib.sh"
  "$(dirname "${BASH_SOURCE[0]}")/mkinitramfs.sh" "$work/initrd.cpio.gz" "$payload"
  if ! "$(dirname "${BASH_SOURCE[0]}")/run-vm.sh" --initrd "$work/initrd.cpio.gz" \
      --device "$NETGPU_DEVICE_JSON" --timeout "${VM_TIMEOUT:-180}" --log "$work/serial.log" > /dev/null; then
    cat "$work/serial.log" >&2
    echo "--- vdev log" >&2; tail -n 40 "$work/vdev.log" >&2
    echo "--- backend log" >&2; tail -n 40 "$work/backend.log" >&2
  fi
  grep '^NETGPU-TEST:' "$work/serial.log" || true
  grep -q '^NETGPU-TEST: SUMMARY .* 0 failed' "$work/serial.log"
}
