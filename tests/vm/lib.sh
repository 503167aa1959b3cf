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

# Runs a command inside the chroot. Each call gets a private mount namespace in which
# /proc, /dev and /sys are bind-mounted: the mounts vanish with the command (even when it is
# killed), never show on the host, and concurrent runs cannot unmount each other's.
# "${VM_CHROOT[@]}" is the same as a command prefix (for timeout(1) and the like).
# shellcheck disable=SC2016  # the script is expanded by the inner sh
VM_CHROOT=(unshare --mount --propagation private -- /bin/sh -c '
root=$1; shift
mount --bind /proc "$root/proc" && mount --rbind /dev "$root/dev" && mount --rbind /sys "$root/sys" \
  || { echo "[vm] error: cannot bind-mount /proc, /dev, /sys into $root (need root)" >&2; exit 125; }
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"' netgpu-chroot "$VM_ROOT")

vm_chroot() {
  "${VM_CHROOT[@]}" "$@"
}

# Kept for scripts written against the old persistent mounts: chroot commands now mount what
# they need privately (vm_chroot), so there is nothing to set up or tear down.
vm_mount() { :; }
vm_umount() { :; }

# Copies guest kernel modules (names, e.g. virtio_net) and everything they depend on,
# decompressed, into $1/modules/ as NN-name.ko; the guest /init loads them in that order.
vm_payload_kmods() {
  local payload=$1 mod line path n
  shift
  mkdir -p "$payload/modules"
  n=$(find "$payload/modules" -name '*.ko' | wc -l)
  for mod in "$@"; do
    while read -r line; do
      case $line in
        insmod\ *) path=${line#insmod }; path=${path%% *} ;;
        *) continue ;;   # builtin
      esac
      local base
      base=$(basename "$path"); base=${base%.xz}; base=${base%.zst}; base=${base%.ko}
      if ls "$payload/modules/"*"-$base.ko" >/dev/null 2>&1; then continue; fi
      n=$((n + 1))
      case $path in
        *.xz) vm_chroot xz -dc "$path" ;;
        *.zst) vm_chroot zstd -dc "$path" ;;
        *) cat "$VM_ROOT$path" ;;
      esac > "$payload/modules/$(printf '%02d' "$n")-$base.ko"
    done < <(vm_chroot modprobe -d "$VM_MODBASE" -S "$KVER" --show-depends "$mod" \
      || vm_die "guest kernel module $mod not found")
  done
}

# Copies binaries into $1/bin and the shared libraries they need (ldd) into $1/.rootfs, at
# the same paths, so the guest's dynamic loader finds them. A file under $VM_ROOT is resolved
# against the chroot's libraries (the guest's distribution), any other against the host's.
vm_payload_bin() {
  local payload=$1 f lib
  shift
  mkdir -p "$payload/bin" "$payload/.rootfs"
  for f in "$@"; do
    [ -f "$f" ] || vm_die "vm_payload_bin: $f does not exist"
    cp "$f" "$payload/bin/"
    local libs
    case $f in
      "$VM_ROOT"/*) libs=$(vm_chroot ldd "${f#"$VM_ROOT"}" 2>/dev/null || true) ;;
      *) libs=$(ldd "$f" 2>/dev/null || true) ;;
    esac
    for lib in $(printf '%s\n' "$libs" | grep -o '/[^ ]*'); do
      case $f in
        "$VM_ROOT"/*) lib=$VM_ROOT$lib ;;
      esac
      local dest=$payload/.rootfs/${lib#"$VM_ROOT"}
      mkdir -p "$(dirname "$dest")"
      [ -e "$dest" ] || cp -L "$lib" "$dest"
    done
  done
}

# Starts a CPU-executor netgpu-backend on 127.0.0.1 and a netgpu-vdev connected to it, with
# logs and token under $1 ($NETGPU_VDEV_ARGS: extra vdev arguments, e.g. "--memory 1GiB";
# $NETGPU_VM_BIN_DIR: use the binaries under that target directory instead of building;
# $NETGPU_BACKEND_ARGS: the backend's security arguments instead of the plain default
# "--insecure-plain-loopback --token-file $1/token", e.g. "--config FILE" with a [tls] section).
# Sets NETGPU_DEVICE_JSON (the QEMU -device argument) and
# NETGPU_PIDS; vm_stop_netgpu stops them.
vm_start_netgpu() {
  local work=$1 target port sock
  target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
  if [ -n "${NETGPU_VM_BIN_DIR:-}" ]; then
    # Binaries built elsewhere (e.g. another branch's vdev): $NETGPU_VM_BIN_DIR/debug/...
    target=$NETGPU_VM_BIN_DIR
    vm_log "using netgpu-backend and netgpu-vdev from $target"
  else
    vm_log "building netgpu-backend and netgpu-vdev"
    "$REPO_ROOT/scripts/build-bins" || vm_die "cargo build failed (scripts/build-bins)"
  fi
  mkdir -p "$VM_ROOT/run/netgpu"
  sock="$VM_ROOT/run/netgpu/vdev-$$.sock"
  NETGPU_SOCK=$sock
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  NETGPU_BACKEND_ADDR="127.0.0.1:$port"
  local security=(--insecure-plain-loopback --token-file "$work/token")
  if [ -n "${NETGPU_BACKEND_ARGS:-}" ]; then read -r -a security <<< "$NETGPU_BACKEND_ARGS"; fi
  "$target/debug/netgpu-backend" --listen "$NETGPU_BACKEND_ADDR" --executor cpu "${security[@]}" \
    > "$work/backend.log" 2>&1 &
  NETGPU_BACKEND_PID=$!
  # A test may put something between vdev and the backend: vm_hook_backend_started (defined by
  # the test) runs here and may set NETGPU_VDEV_BACKEND_ADDR, where vdev connects instead.
  if declare -F vm_hook_backend_started > /dev/null; then vm_hook_backend_started "$work"; fi
  local extra=()
  if [ -n "${NETGPU_VDEV_ARGS:-}" ]; then read -r -a extra <<< "$NETGPU_VDEV_ARGS"; fi
  "$target/debug/netgpu-vdev" --socket "$sock" --backend "${NETGPU_VDEV_BACKEND_ADDR:-$NETGPU_BACKEND_ADDR}" \
    --token-file "$work/token" "${extra[@]}" > "$work/vdev.log" 2>&1 &
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

# Builds tests/cuda/NAME.c for each NAME (or the file, for an argument that is a path to a
# .c file) in the chroot (the guest's libc) against cuda.h in $2 and the libcuda.so.1
# already in $1/lib, into $1; copies tests/kernels/vector_add.ptx to
# $1/kernels and the guest's dynamic loader and libraries into $1/.rootfs. Builds in
# $VM_ROOT/build/cuda-progs-$$ (removed afterwards).
vm_build_cuda_programs() {
  local payload=$1 inc=$2 b="/build/cuda-progs-$$" n
  shift 2
  mkdir -p "$payload/kernels" "$payload/.rootfs/lib64" "$payload/.rootfs/lib/x86_64-linux-gnu"
  mkdir -p "$VM_ROOT$b/include" "$VM_ROOT$b/lib"
  cp -r "$inc/." "$VM_ROOT$b/include/"
  cp "$REPO_ROOT/tests/cuda/common.h" "$VM_ROOT$b/"
  cp "$payload/lib/libcuda.so.1" "$VM_ROOT$b/lib/libcuda.so"
  for n in "$@"; do
    case $n in
      */*.c) cp "$n" "$VM_ROOT$b/"; n=$(basename "$n" .c) ;;
      *) cp "$REPO_ROOT/tests/cuda/$n.c" "$VM_ROOT$b/" ;;
    esac
    vm_chroot gcc -O1 -Wall -Werror -I"$b/include" -o "$b/$n" "$b/$n.c" -L"$b/lib" -lcuda -lm \
      || vm_die "cannot build $n.c in the guest environment"
    cp "$VM_ROOT$b/$n" "$payload/"
  done
  rm -rf "${VM_ROOT:?}$b"
  cp "$REPO_ROOT/tests/kernels/vector_add.ptx" "$payload/kernels/"
  cp "$VM_ROOT/lib64/ld-linux-x86-64.so.2" "$payload/.rootfs/lib64/"
  for n in libc.so.6 libm.so.6 libgcc_s.so.1; do
    cp -L "$VM_ROOT/lib/x86_64-linux-gnu/$n" "$payload/.rootfs/lib/x86_64-linux-gnu/"
  done
}

# Builds the guest kernel module and its static test programs in the chroot against the
# guest kernel's headers; copies netgpu.ko and the programs (every
# guest-tools/kmod/tests/netgpu-*.c: netgpu-selftest, netgpu-stress, netgpu-mt, ...) into $1.
vm_build_kmod() {
  local out=$1 b="/build/kmod-$$"
  rm -rf "$VM_ROOT$b"
  mkdir -p "$VM_ROOT/build"
  cp -r "$REPO_ROOT/guest-tools/kmod" "$VM_ROOT$b"
  vm_chroot make -s -C "$b" KDIR="$VM_KBUILD" W=1 > "$out/kmod-build.log" 2>&1 \
    || { cat "$out/kmod-build.log" >&2; vm_die "kernel module build failed"; }
  if grep -q 'warning:' "$out/kmod-build.log"; then
    cat "$out/kmod-build.log" >&2; vm_die "kernel module build has warnings"
  fi
  local src t
  for src in "$VM_ROOT$b"/tests/netgpu-*.c; do
    t=$(basename "$src" .c)
    vm_chroot gcc -O2 -Wall -Werror -static -pthread -o "$b/$t" "$b/tests/$t.c" \
      >> "$out/kmod-build.log" 2>&1 || { cat "$out/kmod-build.log" >&2; vm_die "$t build failed"; }
    cp "$VM_ROOT$b/$t" "$out/"
  done
  cp "$VM_ROOT$b/netgpu.ko" "$out/"
  rm -rf "$VM_ROOT$b"
}

# Prints the guest's result lines from serial log $1; succeeds when its summary says 0 failed.
vm_results() {
  tr -d '\r' < "$1" | grep '^NETGPU-TEST:' || true
  tr -d '\r' < "$1" | grep -q '^NETGPU-TEST: SUMMARY [0-9]* passed, 0 failed$'
}

# Boots the guest with payload directory $2 (its run.sh runs in the guest) and the netgpu
# device attached; serial log in $1/serial.log. Fails unless the guest summary has 0 failed.
# $VM_TIMEOUT: seconds (180); $VM_APPEND: extra kernel command line (e.g. slub_debug=FZPU);
# $VM_KEEP_LOG: a file to copy the serial log to; $VM_EXTRA_DEVICES: more QEMU -device JSON
# arguments, separated by spaces (after the netgpu device, so it stays netgpu0).
vm_run_payload() {
  local work=$1 payload=$2 d extra=()
  for d in ${VM_EXTRA_DEVICES:-}; do extra+=(--device "$d"); done
  cp "$(dirname "${BASH_SOURCE[0]}")/guest/lib.sh" "$payload/lib.sh"
  "$(dirname "${BASH_SOURCE[0]}")/mkinitramfs.sh" "$work/initrd.cpio.gz" "$payload"
  if ! "$(dirname "${BASH_SOURCE[0]}")/run-vm.sh" --initrd "$work/initrd.cpio.gz" \
      --device "$NETGPU_DEVICE_JSON" "${extra[@]}" --timeout "${VM_TIMEOUT:-180}" --log "$work/serial.log" \
      --append "${VM_APPEND:-}" > /dev/null; then
    cat "$work/serial.log" >&2
    echo "--- vdev log" >&2; tail -n 40 "$work/vdev.log" >&2
    echo "--- backend log" >&2; tail -n 40 "$work/backend.log" >&2
  fi
  if [ -n "${VM_KEEP_LOG:-}" ]; then cp "$work/serial.log" "$VM_KEEP_LOG"; fi
  vm_results "$work/serial.log"
}
