# shellcheck shell=sh disable=SC2046  # set -- $(...) splits a resource line on purpose
# Guest-side helpers (busybox sh): result lines the host parses.
pass=0
fail=0
check() {
  name=$1
  shift
  [ -z "${NETGPU_TIMED:-}" ] || echo "[t=$(cut -d' ' -f1 /proc/uptime)] $name"
  if "$@"; then
    echo "NETGPU-TEST: PASS $name"
    pass=$((pass + 1))
  else
    echo "NETGPU-TEST: FAIL $name"
    fail=$((fail + 1))
  fi
}
summary() {
  echo "NETGPU-TEST: SUMMARY $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
# Finds the netgpu PCI function by vendor/device id; prints its sysfs directory.
find_netgpu() {
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = "$1" ] && [ "$(cat "$d/device")" = "$2" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}
# Config-space byte at offset $2 of device $1, as a decimal number.
cfg_byte() {
  v=$(od -An -tu1 -j "$2" -N 1 "$1/config" | tr -d ' ')
  echo "${v:-0}"
}
# Walks the capability list of $1; succeeds when capability id $2 is present.
has_cap() {
  ptr=$(cfg_byte "$1" 52)
  n=0
  while [ "$ptr" -ne 0 ] && [ $n -lt 48 ]; do
    [ "$(cfg_byte "$1" "$ptr")" -eq "$2" ] && return 0
    ptr=$(cfg_byte "$1" $((ptr + 1)))
    n=$((n + 1))
  done
  return 1
}
# Size and flags of BAR $2 of device $1 (from the resource file).
bar_size() {
  set -- $(sed -n "$(($2 + 1))p" "$1/resource")
  echo $(($2 - $1 + 1))
}
bar_flags() {
  set -- $(sed -n "$(($2 + 1))p" "$1/resource")
  echo $(($3))
}
bar_base() {
  set -- $(sed -n "$(($2 + 1))p" "$1/resource")
  echo "$1"
}
# Brings up the first ethernet interface on QEMU's user-mode network (run-vm.sh --net):
# the guest is 10.0.2.15/24, 10.0.2.2 is the host's 127.0.0.1.
net_up() {
  ifname=""
  for d in /sys/class/net/*; do
    case ${d##*/} in lo) ;; *) ifname=${d##*/}; break ;; esac
  done
  [ -n "$ifname" ] || return 1
  ip link set lo up
  ip link set "$ifname" up &&
    ip addr add 10.0.2.15/24 dev "$ifname" &&
    ip route add default via 10.0.2.2
}
