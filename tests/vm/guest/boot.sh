# shellcheck shell=sh source=tests/vm/guest/lib.sh
# A plain guest (no netgpu device): the kernel came up, PCI enumeration works, modules load,
# and the user-mode network reaches a server on the host's 127.0.0.1 through 10.0.2.2.
. ./lib.sh
check kernel-version [ "$(uname -r)" = "$(cat ./expect-kernel)" ]
n=$(find /sys/bus/pci/devices/ -mindepth 1 -maxdepth 1 | wc -l)
echo "PCI functions: $n"
for d in /sys/bus/pci/devices/*; do
  echo "  ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class $(cat "$d/class")"
done
check pci-enumerated [ "$n" -ge 3 ]
check q35-host-bridge grep -qx 0x29c0 /sys/bus/pci/devices/0000:00:00.0/device
virtio=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor")" = 0x1af4 ] && virtio=$d
done
check virtio-net-present [ -n "$virtio" ]
check virtio-net-driver-bound [ -e "$virtio/driver" ]
check network-up net_up
got=$(wget -q -T 10 -O - "http://10.0.2.2:$(cat ./host-port)/token" 2>/dev/null)
check host-reachable-via-10.0.2.2 [ "$got" = "$(cat ./token)" ]
summary
