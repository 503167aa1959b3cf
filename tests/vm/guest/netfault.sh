# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The link between vdev and the backend fails while a guest program waits (the host's
# netgpu-netfault proxy stalls it: no FIN, no RST), then heals. tests/vm/test-netfault.sh.
. ./lib.sh
check insmod insmod ./netgpu.ko
i=0
while [ ! -e /dev/netgpu0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
export LD_LIBRARY_PATH=/payload/lib NETGPU_KERNELS=/payload/kernels
# Runs ./netfault $1 (killed after 20 s: a hang is a failure); result in $rc, output in /tmp/$1.out.
run() {
  ./netfault "$1" > "/tmp/$1.out" 2>&1 &
  p=$!
  # The program asks for the partition; pass the request on to the host at once.
  i=0
  while kill -0 $p 2>/dev/null && ! grep -q '^NETGPU-HOST: partition' "/tmp/$1.out" && [ $i -lt 600 ]; do
    sleep 0.1; i=$((i + 1))
  done
  grep -q '^NETGPU-HOST: partition' "/tmp/$1.out" && echo "NETGPU-HOST: partition"
  i=0
  while kill -0 $p 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 $p 2>/dev/null; then
    kill -9 $p
    rc=124
    i=0
    while kill -0 $p 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $p 2>/dev/null; then
      echo "netfault $1: still there 10 s after SIGKILL (blocked in the driver)"
      rc=125
    fi
  else
    wait $p
    rc=$?
  fi
  grep -v '^NETGPU-HOST' "/tmp/$1.out"
}
heal() {
  echo "NETGPU-HOST: heal"
  # The host answers by writing the proxy's mode into the serial log's watcher; give it and
  # vdev (new queues, new connections) a moment.
  sleep 3
}
# A waiting call under a stalled link must fail within the bound: vdev's watchdog probes a
# silent queue connection and declares it lost (docs/vdev.md, "Surviving the network").
xcheck() {
  name=$1
  shift
  if "$@"; then
    echo "NETGPU-TEST: PASS $name"; pass=$((pass + 1))
  else
    echo "NETGPU-TEST: FAIL $name"; fail=$((fail + 1))
  fi
}
check baseline-before-faults ./netfault check
for mode in copy kernel; do
  run $mode
  xcheck "partition-mid-$mode-fails-not-hangs" [ $rc -eq 0 ]
  heal
  ./netfault check > /tmp/after-$mode.out 2>&1
  rc=$?
  cat /tmp/after-$mode.out
  check "next-program-runs-after-heal-($mode)" [ $rc -eq 0 ]
done
echo "link state at the end: $(cat /sys/class/netgpu/netgpu0/link_state 2>/dev/null)"
summary
