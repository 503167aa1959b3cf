# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The vGPU's GPU host dies under a running guest: the running CUDA call must get a CUDA error
# (no hang), and the next CUDA program must run, on the host the pool re-placed the vGPU on,
# without rebooting the VM.
. ./lib.sh
check insmod insmod ./netgpu.ko
i=0
while [ ! -e /dev/netgpu0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
export LD_LIBRARY_PATH=/payload/lib NETGPU_KERNELS=/payload/kernels
./vector_add 100000 > /tmp/a.out 2>&1
rc=$?
cat /tmp/a.out
check program-on-first-host [ $rc -eq 0 ]
./backend_lost > /tmp/lost.out 2>&1 &
p=$!
i=0
while ! grep -q READY /tmp/lost.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "NETGPU-HOST: kill-gpu-host"
i=0
while kill -0 $p 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 $p 2>/dev/null; then
  kill -9 $p
  check running-call-gets-cuda-error false
else
  wait $p
  check running-call-gets-cuda-error [ $? -eq 0 ]
fi
cat /tmp/lost.out
# The next program: new processes open new queues, whose sessions follow the vGPU's placement
# once the controller moved it (lease TTL + grace). No device reset, no driver reload: the
# lost session failed its queue only.
ok=0
n=0
while [ $n -lt 40 ]; do
  if ./vector_add 100000 > /tmp/b.out 2>&1; then ok=1; break; fi
  sleep 1
  n=$((n + 1))
done
[ $ok -eq 1 ] && echo "recovered without a device reset after $n failed tries"
echo "link state: $(cat /sys/class/netgpu/netgpu0/link_state 2>/dev/null)"
cat /tmp/b.out
check next-program-runs-after-failover [ $ok -eq 1 ]
echo "NETGPU-HOST: check-placement"
summary
