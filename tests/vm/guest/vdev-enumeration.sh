# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The guest's view of a netgpu-vdev device, with no netgpu driver loaded: PCI identity, BARs,
# capabilities, and BAR0 registers read with devmem (including the remote GPU's name, which
# vdev fetched from the backend).
. ./lib.sh
dev=$(find_netgpu 0x1e4e 0x6e67) || dev=""
check device-present [ -n "$dev" ]
if [ -z "$dev" ]; then summary; exit 1; fi
echo "netgpu device at $dev"
check class-3d-controller [ "$(cat "$dev/class")" = "0x030200" ]
check subsystem-ids [ "$(cat "$dev/subsystem_vendor"):$(cat "$dev/subsystem_device")" = "0x1e4e:0x0001" ]
check bar0-16k [ "$(bar_size "$dev" 0)" -eq 16384 ]
check bar2-4k [ "$(bar_size "$dev" 2)" -eq 4096 ]
check bar4-8k [ "$(bar_size "$dev" 4)" -eq 8192 ]
check bar2-prefetchable [ $(( $(bar_flags "$dev" 2) & 0x2000 )) -ne 0 ]
check bar0-64bit [ $(( $(bar_flags "$dev" 0) & 0x100000 )) -ne 0 ]
check cap-pcie has_cap "$dev" 16
check cap-msix has_cap "$dev" 17
echo 1 > "$dev/enable"
base=$(bar_base "$dev" 0)
magic=$(devmem $(( base )) 32)
echo "magic register: $magic"
check magic [ "$((magic))" -eq $((0x5550474e)) ]
check abi-version [ "$(( $(devmem $(( base + 4 )) 32) >> 16 ))" -eq 1 ]
i=0
while [ $(( $(devmem $(( base + 0x18 )) 32) & 1 )) -eq 0 ] && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
check status-ready [ $(( $(devmem $(( base + 0x18 )) 32) & 1 )) -eq 1 ]
name=""
off=0
while [ $off -lt 64 ]; do
  w=$(( $(devmem $(( base + 0x80 + off )) 32) ))
  for shift in 0 8 16 24; do
    c=$(( (w >> shift) & 255 ))
    [ $c -eq 0 ] && break 2
    # shellcheck disable=SC2059  # an octal escape built on purpose
    name="$name$(printf "\\$(printf '%03o' $c)")"
  done
  off=$((off + 4))
done
echo "remote GPU name: $name"
check remote-gpu-name [ "$name" = "netgpu CPU executor" ]
summary
