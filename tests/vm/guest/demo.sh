# shellcheck shell=sh source=tests/vm/guest/lib.sh
# The demo: a CUDA program in the guest, computing on the remote backend.
. ./lib.sh
insmod ./netgpu.ko
i=0
while [ ! -e /dev/netgpu0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
export LD_LIBRARY_PATH=/payload/lib NETGPU_KERNELS=/payload/kernels
echo
echo "================ inside the VM ================"
echo "\$ lspci-style view: $(cat /sys/bus/pci/devices/*/uevent 2>/dev/null | grep -m1 PCI_ID=1E4E)"
echo "\$ netgpu-smi"
./netgpu-smi
echo "\$ ./vector_add 1000000"
./vector_add 1000000
check vector_add [ $? -eq 0 ]
echo "\$ ./sgemm_tiled"
./sgemm_tiled
check sgemm_tiled [ $? -eq 0 ]
echo "================================================"
summary
