# shellcheck shell=sh
# Guest side of tests/vm/test-tls.sh: netgpu0's vdev speaks TLS to the backend; netgpu1's vdev
# trusts the wrong CA, so the backend's certificate is refused.
. ./lib.sh
check insmod insmod ./netgpu.ko
i=0
while { [ ! -e /dev/netgpu0 ] || [ ! -e /sys/class/netgpu/netgpu2 ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# Wait until both devices have settled (the probes run over TLS).
i=0
while [ $i -lt 100 ]; do
  s0=$(cat /sys/class/netgpu/netgpu0/link_state 2>/dev/null)
  s1=$(cat /sys/class/netgpu/netgpu1/link_state 2>/dev/null)
  s2=$(cat /sys/class/netgpu/netgpu2/link_state 2>/dev/null)
  case "$s0/$s1/$s2" in up/fatal*/fatal*) break ;; esac
  sleep 0.1; i=$((i + 1))
done
echo "netgpu0: $s0; netgpu1: $s1"
check tls-device-up [ "$s0" = up ]
check wrong-ca-device-fatal-auth [ "$s1" = "fatal: backend refused the credentials" ]
export LD_LIBRARY_PATH=/payload/lib NETGPU_KERNELS=/payload/kernels
for p in device_memory vector_add; do
  ./$p > /tmp/$p.out 2>&1
  rc=$?
  cat /tmp/$p.out
  check "$p-over-tls" [ $rc -eq 0 ]
done
# A program on the refused device gets a CUDA error at once, not a hang.
NETGPU_DEVICE=/dev/netgpu1 timeout 30 ./vector_add > /tmp/wrong.out 2>&1
rc=$?
cat /tmp/wrong.out
check wrong-ca-device-program-fails [ $rc -ne 0 ] && [ $rc -ne 124 ]
# netgpu2's backend was not running when the VM started: FATAL (unreachable) ...
s2=$(cat /sys/class/netgpu/netgpu2/link_state 2>/dev/null)
echo "netgpu2 before its backend: $s2"
check late-device-fatal-unreachable [ "$s2" = "fatal: backend unreachable" ]
NETGPU_DEVICE=/dev/netgpu2 timeout 30 ./vector_add > /tmp/late0.out 2>&1
rc=$?
check late-device-program-fails-while-down [ $rc -ne 0 ] && [ $rc -ne 124 ]
# ... and up once the backend is, without a reset (vdev probes again on its own).
echo "NETGPU-HOST: start-late-backend"
i=0
while [ "$(cat /sys/class/netgpu/netgpu2/link_state)" != up ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
echo "netgpu2 after its backend started: $(cat /sys/class/netgpu/netgpu2/link_state) (after ${i} x 0.1 s)"
check late-device-up [ "$(cat /sys/class/netgpu/netgpu2/link_state)" = up ]
NETGPU_DEVICE=/dev/netgpu2 ./vector_add > /tmp/late.out 2>&1
rc=$?
cat /tmp/late.out
check late-device-runs-a-program [ $rc -eq 0 ]
check queues-released [ "$(cat /sys/class/netgpu/netgpu0/queues_in_use)" = "0" ]
summary
