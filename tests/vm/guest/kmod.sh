# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The netgpu guest driver in a real guest: load it, check /dev/netgpu0 and sysfs, run the
# ioctl self-test (copies through pinned buffers, async batches, refused bad input,
# non-blocking submission, the regression tests of findings 1 and 8), many threads on one
# file (netgpu-mt), unload.
. ./lib.sh
check insmod insmod ./netgpu.ko
dev=/sys/class/netgpu/netgpu0
i=0
while [ ! -e /dev/netgpu0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check dev-node [ -c /dev/netgpu0 ]
check sysfs-gpu-name [ "$(cat $dev/gpu_name)" = "netgpu CPU executor" ]
check sysfs-link-up [ "$(cat $dev/link_state)" = "up" ]
check sysfs-executor [ "$(cat $dev/executor)" = "cpu" ]
echo "irq mode: $(cat $dev/irq_mode), total_mem: $(cat $dev/total_mem)"
check sysfs-msix [ "$(cut -d' ' -f1 $dev/irq_mode)" = "msix" ]
./netgpu-selftest
check selftest [ $? -eq 0 ]
check selftest-left-no-pins [ "$(cat $dev/pinned_pages)" = 0 ]
./netgpu-mt 8 20
check multithreaded [ $? -eq 0 ]
check queues-released [ "$(cat $dev/queues_in_use)" = "0" ]
check rmmod rmmod netgpu
check dev-node-gone [ ! -e /dev/netgpu0 ]
if dmesg | grep -E "BUG|WARNING|Oops|general protection" > /dev/null; then
  dmesg | tail -n 40
  check kernel-log-clean false
else
  check kernel-log-clean true
fi
summary
