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
# The next program: new sessions follow the vGPU's placement once the controller moved it
# (lease TTL + grace). vdev may hold the device failed until the guest resets it; then a
# function-level reset (what a driver reload or a VM reset does) brings it back.
try_run() {
  n=0
  while [ $n -lt "$1" ]; do
    if ./vector_add 100000 > /tmp/b.out 2>&1; then return 0; fi
    sleep 1
    n=$((n + 1))
  done
  return 1
}
ok=0
if try_run 20; then
  ok=1
  echo "recovered without a device reset"
else
  echo "link state: $(cat /sys/class/netgpu/netgpu0/link_state 2>/dev/null); resetting the GPU (FLR)"
  dev=$(find_netgpu 0x1e4e 0x6e67) || dev=""
  if [ -n "$dev" ] && echo 1 > "$dev/reset"; then
    try_run 20 && ok=1
  fi
fi
cat /tmp/b.out
check next-program-runs-after-failover [ $ok -eq 1 ]
echo "NETGPU-HOST: check-placement"
summary
