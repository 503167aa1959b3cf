/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * netgpu device ABI 1.1, as the guest driver sees it. The definition is proto/src/abi.rs;
 * proto/tests/c_header.rs compiles tests/abi-dump.c (which prints every constant, size and
 * offset below) and compares each value with the Rust side, so the two cannot drift
 * (guest-tools/kmod/check-abi.sh runs just that check). See docs/device-abi.md.
 */
#ifndef NETGPU_ABI_H
#define NETGPU_ABI_H

#include <linux/types.h>

#define NETGPU_VENDOR_ID		0x1e4e
#define NETGPU_DEVICE_ID		0x6e67
#define NETGPU_PCI_CLASS		0x030200

#define NETGPU_REGS_BAR			0
#define NETGPU_REGS_BAR_SIZE		0x4000
#define NETGPU_DOORBELL_BAR		2
#define NETGPU_MSIX_BAR			4
#define NETGPU_MAX_QUEUES		64
#define NETGPU_MSIX_VECTORS		(NETGPU_MAX_QUEUES + 1)
#define NETGPU_NO_VECTOR		0xffff

#define NETGPU_MAGIC			0x5550474e	/* "NGPU" */
#define NETGPU_ABI_VERSION_MAJOR	1
#define NETGPU_ABI_VERSION_MINOR	1

/* BAR0 registers */
#define NETGPU_REG_MAGIC		0x000
#define NETGPU_REG_VERSION		0x004
#define NETGPU_REG_DEVICE_FEATURES	0x008
#define NETGPU_REG_DRIVER_FEATURES	0x010
#define NETGPU_REG_STATUS		0x018
#define NETGPU_REG_FATAL_REASON		0x01c
#define NETGPU_REG_RESET		0x020
#define NETGPU_REG_INTR_STATUS		0x024
#define NETGPU_REG_MAX_QUEUES		0x028
#define NETGPU_REG_MAX_QUEUE_SIZE	0x02c
#define NETGPU_REG_MAX_SG_ENTRIES	0x030
#define NETGPU_REG_MAX_TRANSFER		0x034
#define NETGPU_REG_EVENT_VECTOR		0x038
#define NETGPU_REG_GPU_TOTAL_MEM	0x040
#define NETGPU_REG_GPU_COMPUTE_CAPABILITY 0x048
#define NETGPU_REG_GPU_SM_COUNT		0x04c
#define NETGPU_REG_GPU_DRIVER_VERSION	0x050
#define NETGPU_REG_GPU_EXECUTOR		0x054
#define NETGPU_REG_MEMORY_QUOTA		0x058
#define NETGPU_REG_GPU_UUID		0x060
#define NETGPU_REG_GPU_NAME		0x080
#define NETGPU_GPU_NAME_LEN		64
#define NETGPU_REG_QUEUE_BASE		0x1000
#define NETGPU_REG_QUEUE_STRIDE		0x40
#define NETGPU_REG_DOORBELL_BASE	0x2000
#define NETGPU_REG_DOORBELL_STRIDE	8

/* Per-queue registers, relative to NETGPU_REG_QUEUE_BASE + q * NETGPU_REG_QUEUE_STRIDE */
#define NETGPU_QREG_SQ_BASE		0x00
#define NETGPU_QREG_CQ_BASE		0x08
#define NETGPU_QREG_SIZE		0x10
#define NETGPU_QREG_MSIX_VECTOR		0x14
#define NETGPU_QREG_ENABLE		0x18
#define NETGPU_QREG_STATUS		0x1c
#define NETGPU_QREG_ERROR		0x20
#define NETGPU_QREG_COALESCE_USECS	0x24
#define NETGPU_QREG_COALESCE_COUNT	0x28
#define NETGPU_QREG_SQ_HEAD		0x2c
#define NETGPU_QREG_CQ_TAIL		0x30

#define NETGPU_QSTATUS_ENABLED		(1u << 0)
#define NETGPU_QSTATUS_ERROR		(1u << 1)
#define NETGPU_QERR_BUSY		8	/* ABI 1.1: enabled while still stopping */
#define NETGPU_INTR_DEVICE_EVENT	(1u << 31)
#define NETGPU_INTR_LAST_QUEUE_BIT	30	/* queues >= 30 share INTR_STATUS bit 30 */

#define NETGPU_STATUS_READY		(1u << 0)
#define NETGPU_STATUS_FATAL		(1u << 1)
#define NETGPU_STATUS_RESETTING		(1u << 2)
#define NETGPU_STATUS_CONNECTING	(1u << 3)
#define NETGPU_RESET_VALUE		1

#define NETGPU_FEATURE_FAST_DOORBELLS	(1ull << 0)
#define NETGPU_FEATURE_SG_INDIRECT	(1ull << 1)
#define NETGPU_FEATURE_SG_CHAIN		(1ull << 2)
#define NETGPU_FEATURE_INTR_COALESCING	(1ull << 3)
#define NETGPU_FEATURE_ASYNC		(1ull << 4)
#define NETGPU_FEATURE_WIRE_REQUEST	(1ull << 5)	/* ABI 1.1 */
#define NETGPU_FEATURE_OUT_OF_ORDER	(1ull << 6)	/* ABI 1.1 */

#define NETGPU_MIN_QUEUE_SIZE		2
#define NETGPU_MAX_QUEUE_SIZE		4096
#define NETGPU_RING_ALIGN		4096
#define NETGPU_MAX_SG_ENTRIES		4096
#define NETGPU_MAX_TRANSFER		(256u << 20)
#define NETGPU_MAX_NAME_LEN		1024
#define NETGPU_MAX_PARAM_BUFFER		(32u * 1024)
#define NETGPU_INLINE_SG_ENTRIES	3

#define NETGPU_SG_FLAG_CHAIN		(1u << 0)
#define NETGPU_SG_FLAG_DEVICE_WRITE	(1u << 1)	/* the device may write the entry */
#define NETGPU_CMD_FLAG_SG_INDIRECT	(1u << 0)
#define NETGPU_CMD_FLAG_ASYNC		(1u << 1)
#define NETGPU_CQE_FLAG_PHASE		(1u << 0)
#define NETGPU_CQE_FLAG_CONSOLE_PENDING	(1u << 1)	/* ABI 1.1 */

/* Opcodes */
#define NETGPU_OP_NOP			0x00
#define NETGPU_OP_DEVICE_QUERY		0x01
#define NETGPU_OP_MEM_GET_INFO		0x02
#define NETGPU_OP_CTX_CREATE		0x10
#define NETGPU_OP_CTX_DESTROY		0x11
#define NETGPU_OP_CTX_SYNCHRONIZE	0x12
#define NETGPU_OP_MEM_ALLOC		0x20
#define NETGPU_OP_MEM_FREE		0x21
#define NETGPU_OP_MEMCPY_HTOD		0x22
#define NETGPU_OP_MEMCPY_DTOH		0x23
#define NETGPU_OP_MEMCPY_DTOD		0x24
#define NETGPU_OP_MEMSET		0x25
#define NETGPU_OP_MODULE_LOAD		0x30
#define NETGPU_OP_MODULE_UNLOAD		0x31
#define NETGPU_OP_MODULE_GET_FUNCTION	0x32
#define NETGPU_OP_MODULE_GET_GLOBAL	0x33
#define NETGPU_OP_LAUNCH_KERNEL		0x40
#define NETGPU_OP_STREAM_CREATE		0x50
#define NETGPU_OP_STREAM_DESTROY	0x51
#define NETGPU_OP_STREAM_SYNCHRONIZE	0x52
#define NETGPU_OP_STREAM_QUERY		0x53
#define NETGPU_OP_EVENT_CREATE		0x60
#define NETGPU_OP_EVENT_RECORD		0x61
#define NETGPU_OP_EVENT_SYNCHRONIZE	0x62
#define NETGPU_OP_EVENT_QUERY		0x63
#define NETGPU_OP_EVENT_ELAPSED_TIME	0x64
#define NETGPU_OP_EVENT_DESTROY		0x65
#define NETGPU_OP_WIRE_REQUEST		0x70	/* ABI 1.1, FEATURE_WIRE_REQUEST */

struct netgpu_sg_entry {
	__le64 addr;
	__le32 len;
	__le32 flags;
};

struct netgpu_command {
	__le16 opcode;
	__le16 flags;
	__le32 cid;
	__le64 args[8];
	__le32 sg_count;
	__le32 reserved;
	struct netgpu_sg_entry sg[NETGPU_INLINE_SG_ENTRIES];
};

struct netgpu_completion {
	__le32 cid;
	__le32 result;
	__le64 value0;
	__le64 value1;
	__le16 sq_head;
	__le16 flags;
	__le32 reserved;
};

#define NETGPU_DEVICE_INFO_SIZE		1024
#define NETGPU_PARAM_RECORD_SIZE	8

#endif /* NETGPU_ABI_H */
