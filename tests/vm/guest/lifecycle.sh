# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The driver's lifecycle under load (issue 12, findings 2 and 11; the module's part of 5):
#  - processes killed mid-command (blocking and queued copies) leave no pinned pages, no
#    queue and no device memory behind;
#  - a function-level reset while a process is mid-command ends its calls with an error;
#    opens racing with the reset wait for it and then work; the device is usable again;
#  - a device that does not answer (memory decoding off: MAGIC reads 0) is treated as gone:
#    opens fail at once, closing a file returns at once (the old module waited 15 s in open);
#  - a device that is gone (netgpu-vdev killed: every register reads all ones, as after a
#    surprise removal): a busy call ends with an error within 5 s, closing returns at once,
#    nothing is kept as a stuck queue (the old module read all ones as "still running",
#    waited 10 s on close and kept the memory for good), the module unloads;
#  - driver unbind and PCI remove with files held open (an idle one, and a busy process
#    stopped with SIGSTOP mid-command): remove() gives back every pin itself (the old module
#    left that to the last close, which then unmapped DMA of a device already torn down),
#    held files get ENODEV, closing them afterwards is clean (module refcount back to 0,
#    kernel log clean, slub_debug poisoning on: test-lifecycle.sh boots with slub_debug);
#    rebind and rescan probe again;
#  - the module cannot be unloaded while in use; the INTx fallback (msix=0) carries the
#    self-test;
#  - no stray DMA: netgpu-canary churns fresh memory all along and finds no word changed.
# Kernel log clean at the end.
. ./lib.sh
NETGPU_TIMED=${NETGPU_TIMED:-1}
pci=$(find_netgpu 0x1e4e 0x6e67) || pci=""
check device-present [ -n "$pci" ]
if [ -z "$pci" ]; then summary; exit 1; fi
bdf=${pci##*/}
sys=/sys/class/netgpu/netgpu0
wait_node() {
  i=0
  while [ ! -e /dev/netgpu0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ -c /dev/netgpu0 ]
}
# Pins the kernel holds for user pages (FOLL_PIN) right now. vmstat counters are per-CPU and
# folded lazily: refresh them first, or a count read just after a release is stale.
pins() {
  echo 1 > /proc/sys/vm/stat_refresh 2>/dev/null
  awk '/^nr_foll_pin_acquired/ {a = $2} /^nr_foll_pin_released/ {r = $2} END {print a - r}' /proc/vmstat
}
freemem() { ./netgpu-stress meminfo | awk '{print $2}'; }
# Starts "netgpu-stress hold MiB [queued]" in the background; waits until it holds memory.
start_holder() {
  ./netgpu-stress hold "$@" > /tmp/holder.out 2>&1 &
  holder=$!
  i=0
  while ! grep -q HOLDING /tmp/holder.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  grep -q HOLDING /tmp/holder.out
}
# Waits up to $1 tenths of a second for the holder to exit; fails if it is still running.
holder_exits() {
  i=0
  while kill -0 "$holder" 2>/dev/null && [ $i -lt "$1" ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$holder" 2>/dev/null; then
    kill -9 "$holder"
    wait "$holder" 2>/dev/null
    return 1
  fi
  wait "$holder" 2>/dev/null
  return 0
}
module_refs() { cat /sys/module/netgpu/refcnt; }
ms() { cut -d' ' -f1 /proc/uptime | awk '{printf "%d", $1 * 1000}'; }

./netgpu-canary 24 > /tmp/canary.out 2>&1 &
canary=$!
check insmod insmod ./netgpu.ko
check dev-node wait_node
pins0=$(pins)
free0=$(freemem)
echo "device memory free: $free0, pinned pages: $pins0"
check quota-visible [ -n "$free0" ] && [ "$free0" -gt 0 ]

# Killed mid-command, at different moments, blocking and queued copies.
ok=1
for delay in 0.2 0.7 1.5; do
  start_holder 16 || ok=0
  sleep $delay
  kill -9 "$holder" 2>/dev/null
  wait "$holder" 2>/dev/null
  start_holder 16 queued || ok=0
  sleep $delay
  kill -9 "$holder" 2>/dev/null
  wait "$holder" 2>/dev/null
done
check holders-ran [ $ok = 1 ]
check killed-leaves-no-queue [ "$(cat $sys/queues_in_use)" = 0 ]
check killed-leaves-no-stuck-queue [ "$(cat $sys/queues_stuck)" = 0 ]
check killed-leaves-no-pinned-pages [ "$(cat $sys/pinned_pages)" = 0 ] && [ "$(pins)" = "$pins0" ]
check killed-leaves-no-device-memory [ "$(freemem)" = "$free0" ]

# Finding 5 (the module's part): a process killed during a command longer than the 10 s
# the driver waits for a queue to stop. A device that finishes the command first (in order,
# ABI 1.0) leaves the queue stuck: the driver keeps its index and memory, the next process
# gets another index and works (the old module freed the index, the next open got it and
# waited forever); once the command ends the stuck queue is freed. A device that abandons
# in-flight work (ABI 1.1) stops at once and nothing is stuck.
./netgpu-stress spin 40000000 > /tmp/spin.out 2>&1 &
spinner=$!
i=0; while ! grep -q SPINNING /tmp/spin.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 1
t0=$(ms)
kill -9 $spinner; wait $spinner 2>/dev/null
t1=$(ms)
stuck=$(cat $sys/queues_stuck)
echo "close during a long command took $((t1 - t0)) ms; stuck queues: $stuck"
t0=$(ms)
check long-command-next-process-works ./netgpu-stress meminfo
t1=$(ms)
check long-command-next-process-not-held-up [ $((t1 - t0)) -lt 5000 ]
i=0
while [ "$(cat $sys/queues_stuck)" != 0 ] && [ $i -lt 60 ]; do
  ./netgpu-stress meminfo > /dev/null 2>&1   # an open looks at stuck queues again
  sleep 1; i=$((i + 1))
done
check long-command-stuck-queue-freed-later [ "$(cat $sys/queues_stuck)" = 0 ]
check long-command-no-pins-left [ "$(cat $sys/pinned_pages)" = 0 ]

# Module unload refused while a file is open.
start_holder 8
check rmmod-refused-while-open sh -c '! rmmod netgpu 2>/dev/null'
kill -9 "$holder"; wait "$holder" 2>/dev/null

# Function-level reset while a process is mid-command, with opens racing the reset.
if [ -e "$pci/reset" ]; then
  start_holder 32
  sleep 0.5
  rm -f /tmp/open.*
  openers=""
  for k in 1 2 3; do
    ( for j in 1 2 3 4 5 6; do ./netgpu-stress open-within 0; done > /tmp/open.$k 2>&1 ) &
    openers="$openers $!"
  done
  echo 1 > "$pci/reset"
  check reset-ends-calls-with-error holder_exits 50
  cat /tmp/holder.out
  check reset-error-reported grep -q '^ERROR' /tmp/holder.out
  for p in $openers; do wait "$p"; done
  cat /tmp/open.* | sort | uniq -c
  check reset-racing-opens-work sh -c '! grep -v "^OPEN ok" /tmp/open.* | grep -q .'
  check reset-leaves-no-pinned-pages [ "$(pins)" = "$pins0" ]
  check reset-device-usable-again [ "$(freemem)" = "$free0" ]
  check reset-link-up [ "$(cat $sys/link_state)" = up ]
else
  echo "no $pci/reset: function-level reset not offered"
  check reset-offered false
fi

# A device that does not answer (memory decoding off) is gone, not running.
./netgpu-stress idle > /tmp/idle.out 2>&1 &
idle=$!
i=0; while ! grep -q HOLDING /tmp/idle.out && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
dd if="$pci/config" of=/tmp/command bs=1 skip=4 count=2 2>/dev/null
printf '\000\000' | dd of="$pci/config" bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
check decoding-off-link-gone [ "$(cat $sys/link_state)" = gone ]
t0=$(ms)
./netgpu-stress meminfo > /tmp/meminfo.out 2>&1
rc=$?
t1=$(ms)
echo "open with memory decoding off: rc $rc in $((t1 - t0)) ms: $(cat /tmp/meminfo.out)"
check decoding-off-open-fails-at-once [ $rc -ne 0 ] && [ $((t1 - t0)) -lt 3000 ]
t0=$(ms)
kill -9 $idle; wait $idle 2>/dev/null
t1=$(ms)
echo "close with memory decoding off took $((t1 - t0)) ms"
check decoding-off-close-returns-at-once [ $((t1 - t0)) -lt 3000 ]
check decoding-off-no-stuck-queue [ "$(cat $sys/queues_stuck)" = 0 ]
dd if=/tmp/command of="$pci/config" bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
echo 1 > "$pci/reset"
check decoding-on-then-reset-usable [ "$(freemem)" = "$free0" ]

# Unbind with files held open: an idle one, and a busy process stopped mid-command.
exec 3<>/dev/netgpu0
start_holder 32
kill -STOP "$holder"
sleep 0.3
echo "$bdf" > /sys/bus/pci/drivers/netgpu/unbind
check unbind-node-gone [ ! -e /dev/netgpu0 ]
check unbind-gives-back-pins-while-files-open [ "$(pins)" = "$pins0" ]
check unbind-held-file-gets-enodev ./netgpu-stress use-fd 3
kill -CONT "$holder"
check unbind-busy-call-ends holder_exits 50
cat /tmp/holder.out
exec 3>&-
check unbind-closed-files-release-module [ "$(module_refs)" = 0 ]
echo "$bdf" > /sys/bus/pci/drivers/netgpu/bind
check rebind-probes-again wait_node
check rebind-device-usable [ "$(freemem)" = "$free0" ]

# Hot-unplug (the guest removes the function) the same way, then rescan.
exec 3<>/dev/netgpu0
start_holder 32
kill -STOP "$holder"
sleep 0.3
echo 1 > "$pci/remove"
check unplug-node-gone [ ! -e /dev/netgpu0 ]
check unplug-gives-back-pins-while-files-open [ "$(pins)" = "$pins0" ]
check unplug-held-file-gets-enodev ./netgpu-stress use-fd 3
kill -CONT "$holder"
check unplug-busy-call-ends holder_exits 50
cat /tmp/holder.out
exec 3>&-
check unplug-closed-files-release-module [ "$(module_refs)" = 0 ]
echo 1 > /sys/bus/pci/rescan
check rescan-probes-again wait_node
check rescan-device-usable [ "$(freemem)" = "$free0" ]

# INTx instead of MSI-X.
check rmmod rmmod netgpu
check insmod-intx insmod ./netgpu.ko msix=0
check intx-dev-node wait_node
check intx-mode [ "$(cut -d' ' -f1 $sys/irq_mode)" = intx ]
check intx-selftest ./netgpu-selftest
check intx-rmmod rmmod netgpu
check final-pins-back [ "$(pins)" = "$pins0" ]

# The device dies (the host kills netgpu-vdev): every register reads all ones.
check insmod-again insmod ./netgpu.ko
check dev-node-again wait_node
start_holder 32
exec 3<>/dev/netgpu0
echo "NETGPU-HOST: kill-vdev"
t0=$(ms)
check gone-busy-call-ends-within-5s holder_exits 50
t1=$(ms)
cat /tmp/holder.out
echo "busy call ended $((t1 - t0)) ms after the host was asked to kill vdev"
i=0; while [ "$(cat $sys/link_state)" != gone ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check gone-link-state [ "$(cat $sys/link_state)" = gone ]
t0=$(ms)
exec 3>&-
t1=$(ms)
echo "close of a file of a gone device took $((t1 - t0)) ms"
check gone-close-returns-at-once [ $((t1 - t0)) -lt 3000 ]
check gone-no-stuck-queue [ "$(cat $sys/queues_stuck)" = 0 ]
check gone-no-pins [ "$(cat $sys/pinned_pages)" = 0 ]
t0=$(ms)
./netgpu-stress meminfo > /dev/null 2>&1
rc=$?
t1=$(ms)
check gone-open-fails-at-once [ $rc -ne 0 ] && [ $((t1 - t0)) -lt 3000 ]
check gone-rmmod rmmod netgpu
check gone-pins-back [ "$(pins)" = "$pins0" ]

kill -TERM $canary; wait $canary
cat /tmp/canary.out
check no-stray-dma-writes grep -q "corrupt 0$" /tmp/canary.out

if dmesg | grep -E "BUG|WARNING|Oops|general protection|refcount_t|use-after-free|Poison|Redzone|still running" > /dev/null; then
  dmesg | tail -n 60
  check kernel-log-clean false
else
  check kernel-log-clean true
fi
summary
