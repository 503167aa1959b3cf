// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu-stress: a process that keeps /dev/netgpu0 busy, for the lifecycle tests (killed
 * mid-command, device reset and hot-unplug under load).
 *   netgpu-stress meminfo       prints "free <bytes> total <bytes>" (MEM_GET_INFO)
 *   netgpu-stress hold <MiB>    creates a context, allocates <MiB> of device memory, prints
 *                               "HOLDING", then copies a <MiB> buffer to the device and back
 *                               in a loop until a call fails; then prints "ERROR <errno
 *                               name>" and exits 3
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../netgpu_abi.h"
#include "../include/uapi/netgpu.h"

static int submit(int fd, struct netgpu_command *c, struct netgpu_completion *cpl)
{
	struct netgpu_ioc_cmd io;
	struct netgpu_ioc_submit s = { .cmds = (uintptr_t)&io, .count = 1 };

	memcpy(io.desc, c, sizeof(*c));
	if (ioctl(fd, NETGPU_IOC_SUBMIT, &s))
		return -errno;
	memcpy(cpl, io.cpl, sizeof(*cpl));
	return (int)cpl->result;
}

static struct netgpu_command cmd(uint16_t op, uint64_t a0, uint64_t a1, uint64_t a2)
{
	struct netgpu_command c;

	memset(&c, 0, sizeof(c));
	c.opcode = op;
	c.args[0] = a0;
	c.args[1] = a1;
	c.args[2] = a2;
	return c;
}

static int fail(const char *what, int r)
{
	if (r < 0)
		printf("ERROR %s %s\n", what, strerror(-r));
	else
		printf("ERROR %s CUresult %d\n", what, r);
	fflush(stdout);
	return 3;
}

int main(int argc, char **argv)
{
	struct netgpu_completion cpl;
	struct netgpu_command c;
	int fd, r;

	if (argc < 2) {
		fprintf(stderr, "usage: netgpu-stress meminfo | hold <MiB>\n");
		return 2;
	}
	fd = open("/dev/netgpu0", O_RDWR);
	if (fd < 0) {
		printf("ERROR open %s\n", strerror(errno));
		return 3;
	}
	if (strcmp(argv[1], "meminfo") == 0) {
		c = cmd(NETGPU_OP_MEM_GET_INFO, 0, 0, 0);
		r = submit(fd, &c, &cpl);
		if (r)
			return fail("mem-get-info", r);
		printf("free %llu total %llu\n", (unsigned long long)cpl.value0,
		       (unsigned long long)cpl.value1);
		return 0;
	}
	if (strcmp(argv[1], "hold") != 0 || argc < 3)
		return 2;
	size_t n = (size_t)atoi(argv[2]) << 20;
	c = cmd(NETGPU_OP_CTX_CREATE, 0, 0, 0);
	r = submit(fd, &c, &cpl);
	if (r)
		return fail("ctx-create", r);
	uint64_t ctx = cpl.value0;
	c = cmd(NETGPU_OP_MEM_ALLOC, ctx, n, 0);
	r = submit(fd, &c, &cpl);
	if (r)
		return fail("mem-alloc", r);
	uint64_t dptr = cpl.value0;
	unsigned char *buf = malloc(n);
	if (!buf)
		return 2;
	memset(buf, 0x5a, n);
	printf("HOLDING\n");
	fflush(stdout);
	for (unsigned long i = 0;; i++) {
		c = cmd(i % 2 ? NETGPU_OP_MEMCPY_DTOH : NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
		c.sg[0].addr = (uintptr_t)buf;
		c.sg[0].len = n;
		c.sg_count = 1;
		r = submit(fd, &c, &cpl);
		if (r)
			return fail("memcpy", r);
	}
}
