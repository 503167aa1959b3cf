# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The driver's lifecycle under load: processes killed mid-command leave no pinned pages, no
# queue and no device memory behind; a function-level reset and a hot-unplug (PCI remove)
# while a process is mid-command end its calls with an error instead of a hang, and the
# device comes back (reset) or is probed again (rescan); the module cannot be unloaded while
# in use; the INTx fallback (msix=0) carries the same work. Kernel log clean at the end.
. ./lib.sh
pci=$(find_netgpu 0x1e4e 0x6e67) || pci=""
check device-present [ -n "$pci" ]
if [ -z "$pci" ]; then summary; exit 1; fi
sys=/sys/class/netgpu/netgpu0
wait_node() {
  i=0
  while [ ! -e /dev/netgpu0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ -c /dev/netgpu0 ]
}
# Pins the kernel holds for user pages (FOLL_PIN) right now.
pins() {
  awk '/^nr_foll_pin_acquired/ {a = $2} /^nr_foll_pin_released/ {r = $2} END {print a - r}' /proc/vmstat
}
freemem() { ./netgpu-stress meminfo | awk '{print $2}'; }
# Starts "netgpu-stress hold MiB" in the background; waits until it holds its memory.
start_holder() {
  ./netgpu-stress hold "$1" > /tmp/holder.out 2>&1 &
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

check insmod insmod ./netgpu.ko
check dev-node wait_node
pins0=$(pins)
free0=$(freemem)
echo "device memory free: $free0, pinned pages: $pins0"
check quota-visible [ -n "$free0" ] && [ "$free0" -gt 0 ]

# Killed mid-command, five times at different moments.
ok=1
for delay in 0.2 0.5 0.9 1.3 2; do
  start_holder 32 || ok=0
  sleep $delay
  kill -9 "$holder"
  wait "$holder" 2>/dev/null
done
check holders-ran [ $ok = 1 ]
check killed-leaves-no-queue [ "$(cat $sys/queues_in_use)" = 0 ]
check killed-leaves-no-pinned-pages [ "$(pins)" = "$pins0" ]
check killed-leaves-no-device-memory [ "$(freemem)" = "$free0" ]

# Module unload refused while a file is open.
start_holder 8
check rmmod-refused-while-open sh -c '! rmmod netgpu 2>/dev/null'
kill -9 "$holder"; wait "$holder" 2>/dev/null

# Function-level reset while a process is mid-command.
if [ -e "$pci/reset" ]; then
  start_holder 32
  sleep 0.5
  echo 1 > "$pci/reset"
  check reset-ends-calls-with-error holder_exits 100
  cat /tmp/holder.out
  check reset-error-reported grep -q '^ERROR' /tmp/holder.out
  check reset-leaves-no-pinned-pages [ "$(pins)" = "$pins0" ]
  check reset-device-usable-again [ "$(freemem)" = "$free0" ]
  check reset-link-up [ "$(cat $sys/link_state)" = up ]
else
  echo "no $pci/reset: function-level reset not offered"
  check reset-offered false
fi

# Hot-unplug (the guest removes the function) while a process is mid-command, then rescan.
start_holder 32
sleep 0.5
echo 1 > "$pci/remove"
check unplug-node-gone [ ! -e /dev/netgpu0 ]
check unplug-ends-calls-with-error holder_exits 100
cat /tmp/holder.out
check unplug-leaves-no-pinned-pages [ "$(pins)" = "$pins0" ]
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

if dmesg | grep -E "BUG|WARNING|Oops|general protection|refcount_t|use-after-free" > /dev/null; then
  dmesg | tail -n 60
  check kernel-log-clean false
else
  check kernel-log-clean true
fi
summary
