// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu-selftest: drives /dev/netgpu0 through the module's ioctls with no CUDA library in
 * between, and checks the results: device info, remote context and memory, copies through
 * pinned user buffers (including one large enough to need an indirect scatter table), a
 * batch of asynchronous memsets, device query, isolation of a second open file, and bad
 * input the module must refuse. Prints "NETGPU-TEST: PASS|FAIL name" lines.
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

static int failures;

static void check(const char *name, int ok)
{
	printf("NETGPU-TEST: %s %s\n", ok ? "PASS" : "FAIL", name);
	if (!ok)
		failures++;
}

static struct netgpu_command cmd(uint16_t op, int nargs, const uint64_t *args)
{
	struct netgpu_command c;

	memset(&c, 0, sizeof(c));
	c.opcode = op;
	for (int i = 0; i < nargs; i++)
		c.args[i] = args[i];
	return c;
}

static void buf(struct netgpu_command *c, const void *p, size_t len)
{
	c->sg[c->sg_count].addr = (uintptr_t)p;
	c->sg[c->sg_count].len = len;
	c->sg_count++;
}

/* Submits @n commands; returns the ioctl result and fills @cpl. */
static int submit(int fd, struct netgpu_command *cmds, int n, struct netgpu_completion *cpl)
{
	struct netgpu_ioc_cmd io[NETGPU_MAX_BATCH];
	struct netgpu_ioc_submit s = { .cmds = (uintptr_t)io, .count = n };
	int r;

	for (int i = 0; i < n; i++)
		memcpy(io[i].desc, &cmds[i], sizeof(cmds[i]));
	r = ioctl(fd, NETGPU_IOC_SUBMIT, &s);
	if (r == 0)
		for (int i = 0; i < n; i++)
			memcpy(&cpl[i], io[i].cpl, sizeof(cpl[i]));
	return r;
}

static int one(int fd, struct netgpu_command c, struct netgpu_completion *out)
{
	struct netgpu_completion cpl;
	int r = submit(fd, &c, 1, &cpl);

	if (out)
		*out = cpl;
	return r == 0 ? (int)cpl.result : -1;
}

int main(void)
{
	struct netgpu_ioc_info info;
	struct netgpu_completion cpl;
	int fd = open("/dev/netgpu0", O_RDWR);

	check("open", fd >= 0);
	if (fd < 0) {
		perror("open /dev/netgpu0");
		return 1;
	}
	check("info-ioctl", ioctl(fd, NETGPU_IOC_INFO, &info) == 0);
	printf("remote GPU: %s, %llu bytes, executor %u, queue %u\n", info.name,
	       (unsigned long long)info.total_mem, info.executor, info.queue);
	check("info-ready", (info.status & NETGPU_STATUS_READY) != 0);
	check("info-name", strcmp(info.name, "netgpu CPU executor") == 0);

	uint64_t flags0 = 0;
	check("ctx-create", one(fd, cmd(NETGPU_OP_CTX_CREATE, 1, &flags0), &cpl) == 0);
	uint64_t ctx = cpl.value0;

	/* 3 MiB: more pages than fit inline, so the module builds an indirect table. */
	size_t n = 3u << 20;
	uint64_t a[2] = { ctx, n };
	check("mem-alloc", one(fd, cmd(NETGPU_OP_MEM_ALLOC, 2, a), &cpl) == 0);
	uint64_t dptr = cpl.value0;
	unsigned char *src = malloc(n), *dst = malloc(n);
	for (size_t i = 0; i < n; i++)
		src[i] = (unsigned char)(i * 131 + 7);
	memset(dst, 0, n);
	uint64_t h[3] = { ctx, dptr, 0 };
	struct netgpu_command c = cmd(NETGPU_OP_MEMCPY_HTOD, 3, h);
	buf(&c, src, n);
	check("memcpy-htod", one(fd, c, NULL) == 0);
	c = cmd(NETGPU_OP_MEMCPY_DTOH, 3, h);
	buf(&c, dst, n);
	check("memcpy-dtoh", one(fd, c, NULL) == 0);
	check("round-trip-bytes-equal", memcmp(src, dst, n) == 0);

	/* A batch of ASYNC memsets then a synchronous read. */
	struct netgpu_command batch[17];
	for (int i = 0; i < 16; i++) {
		uint64_t m[6] = { ctx, dptr + i * 4096, 0x40 + i, 1, 4096, 0 };
		batch[i] = cmd(NETGPU_OP_MEMSET, 6, m);
		batch[i].flags = NETGPU_CMD_FLAG_ASYNC;
	}
	batch[16] = cmd(NETGPU_OP_MEMCPY_DTOH, 3, h);
	buf(&batch[16], dst, 16 * 4096);
	struct netgpu_completion cpls[17];
	int ok = submit(fd, batch, 17, cpls) == 0;
	for (int i = 0; ok && i < 17; i++)
		ok = cpls[i].result == 0;
	for (int i = 0; ok && i < 16; i++)
		ok = dst[i * 4096] == 0x40 + i && dst[i * 4096 + 4095] == 0x40 + i;
	check("async-memset-batch", ok);

	unsigned char rec[NETGPU_DEVICE_INFO_SIZE];
	c = cmd(NETGPU_OP_DEVICE_QUERY, 0, NULL);
	buf(&c, rec, sizeof(rec));
	check("device-query", one(fd, c, &cpl) == 0 && strcmp((char *)rec, "netgpu CPU executor") == 0);

	/* Bad input the module refuses before the device sees it. */
	c = cmd(0x7777, 0, NULL);
	check("unknown-opcode-refused", submit(fd, &c, 1, &cpl) == -1 && errno == EINVAL);
	c = cmd(NETGPU_OP_MEMCPY_HTOD, 3, h);
	buf(&c, (void *)0x10, 4096);
	check("unmapped-user-buffer-refused", submit(fd, &c, 1, &cpl) == -1 && errno == EFAULT);
	c = cmd(NETGPU_OP_MEMCPY_HTOD, 3, h);
	check("missing-buffer-refused", submit(fd, &c, 1, &cpl) == -1 && errno == EINVAL);
	c = cmd(NETGPU_OP_MEMCPY_DTOH, 3, h);
	buf(&c, dst, 4096);
	c.flags = NETGPU_CMD_FLAG_SG_INDIRECT;
	check("user-indirect-flag-refused", submit(fd, &c, 1, &cpl) == -1 && errno == EINVAL);
	c = cmd(NETGPU_OP_MEMCPY_DTOH, 3, h);
	buf(&c, (const void *)"read-only", 4096);
	check("readonly-buffer-as-output-refused", submit(fd, &c, 1, &cpl) == -1 && errno == EFAULT);

	/* A second open file is a second queue: this file's context means nothing there. */
	int fd2 = open("/dev/netgpu0", O_RDWR);
	struct netgpu_ioc_info info2;
	check("second-open", fd2 >= 0 && ioctl(fd2, NETGPU_IOC_INFO, &info2) == 0 &&
				     info2.queue != info.queue);
	uint64_t a2[2] = { ctx, 4096 };
	int r2 = fd2 >= 0 ? one(fd2, cmd(NETGPU_OP_MEM_ALLOC, 2, a2), &cpl) : -1;
	/* 201 = CUDA_ERROR_INVALID_CONTEXT: each open file has its own backend session. */
	check("foreign-context-refused-on-second-queue", r2 == 201);
	close(fd2);

	uint64_t d[1] = { ctx };
	check("ctx-destroy", one(fd, cmd(NETGPU_OP_CTX_DESTROY, 1, d), NULL) == 0);
	close(fd);
	printf("netgpu-selftest: %d failures\n", failures);
	return failures ? 1 : 0;
}
