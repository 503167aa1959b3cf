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
