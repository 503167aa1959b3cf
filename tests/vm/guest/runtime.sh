# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The CUDA runtime programs of tests/runtime in the guest, through libcuda.so.1 ->
# /dev/netgpu0. Each program's verdict is one result line, runtime-<name>.
. ./lib.sh
check insmod insmod ./netgpu.ko
i=0
while [ ! -e /dev/netgpu0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check device-node [ -e /dev/netgpu0 ]
# Each failing driver call is logged with where it was answered (the tail is printed below).
export LD_LIBRARY_PATH=/payload/lib NETGPU_TRACE_ERRORS=1
for n in $(cat runtime/programs); do
  timeout 240 ./bin/"$n" > /tmp/"$n".out 2>&1
  rc=$?
  ok=0
  if [ $rc -eq 0 ] && grep -q ': PASS' /tmp/"$n".out; then
    ok=1
    if [ -f runtime/"$n".expect ]; then
      while IFS= read -r line; do
        grep -qxF -- "$line" /tmp/"$n".out || { ok=0; echo "$n: output lacks: $line"; }
      done < runtime/"$n".expect
    fi
  fi
  [ $rc -eq 124 ] && echo "$n: timed out after 240 s"
  tail -n 12 /tmp/"$n".out
  check runtime-"$n" [ $ok -eq 1 ]
done
summary
