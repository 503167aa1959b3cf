#!/usr/bin/env bash
# Lifecycle torture of the guest driver with the real vdev and backend (issue 12):
#   tests/vm/test-torture.sh [CYCLES [QEMU_CYCLES]]
# CYCLES (default $NETGPU_TORTURE_CYCLES or 10) cycles each of device reset, process kill
# mid-copy, queue open/close and module reload with files open, in one guest
# (tests/vm/guest/torture.sh); QEMU_CYCLES (default $NETGPU_TORTURE_QEMU_CYCLES or 1) guests
# whose QEMU is killed (SIGKILL) while a process copies through the device. The defaults
# are the CI-sized run; the long run and its figures are in docs/testing.md.
# Afterwards: vdev and the backend are alive, the backend's open sessions are back to 0,
# the backend's free device memory is back to what the first guest saw, and the RSS of vdev
# and the backend are printed against their baselines (after the first guest) and must
# not have grown by more than $NETGPU_TORTURE_RSS_SLACK_KIB (default 65536 KiB).
# $NETGPU_TORTURE_PHASES (default "reset kill openclose reload") picks the guest phases, for a
# long run of one of them. A failed run keeps the backend's, vdev's and the guest's logs under
# $NETGPU_VM_FAILURE_DIR (default ~/.cache/netgpu/vm-failures) and says where.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_load_env
cycles=${1:-${NETGPU_TORTURE_CYCLES:-10}}
qemu_cycles=${2:-${NETGPU_TORTURE_QEMU_CYCLES:-1}}
slack=${NETGPU_TORTURE_RSS_SLACK_KIB:-65536}
work=$(mktemp -d)
trap 'vm_stop_netgpu; rm -rf "$work"' EXIT
here=$(dirname "$0")
mkdir -p "$work/payload"
vm_build_kmod "$work/payload"
cp "$here/guest/lib.sh" "$work/payload/lib.sh"
# No memory quota: MEM_GET_INFO then reports the backend's own free memory.
vm_start_netgpu "$work"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Backend sessions open right now, from its log.
sessions() {
  local o c
  o=$(grep -c 'session open' "$work/backend.log" || true)
  c=$(grep -c 'session closed' "$work/backend.log" || true)
  echo $((o - c))
}
settle_sessions() {   # waits up to 10 s for the backend's open sessions to reach 0
  for _ in $(seq 100); do [ "$(sessions)" = 0 ] && return 0; sleep 0.1; done
  return 1
}
failed=0
result() {   # name ok
  if [ "$2" = 1 ]; then echo "NETGPU-TEST: PASS $1"; else echo "NETGPU-TEST: FAIL $1"; failed=$((failed + 1)); fi
}
t_all=$SECONDS

# QEMU killed mid-stream: the guest copies through the device, the host kills QEMU.
cat > "$work/payload/run.sh" <<'EOF'
. ./lib.sh
insmod ./netgpu.ko
i=0; while [ ! -e /dev/netgpu0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "GUEST-MEMINFO $(./netgpu-stress meminfo)"
./netgpu-stress hold 8 queued > /tmp/a.out 2>&1 &
./netgpu-stress hold 8 > /tmp/b.out 2>&1 &
i=0; while ! grep -q HOLDING /tmp/a.out /tmp/b.out 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
echo "NETGPU-HOST: kill-qemu"
sleep 60
EOF
"$here/mkinitramfs.sh" "$work/victim.cpio.gz" "$work/payload"
pristine_free=""
base_vdev=""; base_backend=""
t0=$SECONDS
for k in $(seq "$qemu_cycles"); do
  rm -f "$work/victim.log" "$work/qemu.pid"
  "$here/run-vm.sh" --initrd "$work/victim.cpio.gz" --device "$NETGPU_DEVICE_JSON" --timeout 120 \
    --log "$work/victim.log" --pidfile "$work/qemu.pid" > /dev/null 2>&1 &
  runner=$!
  killed=0
  for _ in $(seq 1200); do
    if grep -q '^NETGPU-HOST: kill-qemu' "$work/victim.log" 2>/dev/null && [ -s "$work/qemu.pid" ]; then
      kill -KILL "$(cat "$work/qemu.pid")"; killed=1; break
    fi
    kill -0 "$runner" 2>/dev/null || break
    sleep 0.1
  done
  wait "$runner" 2>/dev/null || true
  if [ "$killed" != 1 ]; then
    cat "$work/victim.log" >&2
    result "qemu-cycle-$k-reached-mid-stream" 0
    break
  fi
  if [ -z "$pristine_free" ]; then
    pristine_free=$(tr -d '\r' < "$work/victim.log" | sed -n 's/^GUEST-MEMINFO free \([0-9]*\).*/\1/p')
  fi
  settle_sessions || { result "qemu-cycle-$k-sessions-closed" 0; break; }
  if [ -z "$base_vdev" ]; then base_vdev=$(rss "$NETGPU_VDEV_PID"); base_backend=$(rss "$NETGPU_BACKEND_PID"); fi
done
echo "torture: QEMU killed mid-stream: $qemu_cycles cycles in $((SECONDS - t0)) s"
result qemu-killed-vdev-alive "$(kill -0 "$NETGPU_VDEV_PID" 2>/dev/null && echo 1 || echo 0)"
result qemu-killed-backend-alive "$(kill -0 "$NETGPU_BACKEND_PID" 2>/dev/null && echo 1 || echo 0)"
result qemu-killed-sessions-closed "$( [ "$(sessions)" = 0 ] && echo 1 || echo 0)"

# The guest-side cycles.
echo "$cycles" > "$work/payload/cycles"
echo "${NETGPU_TORTURE_PHASES:-reset kill openclose reload}" > "$work/payload/phases"
cp "$here/guest/torture.sh" "$work/payload/run.sh"
t0=$SECONDS
# Several minutes per thousand cycles under TCG: the timeout grows with the cycle count.
if VM_TIMEOUT=$((300 + cycles * 8)) VM_KEEP_LOG="$work/torture.log" vm_run_payload "$work" "$work/payload"; then
  result guest-torture 1
else
  result guest-torture 0
fi
tr -d '\r' < "$work/torture.log" | grep -E '^(torture|baseline|end|CHURN|CANARY)' || true
echo "torture: guest phases in $((SECONDS - t0)) s"
end_free=$(tr -d '\r' < "$work/torture.log" | sed -n 's/^end: device memory free \([0-9]*\).*/\1/p')
echo "backend free device memory: first guest $pristine_free, after everything $end_free"
result backend-device-memory-back "$( [ -n "$end_free" ] && [ "$end_free" = "$pristine_free" ] && echo 1 || echo 0)"
settle_sessions || true
echo "backend sessions open at the end: $(sessions)"
result backend-sessions-back-to-0 "$( [ "$(sessions)" = 0 ] && echo 1 || echo 0)"
result vdev-alive "$(kill -0 "$NETGPU_VDEV_PID" 2>/dev/null && echo 1 || echo 0)"
result backend-alive "$(kill -0 "$NETGPU_BACKEND_PID" 2>/dev/null && echo 1 || echo 0)"
if [ -n "$base_vdev" ]; then
  end_vdev=$(rss "$NETGPU_VDEV_PID"); end_backend=$(rss "$NETGPU_BACKEND_PID")
  echo "RSS: vdev $base_vdev -> $end_vdev KiB, backend $base_backend -> $end_backend KiB (after the first guest -> at the end)"
  result vdev-rss-bounded "$( [ $((end_vdev - base_vdev)) -le "$slack" ] && echo 1 || echo 0)"
  result backend-rss-bounded "$( [ $((end_backend - base_backend)) -le "$slack" ] && echo 1 || echo 0)"
fi
echo "torture: total $((SECONDS - t_all)) s"
if [ "$failed" != 0 ]; then
  keep=${NETGPU_VM_FAILURE_DIR:-${NETGPU_CACHE:-$HOME/.cache/netgpu}/vm-failures}/torture-$(date -u +%Y%m%dT%H%M%S)
  mkdir -p "$keep" && cp "$work"/*.log "$keep"/ 2>/dev/null && echo "torture: logs kept in $keep"
fi
[ "$failed" = 0 ]
