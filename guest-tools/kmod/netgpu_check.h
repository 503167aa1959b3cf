/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netgpu_check.h: the rules a command descriptor from user space must meet before the module
 * pins anything for it, and the layout of the scatter list the module builds for the device.
 *
 * Pure code: no kernel services, no allocation, no user memory access. netgpu.c includes it,
 * and so does the userspace fuzz harness (fuzz/fuzz_check.c), so the fuzzer runs exactly the
 * code the module runs. Outside the kernel, fuzz/kcompat.h provides the few kernel names used.
 *
 * The rules (docs/guest-driver.md):
 *  - the opcode is one the device defines; its data buffers, their count and their
 *    directions come from the table in netgpu_op_rule(), never from user space;
 *  - flags: only ASYNC, and only on stream-ordered opcodes of a device that offers it;
 *    reserved fields 0; user scatter entries carry no flags (the module sets them);
 *  - every argument the device uses to interpret the buffers is checked against them:
 *    a symbol name's length (args[1]) is the name buffer's length (1..MAX_NAME_LEN), a
 *    WIRE_REQUEST's control length (args[0]) is its first buffer's length (1..64 KiB), a
 *    kernel parameter buffer fits MAX_PARAM_BUFFER, a device query record fits its buffer;
 *  - an opcode that needs a device feature (WIRE_REQUEST) is refused without it;
 *  - lengths: no address range wraps, the total is at most the device's MAX_TRANSFER;
 *  - each buffer gets entries of its own, input buffers first; entries of buffers the
 *    device writes carry SG_FLAG_DEVICE_WRITE (when the device's ABI knows the flag), and
 *    those buffers are the only ones pinned writable.
 */
#ifndef NETGPU_CHECK_H
#define NETGPU_CHECK_H

#ifdef __KERNEL__
#include <linux/errno.h>
#include <linux/types.h>
#include <asm/byteorder.h>
#else
#include "fuzz/kcompat.h"
#endif

#include "netgpu_abi.h"

/* Most data buffers one opcode takes. */
#define NETGPU_MAX_BUFS			3

/* Largest control section of a WIRE_REQUEST (the wire protocol's MAX_CTRL_LEN). */
#define NETGPU_MAX_WIRE_CONTROL		(64u * 1024)

/* What an opcode's first buffer must satisfy besides its direction. */
enum netgpu_arg_rule {
	NETGPU_ARG_NONE,
	NETGPU_ARG_NAME,	/* args[1] == length of buffer 0, 1..MAX_NAME_LEN */
	NETGPU_ARG_PARAMS,	/* length of buffer 0 <= MAX_PARAM_BUFFER */
	NETGPU_ARG_INFO,	/* length of buffer 0 >= DEVICE_INFO_SIZE */
	NETGPU_ARG_WIRE,	/* args[0] == length of buffer 0, 1..MAX_WIRE_CONTROL */
};

struct netgpu_op_rule {
	u8 nbufs;		/* data buffers, in descriptor order (inputs first) */
	u8 out_mask;		/* bit i: the device writes buffer i */
	bool may_async;		/* the ASYNC flag is allowed */
	u8 arg;			/* enum netgpu_arg_rule */
	u64 feature;		/* a device feature the opcode needs, or 0 */
};

/* What the device negotiated, as far as validation cares. */
struct netgpu_limits {
	u64 features;		/* DRIVER_FEATURES written to the device */
	u32 max_transfer;	/* bytes per command, all buffers */
	u32 max_sg;		/* scatter entries per command, all buffers */
	bool dir_flags;		/* the device knows SG_FLAG_DEVICE_WRITE (ABI >= 1.1) */
};

struct netgpu_buf_spec {
	u64 uaddr;
	u32 len;
	bool device_writes;	/* pin writable, flag SG_FLAG_DEVICE_WRITE */
};

/* A checked descriptor: what to pin, in which direction. */
struct netgpu_cmd_spec {
	u16 opcode;
	u16 flags;
	unsigned int nbufs;
	u64 total;
	struct netgpu_buf_spec bufs[NETGPU_MAX_BUFS];
};

/* The opcode's buffers; -EINVAL for an opcode the device does not define. */
static inline int netgpu_op_rule(u16 op, struct netgpu_op_rule *r)
{
	r->nbufs = 0;
	r->out_mask = 0;
	r->may_async = false;
	r->arg = NETGPU_ARG_NONE;
	r->feature = 0;
	switch (op) {
	case NETGPU_OP_NOP:
	case NETGPU_OP_MEM_GET_INFO:
	case NETGPU_OP_CTX_CREATE:
	case NETGPU_OP_CTX_DESTROY:
	case NETGPU_OP_CTX_SYNCHRONIZE:
	case NETGPU_OP_MEM_ALLOC:
	case NETGPU_OP_MEM_FREE:
	case NETGPU_OP_MODULE_UNLOAD:
	case NETGPU_OP_STREAM_CREATE:
	case NETGPU_OP_STREAM_DESTROY:
	case NETGPU_OP_STREAM_SYNCHRONIZE:
	case NETGPU_OP_STREAM_QUERY:
	case NETGPU_OP_EVENT_CREATE:
	case NETGPU_OP_EVENT_SYNCHRONIZE:
	case NETGPU_OP_EVENT_QUERY:
	case NETGPU_OP_EVENT_ELAPSED_TIME:
	case NETGPU_OP_EVENT_DESTROY:
		return 0;
	case NETGPU_OP_MEMCPY_DTOD:
	case NETGPU_OP_MEMSET:
	case NETGPU_OP_EVENT_RECORD:
		r->may_async = true;
		return 0;
	case NETGPU_OP_MEMCPY_HTOD:
		r->nbufs = 1;
		r->may_async = true;
		return 0;
	case NETGPU_OP_LAUNCH_KERNEL:
		r->nbufs = 1;
		r->may_async = true;
		r->arg = NETGPU_ARG_PARAMS;
		return 0;
	case NETGPU_OP_MODULE_LOAD:
		r->nbufs = 1;
		return 0;
	case NETGPU_OP_MODULE_GET_GLOBAL:
		r->nbufs = 1;
		r->arg = NETGPU_ARG_NAME;
		return 0;
	case NETGPU_OP_DEVICE_QUERY:
		r->nbufs = 1;
		r->out_mask = 1;
		r->arg = NETGPU_ARG_INFO;
		return 0;
	case NETGPU_OP_MEMCPY_DTOH:
		r->nbufs = 1;
		r->out_mask = 1;
		return 0;
	case NETGPU_OP_MODULE_GET_FUNCTION:
		r->nbufs = 2;
		r->out_mask = 2;
		r->arg = NETGPU_ARG_NAME;
		return 0;
	case NETGPU_OP_WIRE_REQUEST:
		/* Control section, data section, output (reply control then reply data). */
		r->nbufs = 3;
		r->out_mask = 4;
		r->may_async = true;
		r->arg = NETGPU_ARG_WIRE;
		r->feature = NETGPU_FEATURE_WIRE_REQUEST;
		return 0;
	default:
		return -EINVAL;
	}
}

/*
 * Checks a descriptor as user space wrote it (scatter entries hold user addresses) and
 * says what to pin. Returns 0, -EINVAL (malformed), -EFAULT (an address range wraps) or
 * -E2BIG (over a device limit).
 */
static inline int netgpu_check_cmd(const struct netgpu_command *cmd,
				   const struct netgpu_limits *lim, struct netgpu_cmd_spec *spec)
{
	struct netgpu_op_rule r;
	u16 flags = le16_to_cpu(cmd->flags);
	unsigned int i;
	u64 total = 0;
	int ret;

	spec->nbufs = 0;
	spec->total = 0;
	ret = netgpu_op_rule(le16_to_cpu(cmd->opcode), &r);
	if (ret)
		return ret;
	if (r.feature && !(lim->features & r.feature))
		return -EINVAL;
	if (flags & ~NETGPU_CMD_FLAG_ASYNC)
		return -EINVAL;
	if ((flags & NETGPU_CMD_FLAG_ASYNC) &&
	    (!r.may_async || !(lim->features & NETGPU_FEATURE_ASYNC)))
		return -EINVAL;
	if (cmd->reserved || le32_to_cpu(cmd->sg_count) != r.nbufs)
		return -EINVAL;
	for (i = 0; i < r.nbufs; i++) {
		u64 addr = le64_to_cpu(cmd->sg[i].addr);
		u32 len = le32_to_cpu(cmd->sg[i].len);

		if (cmd->sg[i].flags)
			return -EINVAL;
		if (addr + len < addr)
			return -EFAULT;
		total += len;
		if (total > lim->max_transfer)
			return -E2BIG;
		spec->bufs[i].uaddr = addr;
		spec->bufs[i].len = len;
		spec->bufs[i].device_writes = (r.out_mask >> i) & 1;
	}
	switch (r.arg) {
	case NETGPU_ARG_NAME:
		if (spec->bufs[0].len == 0 || spec->bufs[0].len > NETGPU_MAX_NAME_LEN ||
		    le64_to_cpu(cmd->args[1]) != spec->bufs[0].len)
			return -EINVAL;
		break;
	case NETGPU_ARG_PARAMS:
		if (spec->bufs[0].len > NETGPU_MAX_PARAM_BUFFER)
			return -EINVAL;
		break;
	case NETGPU_ARG_INFO:
		if (spec->bufs[0].len < NETGPU_DEVICE_INFO_SIZE)
			return -EINVAL;
		break;
	case NETGPU_ARG_WIRE:
		if (spec->bufs[0].len == 0 || spec->bufs[0].len > NETGPU_MAX_WIRE_CONTROL ||
		    le64_to_cpu(cmd->args[0]) != spec->bufs[0].len)
			return -EINVAL;
		break;
	default:
		break;
	}
	spec->opcode = le16_to_cpu(cmd->opcode);
	spec->flags = flags;
	spec->nbufs = r.nbufs;
	spec->total = total;
	return 0;
}

/*
 * Scatter list layout. The module pins and maps each buffer, counts its DMA segments, then
 * asks netgpu_sg_plan() where entries go: inline in the descriptor (up to 3) or in an
 * indirect table of plan->entries entries. netgpu_sg_put() writes entry k; after the last,
 * netgpu_sg_finish() completes the descriptor.
 */
struct netgpu_sg_plan {
	u32 entries;		/* data entries, all buffers */
	bool indirect;
};

static inline int netgpu_sg_plan(const struct netgpu_limits *lim, const u32 *nsegs,
				 unsigned int nbufs, struct netgpu_sg_plan *plan)
{
	unsigned int i;
	u64 n = 0;

	for (i = 0; i < nbufs; i++)
		n += nsegs[i];
	if (n > lim->max_sg)
		return -E2BIG;
	plan->entries = n;
	plan->indirect = n > NETGPU_INLINE_SG_ENTRIES;
	if (plan->indirect && !(lim->features & NETGPU_FEATURE_SG_INDIRECT))
		return -E2BIG;
	return 0;
}

/* The entry flags of a segment of a buffer the device writes (or not). */
static inline u32 netgpu_sg_flags(const struct netgpu_limits *lim, bool device_writes)
{
	return device_writes && lim->dir_flags ? NETGPU_SG_FLAG_DEVICE_WRITE : 0;
}

/*
 * Writes data entry @k (0 <= k < plan->entries) into @cmd (inline) or @table (indirect).
 * Returns -EINVAL for k out of range, which the module's own loop never produces.
 */
static inline int netgpu_sg_put(struct netgpu_command *cmd, struct netgpu_sg_entry *table,
				const struct netgpu_sg_plan *plan, u32 k, u64 addr, u32 len,
				u32 flags)
{
	struct netgpu_sg_entry *e;

	if (k >= plan->entries)
		return -EINVAL;
	e = plan->indirect ? &table[k] : &cmd->sg[k];
	e->addr = cpu_to_le64(addr);
	e->len = cpu_to_le32(len);
	e->flags = cpu_to_le32(flags);
	return 0;
}

/* Clears @cmd's user scatter entries before netgpu_sg_put() fills them. */
static inline void netgpu_sg_begin(struct netgpu_command *cmd)
{
	unsigned int i;

	for (i = 0; i < NETGPU_INLINE_SG_ENTRIES; i++) {
		cmd->sg[i].addr = 0;
		cmd->sg[i].len = 0;
		cmd->sg[i].flags = 0;
	}
}

/* Completes @cmd: entry count, and the indirect table at @table_dma when there is one. */
static inline void netgpu_sg_finish(struct netgpu_command *cmd, const struct netgpu_sg_plan *plan,
				    u64 table_dma)
{
	cmd->sg_count = cpu_to_le32(plan->entries);
	if (!plan->indirect)
		return;
	cmd->flags |= cpu_to_le16(NETGPU_CMD_FLAG_SG_INDIRECT);
	cmd->sg[0].addr = cpu_to_le64(table_dma);
	cmd->sg[0].len = cpu_to_le32(plan->entries * (u32)sizeof(struct netgpu_sg_entry));
	cmd->sg[0].flags = 0;
}

/*
 * Completion ids. The module puts a tag (the command's slot in the queue's in-flight table,
 * below the queue size) in the low 16 bits of cid and a per-slot generation in the high 16
 * bits, so a stale or forged completion can be recognised and dropped.
 */
static inline u32 netgpu_cid_make(u16 tag, u16 gen)
{
	return ((u32)gen << 16) | tag;
}

static inline u16 netgpu_cid_tag(u32 cid)
{
	return cid & 0xffff;
}

#endif /* NETGPU_CHECK_H */
