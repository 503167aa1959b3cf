/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the module's C test programs: result lines, descriptors, ioctls. Each
 * test program is one .c file that includes this header (static functions).
 */
#ifndef NETGPU_TEST_H
#define NETGPU_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "../netgpu_abi.h"
#include "../include/uapi/netgpu.h"

static int failures;

static inline void check(const char *name, int ok)
{
	printf("NETGPU-TEST: %s %s\n", ok ? "PASS" : "FAIL", name);
	fflush(stdout);
	if (!ok)
		failures++;
}

static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline struct netgpu_command cmd(uint16_t op, int nargs, const uint64_t *args)
{
	struct netgpu_command c;

	memset(&c, 0, sizeof(c));
	c.opcode = op;
	for (int i = 0; i < nargs; i++)
		c.args[i] = args[i];
	return c;
}

static inline struct netgpu_command cmd3(uint16_t op, uint64_t a0, uint64_t a1, uint64_t a2)
{
	uint64_t a[3] = { a0, a1, a2 };

	return cmd(op, 3, a);
}

static inline void buf(struct netgpu_command *c, const void *p, size_t len)
{
	c->sg[c->sg_count].addr = (uintptr_t)p;
	c->sg[c->sg_count].len = len;
	c->sg_count++;
}

/* Submits @n commands and waits; returns the ioctl result (-1, errno) and fills @cpl. */
static inline int submit(int fd, struct netgpu_command *cmds, int n, struct netgpu_completion *cpl)
{
	struct netgpu_ioc_cmd io[NETGPU_MAX_BATCH];
	struct netgpu_ioc_submit s = { .cmds = (uintptr_t)io, .count = n };
	int r;

	memset(io, 0, sizeof(io[0]) * n);
	for (int i = 0; i < n; i++)
		memcpy(io[i].desc, &cmds[i], sizeof(cmds[i]));
	r = ioctl(fd, NETGPU_IOC_SUBMIT, &s);
	if (r == 0 && cpl)
		for (int i = 0; i < n; i++)
			memcpy(&cpl[i], io[i].cpl, sizeof(cpl[i]));
	return r;
}

/* One command: its CUresult, or -errno when the module refused it. */
static inline int one(int fd, struct netgpu_command c, struct netgpu_completion *out)
{
	struct netgpu_completion cpl;
	int r = submit(fd, &c, 1, &cpl);

	if (r)
		return -errno;
	if (out)
		*out = cpl;
	return (int)cpl.result;
}

/* Queues @n commands without waiting; returns the ioctl result, first sequence in @seq. */
static inline int queue_cmds(int fd, struct netgpu_command *cmds, int n, uint64_t *seq)
{
	struct netgpu_ioc_cmd io[NETGPU_MAX_BATCH];
	struct netgpu_ioc_queue q = { .cmds = (uintptr_t)io, .count = n };
	int r;

	memset(io, 0, sizeof(io[0]) * n);
	for (int i = 0; i < n; i++)
		memcpy(io[i].desc, &cmds[i], sizeof(cmds[i]));
	r = ioctl(fd, NETGPU_IOC_QUEUE, &q);
	if (r == 0)
		*seq = q.seq;
	return r;
}

/* NETGPU_IOC_WAIT on @n entries; returns the ioctl result, entries and done filled. */
static inline int wait_cmds(int fd, struct netgpu_ioc_reap *r, int n, uint32_t flags,
			    int64_t timeout_ns, uint32_t *done)
{
	struct netgpu_ioc_wait w = { .reaps = (uintptr_t)r, .count = n, .flags = flags,
				     .timeout_ns = timeout_ns };
	int ret = ioctl(fd, NETGPU_IOC_WAIT, &w);

	if (done)
		*done = w.done;
	return ret;
}

static inline struct netgpu_completion reap_cpl(const struct netgpu_ioc_reap *r)
{
	struct netgpu_completion c;

	memcpy(&c, r->cpl, sizeof(c));
	return c;
}

/*
 * A PTX module for the tests: spin(n, out) loops n times and stores n at out; parm(a, b,
 * c) takes three parameters and does nothing (MODULE_GET_FUNCTION reports 3 records).
 */
static const char netgpu_test_ptx[] =
	".version 7.0\n"
	".target sm_80\n"
	".address_size 64\n"
	"\n"
	".visible .entry spin(\n"
	"\t.param .u64 spin_param_0,\n"
	"\t.param .u64 spin_param_1\n"
	")\n"
	"{\n"
	"\t.reg .pred %p<2>;\n"
	"\t.reg .b64 %rd<6>;\n"
	"\n"
	"\tld.param.u64 %rd1, [spin_param_0];\n"
	"\tld.param.u64 %rd2, [spin_param_1];\n"
	"\tmov.u64 %rd3, 0;\n"
	"$L_loop:\n"
	"\tsetp.ge.u64 %p1, %rd3, %rd1;\n"
	"\t@%p1 bra $L_done;\n"
	"\tadd.u64 %rd3, %rd3, 1;\n"
	"\tbra.uni $L_loop;\n"
	"$L_done:\n"
	"\tcvta.to.global.u64 %rd4, %rd2;\n"
	"\tst.global.u64 [%rd4], %rd3;\n"
	"\tret;\n"
	"}\n"
	"\n"
	".visible .entry parm(\n"
	"\t.param .u64 parm_param_0,\n"
	"\t.param .u32 parm_param_1,\n"
	"\t.param .u64 parm_param_2\n"
	")\n"
	"{\n"
	"\tret;\n"
	"}\n";

/* Loads netgpu_test_ptx into @ctx; returns the module handle or 0. */
static inline uint64_t load_test_module(int fd, uint64_t ctx)
{
	struct netgpu_completion cpl;
	struct netgpu_command c = cmd3(NETGPU_OP_MODULE_LOAD, ctx, 0, 0);

	buf(&c, netgpu_test_ptx, sizeof(netgpu_test_ptx));
	if (one(fd, c, &cpl) != 0)
		return 0;
	return cpl.value0;
}

/* MODULE_GET_FUNCTION of @name (exact length); returns the function or 0. */
static inline uint64_t get_function(int fd, uint64_t module, const char *name)
{
	struct netgpu_completion cpl;
	unsigned char table[64 * NETGPU_PARAM_RECORD_SIZE];
	struct netgpu_command c = cmd3(NETGPU_OP_MODULE_GET_FUNCTION, module, strlen(name), 0);

	buf(&c, name, strlen(name));
	buf(&c, table, sizeof(table));
	if (one(fd, c, &cpl) != 0)
		return 0;
	return cpl.value0;
}

/* A LAUNCH_KERNEL of spin(n, out) on stream 0; ASYNC when @async. */
static inline struct netgpu_command spin_launch(uint64_t func, uint64_t *params, uint64_t n,
						uint64_t out, int async)
{
	uint64_t a[6] = { func, 1 | (1ull << 32), 1 | (1ull << 32), 1 | (1ull << 32), 0, 0 };
	struct netgpu_command c = cmd(NETGPU_OP_LAUNCH_KERNEL, 6, a);

	params[0] = n;
	params[1] = out;
	if (async)
		c.flags = NETGPU_CMD_FLAG_ASYNC;
	buf(&c, params, 2 * sizeof(uint64_t));
	return c;
}

#endif /* NETGPU_TEST_H */
