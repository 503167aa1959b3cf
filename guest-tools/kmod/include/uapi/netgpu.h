/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR Apache-2.0 */
/*
 * netgpu user-space interface: /dev/netgpuN.
 *
 * Each open file owns one queue pair of the device (and, through the commands it submits,
 * its own remote contexts). NETGPU_IOC_SUBMIT takes a batch of the device's own 128-byte
 * command descriptors (struct netgpu_command, netgpu_abi.h) in which scatter-list entries
 * hold USER virtual addresses: sg[i].addr = pointer, sg[i].len = length, sg_count = the
 * number of buffers the opcode takes (0, 1, or 2 for MODULE_GET_FUNCTION: name, then the
 * output table). The module checks each opcode, pins the buffers and rewrites them into
 * guest-physical scatter lists; user space never supplies a physical address. The call
 * returns when every command of the batch has completed, with each completion copied
 * into its slot; commands flagged ASYNC complete as soon as the device has queued them.
 */
#ifndef _UAPI_NETGPU_H
#define _UAPI_NETGPU_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define NETGPU_UAPI_VERSION	1
#define NETGPU_MAX_BATCH	128

struct netgpu_ioc_cmd {
	__u8 desc[128];		/* in: struct netgpu_command (cid and sg rewritten by the module) */
	__u8 cpl[32];		/* out: struct netgpu_completion */
};

struct netgpu_ioc_submit {
	__u64 cmds;		/* user pointer to count struct netgpu_ioc_cmd */
	__u32 count;		/* 1 .. NETGPU_MAX_BATCH */
	__u32 flags;		/* must be 0 */
};

struct netgpu_ioc_info {
	__u32 uapi_version;
	__u32 abi_version;
	__u32 status;		/* NETGPU_STATUS_* */
	__u32 fatal_reason;
	__u32 executor;		/* 0 none, 1 CUDA, 2 CPU */
	__u32 compute_capability; /* major << 16 | minor */
	__u32 sm_count;
	__u32 driver_version;
	__u64 total_mem;
	__u64 memory_quota;
	__u32 queue;		/* this file's queue index */
	__u32 reserved;
	__u8 uuid[16];
	char name[64];
};

#define NETGPU_IOC_MAGIC	'N'
#define NETGPU_IOC_INFO		_IOR(NETGPU_IOC_MAGIC, 0x00, struct netgpu_ioc_info)
#define NETGPU_IOC_SUBMIT	_IOWR(NETGPU_IOC_MAGIC, 0x01, struct netgpu_ioc_submit)

#endif /* _UAPI_NETGPU_H */
