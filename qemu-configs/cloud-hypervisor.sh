#!/bin/sh
# cloud-hypervisor with one netgpu virtual GPU.
#
# - --memory shared=on: guest RAM is a shared memfd that cloud-hypervisor passes to vdev with
#   DMA_MAP.
# - --user-device socket=...: the vfio-user client. cloud-hypervisor sizes BARs by writing
#   0xffffffff to the config space BAR registers and reading back; vdev implements that.
SOCK=${SOCK:-/run/netgpu/vm1.sock}
exec cloud-hypervisor \
  --cpus boot=4 --memory size=8G,shared=on \
  --kernel ${KERNEL:-vmlinux} --cmdline "console=hvc0 root=/dev/vda1 rw" \
  --disk path=${DISK:-guest.raw} \
  --user-device socket=$SOCK,id=netgpu0 \
  --serial tty --console off "$@"
