/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR Apache-2.0 */
/*
 * netgpu user-space interface: /dev/netgpuN. The full description, with the lifetime and
 * limit rules, is docs/guest-driver.md.
 *
 * Each open file owns one queue pair of the device (and, through the commands it submits,
 * its own remote contexts). Commands are the device's own 128-byte descriptors (struct
 * netgpu_command, netgpu_abi.h) in which scatter-list entries hold USER virtual addresses:
 * sg[i].addr = pointer, sg[i].len = length, sg[i].flags = 0, sg_count = the number of buffers
 * the opcode takes (0; 1; 2 for MODULE_GET_FUNCTION: the name, then the output table; 3 for
 * WIRE_REQUEST: the control section, the data section, the output). The
 * module checks each descriptor (opcode, flags, and every argument the device uses to read
 * the buffers: a symbol name's length args[1] must be the name buffer's length, a
 * WIRE_REQUEST's control length args[0] its first buffer's length), pins the
 * buffers (writable only those the device writes), charges them to RLIMIT_MEMLOCK, and
 * rewrites them into guest-physical scatter lists; user space never supplies a physical
 * address. The module assigns cid itself.
 *
 * Several threads may use one file at once: each call's commands are queued in order and as
 * a whole (commands of one call are never interleaved with another call's), no call holds a
 * lock while it waits, and completions are matched to their commands by id, so a short
 * command is not held back by another thread's long one in the module (the device may still
 * complete a queue's commands in order unless it offers out-of-order completion).
 *
 * NETGPU_IOC_SUBMIT (blocking): returns when every command of the batch has completed, each
 * completion copied into its slot (cpl.cid = the command's index in the batch). Only a fatal
 * signal ends the wait early (the commands stay queued and are cleaned up when they complete
 * or the file is closed).
 *
 * NETGPU_IOC_QUEUE (non-blocking): queues the batch and returns at once with the sequence
 * number of its first command (command i has seq + i; numbers are per file and never reused).
 * Buffers stay pinned until their command completes, so they must stay valid (and, for
 * device-to-host copies, untouched) until then. Completions are kept until reaped with
 * NETGPU_IOC_WAIT (cpl.cid = the low 32 bits of seq); at most NETGPU_MAX_QUEUED commands per
 * file may be queued or completed-but-unreaped, beyond that QUEUE fails with EAGAIN.
 * poll()/epoll: EPOLLIN when a queued command's completion waits to be reaped, EPOLLERR when
 * the queue failed (device reset, removal, device error).
 *
 * Errors: EINVAL malformed descriptor; EFAULT a buffer is not mapped (or not writable where
 * the device writes); E2BIG over a device limit (MAX_TRANSFER bytes or MAX_SG_ENTRIES
 * segments per command: split large copies); ENOMEM pinning would exceed RLIMIT_MEMLOCK
 * (CAP_IPC_LOCK lifts it) or no memory; EIO the queue failed (device reset, device error,
 * backend lost: the file's remote objects are gone, reopen); ENODEV the device was removed.
 * open(): EBUSY every queue is in use, EDQUOT this user holds max_queues_per_user queues
 * (module parameter), ENODEV/EIO/ETIMEDOUT the device is gone, failed or not ready.
 */
#ifndef _UAPI_NETGPU_H
#define _UAPI_NETGPU_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define NETGPU_UAPI_VERSION	1
#define NETGPU_MAX_BATCH	128	/* commands per SUBMIT or QUEUE call */
#define NETGPU_MAX_QUEUED	4096	/* QUEUE'd commands per file not yet reaped */
#define NETGPU_MAX_WAIT		128	/* entries per WAIT call */

struct netgpu_ioc_cmd {
	__u8 desc[128];		/* in: struct netgpu_command */
	__u8 cpl[32];		/* out (SUBMIT only): struct netgpu_completion */
};

struct netgpu_ioc_submit {
	__u64 cmds;		/* user pointer to count struct netgpu_ioc_cmd */
	__u32 count;		/* 1 .. NETGPU_MAX_BATCH */
	__u32 flags;		/* must be 0 */
};

struct netgpu_ioc_queue {
	__u64 cmds;		/* user pointer to count struct netgpu_ioc_cmd; cpl untouched */
	__u32 count;		/* 1 .. NETGPU_MAX_BATCH */
	__u32 flags;		/* must be 0 */
	__u64 seq;		/* out: sequence number of cmds[0] */
};

/* struct netgpu_ioc_reap.state */
#define NETGPU_REAP_PENDING	0	/* not completed yet */
#define NETGPU_REAP_DONE	1	/* completed: cpl holds the completion; seq is forgotten */
#define NETGPU_REAP_UNKNOWN	2	/* not queued on this file, or already reaped */
#define NETGPU_REAP_LOST	3	/* will never complete: the queue failed (see EIO above) */

struct netgpu_ioc_reap {
	__u64 seq;		/* in: the command (out with NETGPU_WAIT_COLLECT) */
	__u32 state;		/* out: NETGPU_REAP_* */
	__u32 reserved;		/* must be 0 */
	__u8 cpl[32];		/* out when DONE: struct netgpu_completion */
};

/*
 * struct netgpu_ioc_wait.flags (at most one of ANY and COLLECT):
 *   0        wait until every listed command is no longer pending; then reap them all
 *   ANY      wait until at least one listed command is no longer pending; reap those that
 *            are not (the others read PENDING)
 *   COLLECT  ignore the seq fields: wait until at least one queued command has completed;
 *            reap up to count of them, oldest completion first (done = how many)
 * timeout_ns < 0 waits without limit, 0 does not sleep. On ETIMEDOUT or EINTR (any signal)
 * nothing is reaped and the entries are not written. A DONE, UNKNOWN or LOST entry is no
 * longer pending; reaping forgets a command, so a second reap of it reads UNKNOWN.
 */
#define NETGPU_WAIT_ANY		(1u << 0)
#define NETGPU_WAIT_COLLECT	(1u << 1)

struct netgpu_ioc_wait {
	__u64 reaps;		/* user pointer to count struct netgpu_ioc_reap */
	__u32 count;		/* 1 .. NETGPU_MAX_WAIT */
	__u32 flags;		/* NETGPU_WAIT_* */
	__s64 timeout_ns;
	__u32 done;		/* out: entries no longer pending */
	__u32 reserved;		/* must be 0 */
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
	__u32 features;		/* low 32 bits of the features the module negotiated */
	__u8 uuid[16];
	char name[64];
};

#define NETGPU_IOC_MAGIC	'N'
#define NETGPU_IOC_INFO		_IOR(NETGPU_IOC_MAGIC, 0x00, struct netgpu_ioc_info)
#define NETGPU_IOC_SUBMIT	_IOWR(NETGPU_IOC_MAGIC, 0x01, struct netgpu_ioc_submit)
#define NETGPU_IOC_QUEUE	_IOWR(NETGPU_IOC_MAGIC, 0x02, struct netgpu_ioc_queue)
#define NETGPU_IOC_WAIT		_IOWR(NETGPU_IOC_MAGIC, 0x03, struct netgpu_ioc_wait)

#endif /* _UAPI_NETGPU_H */
