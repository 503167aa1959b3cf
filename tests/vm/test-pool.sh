#!/usr/bin/env bash
# The pool end to end with a real guest: a real etcd on 127.0.0.1 (NETGPU_POOL_STORE=file:
# the file store instead), three CPU-executor backends registered in it, the failover
# controller, a vGPU created with netgpuctl and served by `netgpu-vdev --vgpu`. The guest runs
# a CUDA program, then the GPU host of its vGPU is killed (SIGKILL): the running call must
# fail with a CUDA error, the controller re-places the vGPU after lease TTL + grace, and the
# guest's next CUDA program runs on the new host without a VM reboot and without any device
# reset (a new process's queue opens its session at the new placement).
set -euo pipefail
# shellcheck shell=bash source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
work=$(mktemp -d)
pids=()
cleanup() {
  local st=$?
  kill "${watcher:-}" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Every process the test started names its store: none may outlive the test (a controller
  # started through a shell function once did: `$!` was the subshell's pid, not netgpuctl's).
  if [ -n "${store:-}" ] && left=$(pgrep -a -f -- "--store $store( |$)"); then
    printf 'test-pool: left running after the test:\n%s\n' "$left" >&2
    pkill -9 -f -- "--store $store( |$)" || true
    st=1
  fi
  rm -rf "$work" "${sock:-}"
  exit "$st"
}
trap cleanup EXIT
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
inc=$("$REPO_ROOT/scripts/fetch-cuda-headers.sh")
(cd "$REPO_ROOT" && cargo build -q -p netgpu-cuda -p netgpu-backend -p netgpu-vdev -p netgpuctl) \
  || vm_die "cargo build failed"

# Guest payload: the kernel module, libcuda.so.1, two C programs built against the guest's libc.
payload=$work/payload
mkdir -p "$payload/lib"
vm_build_kmod "$payload"
rm -f "$payload/netgpu-selftest"
cp "$target/debug/libcuda.so" "$payload/lib/libcuda.so.1"
vm_build_cuda_programs "$payload" "$inc" vector_add backend_lost

# The store.
if [ "${NETGPU_POOL_STORE:-etcd}" = file ]; then
  store="file://$work/store"
else
  command -v etcd >/dev/null || "$REPO_ROOT/scripts/install-test-deps.sh"
  cport=$(free_port); pport=$(free_port)
  etcd --name pool-test --data-dir "$work/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "pool-test=http://127.0.0.1:$pport" > "$work/etcd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$cport/health" 2>/dev/null | grep -q '"true"' && break
    sleep 0.2
  done
  store="etcd://127.0.0.1:$cport"
fi
ctl() { "$target/debug/netgpuctl" --store "$store" "$@"; }
vm_log "store $store"

# Three GPU hosts.
declare -A backend_pid backend_metrics
for i in 0 1 2; do
  port=$(free_port)
  backend_metrics[gpu-$i]="127.0.0.1:$(free_port)"
  cat > "$work/backend-$i.toml" <<TOML
listen = "127.0.0.1:$port"
insecure_plain_loopback = true
executor = "cpu"
[metrics]
listen = "${backend_metrics[gpu-$i]}"
[cpu]
total_memory = "2GiB"
[pool]
store = "$store"
name = "gpu-$i"
lease_ttl_s = 2
TOML
  "$target/debug/netgpu-backend" --config "$work/backend-$i.toml" > "$work/backend-$i.log" 2>&1 &
  backend_pid[gpu-$i]=$!
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$(ctl --json host list 2>/dev/null | python3 -c 'import json,sys; print(sum(h["up"] for h in json.load(sys.stdin)))' 2>/dev/null)" = 3 ] && break
  sleep 0.2
done
ctl host list
# The binary itself, not through `ctl`: `$!` must be netgpuctl's pid for cleanup to stop it.
"$target/debug/netgpuctl" --store "$store" controller --interval 200ms > "$work/controller.log" 2>&1 &
pids+=($!)
ctl pool create p --failover-grace 1s > /dev/null
ctl vgpu create vm1 --pool p --memory 1GiB --tenant test --socket-dir /run/netgpu
first=$(ctl --json vgpu show vm1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["vgpu"]["placement"]["host"])')
vm_log "vm1 placed on $first"

mkdir -p "$VM_ROOT/run/netgpu"
sock="$VM_ROOT/run/netgpu/pool-$$.sock"
# device resets are logged at debug: the test checks the guest recovered without one.
vdev_metrics="127.0.0.1:$(free_port)"
RUST_LOG=info,netgpu_vdev::device=debug \
  "$target/debug/netgpu-vdev" --socket "$sock" --vgpu vm1 --store "$store" \
  --metrics-listen "$vdev_metrics" > "$work/vdev.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/vdev.log" >&2; vm_die "netgpu-vdev did not create its socket"; }
NETGPU_DEVICE_JSON="{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"/run/netgpu/$(basename "$sock")\"}}"

# Kill the vGPU's host when the guest asks (its backend_lost program is mid-run).
(
  for _ in $(seq 3000); do
    if grep -q '^NETGPU-HOST: kill-gpu-host' "$work/serial.log" 2>/dev/null; then
      grep -c "device reset" "$work/vdev.log" > "$work/resets-before" || true
      kill -9 "${backend_pid[$first]}"
      # vdev's /metrics shows the vGPU disconnected while its host is gone.
      for _ in $(seq 200); do
        if curl -fs "http://$vdev_metrics/metrics" 2>/dev/null \
            | grep -qF 'netgpu_vgpu_connected{vgpu="vm1",Hostname=""} 0'; then
          touch "$work/connected-dropped"; break
        fi
        sleep 0.05
      done
      exit 0
    fi
    sleep 0.1
  done
) &
watcher=$!
cp "$(dirname "$0")/guest/pool.sh" "$payload/run.sh"
rc=0
VM_TIMEOUT=300 vm_run_payload "$work" "$payload" || rc=1
# The host side of the story.
tr -d '\r' < "$work/serial.log" | grep -E "recovered without|link state" || true
ctl vgpu list
ctl events --limit 20
now=$(ctl --json vgpu show vm1 | python3 -c 'import json,sys; p=json.load(sys.stdin)["vgpu"]["placement"]; print(p["host"], p["generation"])')
read -r host gen <<< "$now"
if [ "$host" = "$first" ] || [ "$gen" != 2 ]; then
  echo "vm1 should be re-placed once, off $first: now on $host, generation $gen" >&2; rc=1
fi
if ! grep -q "session open" "$work/backend-${host#gpu-}.log"; then
  echo "the new host $host never served vm1" >&2; tail -20 "$work/backend-${host#gpu-}.log" >&2; rc=1
fi
ctl events | grep -q "Failover .*vgpu/vm1" || { echo "no Failover event" >&2; rc=1; }
# vdev's metrics: its quota, a session opened, one move followed.
vm=$(curl -fs "http://$vdev_metrics/metrics" || true)
for want in 'netgpu_vgpu_memory_quota_bytes{vgpu="vm1",Hostname=""} 1073741824' \
  'netgpu_vgpu_connected{vgpu="vm1",Hostname=""} 1' 'netgpu_vgpu_reconnects_total{vgpu="vm1",Hostname=""} 1'; do
  grep -qF "$want" <<< "$vm" || { echo "vdev /metrics lacks: $want" >&2; echo "$vm" | grep netgpu_vgpu >&2; rc=1; }
done
[ -e "$work/connected-dropped" ] || { echo "vdev /metrics never showed vm1 disconnected after its host was killed" >&2; rc=1; }
# The new host's metrics: the guest's kernels under the vGPU's name, from its grant.
bm=$(curl -fs "http://${backend_metrics[$host]}/metrics" || true)
if ! grep -qE '^netgpu_kernels_total\{vgpu="vm1",op="LaunchKernel"\} [1-9]' <<< "$bm"; then
  echo "the new host's /metrics has no kernels of vm1:" >&2; grep -E "kernels|vgpu=" <<< "$bm" | head >&2; rc=1
fi
resets_after=$(grep -c "device reset" "$work/vdev.log" || true)
if [ "$(cat "$work/resets-before" 2>/dev/null)" != "$resets_after" ]; then
  echo "the device was reset after the host was lost ($(cat "$work/resets-before" 2>/dev/null) resets before, $resets_after after): recovery must not need one" >&2
  rc=1
fi
[ $rc -eq 0 ] || { echo "--- vdev"; tail -30 "$work/vdev.log"; echo "--- controller"; tail -20 "$work/controller.log"; } >&2
exit $rc
