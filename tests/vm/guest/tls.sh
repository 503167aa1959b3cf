# shellcheck shell=sh
# Guest side of tests/vm/test-tls.sh: netgpu0's vdev speaks TLS to the backend; netgpu1's vdev
# trusts the wrong CA, so the backend's certificate is refused.
. ./lib.sh
check insmod insmod ./netgpu.ko
i=0
while { [ ! -e /dev/netgpu0 ] || [ ! -e /sys/class/netgpu/netgpu1 ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# Wait until both devices have settled (the probes run over TLS).
i=0
while [ $i -lt 100 ]; do
  s0=$(cat /sys/class/netgpu/netgpu0/link_state 2>/dev/null)
  s1=$(cat /sys/class/netgpu/netgpu1/link_state 2>/dev/null)
  case "$s0/$s1" in up/fatal*) break ;; esac
  sleep 0.1; i=$((i + 1))
done
echo "netgpu0: $s0; netgpu1: $s1"
check tls-device-up [ "$s0" = up ]
check wrong-ca-device-fatal-auth [ "$s1" = "fatal: backend refused the token" ]
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
check queues-released [ "$(cat /sys/class/netgpu/netgpu0/queues_in_use)" = "0" ]
summary
