#!/bin/sh
# QEMU 11 with one netgpu virtual GPU.
#
# - memory-backend-memfd,share=on as the machine memory: QEMU passes the memfd with DMA_MAP
#   (offset = guest-physical address), so vdev maps guest RAM directly.
# - vfio-user-pci in JSON form (the dotted socket.type=unix form is refused).
# - x-enable-migration is not set: vdev does not support migration.
# Add more -device lines (one vdev socket each) for more GPUs.
SOCK=${SOCK:-/run/netgpu/vm1.sock}
exec qemu-system-x86_64 \
  -machine q35,memory-backend=mem -accel kvm -cpu host -smp 4 -m 8G \
  -object memory-backend-memfd,id=mem,size=8G,share=on \
  -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$SOCK\"}}" \
  -drive file=${DISK:-guest.qcow2},if=virtio \
  -nographic "$@"
