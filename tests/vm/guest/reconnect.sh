# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The GPU host goes away under a running guest and comes back (issue 9, "survive the
# network"); the host side is tests/vm/test-reconnect.sh, which acts when this script asks:
#  - the backend process wedged (SIGSTOP: its connections stay open, its kernel still
#    acknowledges, TCP keepalive is answered): a busy copy loop's waiting call fails within
#    5 s (vdev's session watchdog), and once the backend runs again the next process works;
#  - the backend process killed (SIGKILL) and restarted on the same address: the busy call
#    fails at once, a process started while it is down fails, and the next process after the
#    restart works;
#  - all of it without a device reset or a module reload: the link stays up (the device
#    READY), the same module and /dev/netgpu0 serve every process (the host checks that
#    vdev probed the backend once: no reset happened).
. ./lib.sh
NETGPU_TIMED=${NETGPU_TIMED:-1}
pci=$(find_netgpu 0x1e4e 0x6e67) || pci=""
check device-present [ -n "$pci" ]
if [ -z "$pci" ]; then summary; exit 1; fi
ms() { cut -d' ' -f1 /proc/uptime | awk '{printf "%d", $1 * 1000}'; }
wait_node() {
  i=0
  while [ ! -e /dev/netgpu0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ -c /dev/netgpu0 ]
}
start_holder() {
  ./netgpu-stress hold "$@" > /tmp/holder.out 2>&1 &
  holder=$!
  i=0
  while ! grep -q HOLDING /tmp/holder.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  grep -q HOLDING /tmp/holder.out
}
# Waits up to $1 tenths of a second for the holder to exit with an error; fails if it is
# still running (then kills it).
holder_fails() {
  i=0
  while kill -0 "$holder" 2>/dev/null && [ $i -lt "$1" ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$holder" 2>/dev/null; then
    kill -9 "$holder"
    wait "$holder" 2>/dev/null
    return 1
  fi
  wait "$holder"
  [ $? -eq 3 ] && grep -q '^ERROR' /tmp/holder.out
}
sys=/sys/class/netgpu/netgpu0
link_up() { [ "$(cat $sys/link_state)" = up ]; }

check insmod insmod ./netgpu.ko
check dev-node wait_node
check first-process ./netgpu-stress meminfo
check link-up-at-start link_up

# 1. The backend wedges.
check wedged-holder-runs start_holder 16
echo "NETGPU-HOST: stop-backend"
t0=$(ms)
check wedged-busy-call-fails-within-5s holder_fails 50
t1=$(ms)
cat /tmp/holder.out
echo "wedged backend: busy call failed $((t1 - t0)) ms after the host was asked to stop the backend"
check wedged-link-stays-up link_up
echo "NETGPU-HOST: cont-backend"
check wedged-next-process-works ./netgpu-stress open-within 20
check wedged-busy-process-works start_holder 8
kill -9 "$holder"; wait "$holder" 2>/dev/null

# 2. The backend is killed and restarted.
check killed-holder-runs start_holder 16
echo "NETGPU-HOST: kill-backend"
t0=$(ms)
check killed-busy-call-fails-within-5s holder_fails 50
t1=$(ms)
cat /tmp/holder.out
echo "killed backend: busy call failed $((t1 - t0)) ms after the host was asked to kill the backend"
check killed-process-while-down-fails sh -c '! ./netgpu-stress meminfo'
check killed-link-stays-up link_up
echo "NETGPU-HOST: restart-backend"
check restarted-next-process-works ./netgpu-stress open-within 30
check restarted-busy-process-works start_holder 8
kill -9 "$holder"; wait "$holder" 2>/dev/null

check link-up-at-end link_up
check no-stuck-queue [ "$(cat $sys/queues_stuck)" = 0 ]
check device-node-kept [ -c /dev/netgpu0 ]
if dmesg | grep -E "BUG|WARNING|Oops|general protection|did not stop|still running" > /dev/null; then
  dmesg | tail -n 40
  check kernel-log-clean false
else
  check kernel-log-clean true
fi
summary
