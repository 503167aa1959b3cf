# shellcheck shell=sh source=tests/vm/guest/lib.sh
# CUDA driver-API programs (written against NVIDIA's cuda.h) in a real guest, through
# libcuda.so.1 -> /dev/netgpu0 -> vdev -> backend.
. ./lib.sh
check insmod insmod ./netgpu.ko
i=0
while [ ! -e /dev/netgpu0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
export LD_LIBRARY_PATH=/payload/lib NETGPU_KERNELS=/payload/kernels
./netgpu-smi | tee /tmp/smi.txt
check smi-table grep -q "netgpu0 .*netgpu CPU executor .*cpu .*up" /tmp/smi.txt
./netgpu-smi -q > /tmp/smi-q.txt
check smi-detail grep -q "Compute capability      : 8.0" /tmp/smi-q.txt
./netgpu-smi --json > /tmp/smi.json
check smi-json grep -q '"executor": "cpu"' /tmp/smi.json
for p in device_memory streams_events; do
  ./$p > /tmp/$p.out 2>&1
  rc=$?
  cat /tmp/$p.out
  check "$p" [ $rc -eq 0 ]
done
for k in vector_add sgemm_tiled reduce; do
  if [ -x ./$k ]; then
    ./$k > /tmp/$k.out 2>&1
    rc=$?
    cat /tmp/$k.out
    check "$k" [ $rc -eq 0 ]
  fi
done
# Two processes at once: each has its own queue and contexts.
./device_memory > /tmp/a.out 2>&1 &
a=$!
./streams_events > /tmp/b.out 2>&1 &
b=$!
wait $a; ra=$?
wait $b; rb=$?
check two-processes-at-once [ $ra -eq 0 ] && [ $rb -eq 0 ]
[ $ra -eq 0 ] || cat /tmp/a.out
[ $rb -eq 0 ] || cat /tmp/b.out
check queues-released [ "$(cat /sys/class/netgpu/netgpu0/queues_in_use)" = "0" ]
# Last: the host stops the backend when it sees READY; the program must fail, not hang.
./backend_lost > /tmp/lost.out 2>&1 &
p=$!
i=0
while ! grep -q READY /tmp/lost.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "NETGPU-HOST: stop-backend"
i=0
while kill -0 $p 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 $p 2>/dev/null; then
  kill -9 $p
  check backend-lost-error-not-hang false
else
  wait $p
  check backend-lost-error-not-hang [ $? -eq 0 ]
fi
cat /tmp/lost.out
echo "link state after the backend left: $(cat /sys/class/netgpu/netgpu0/link_state)"
summary
