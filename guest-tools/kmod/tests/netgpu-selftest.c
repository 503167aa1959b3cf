// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu-selftest: drives /dev/netgpu0 through the module's ioctls with no CUDA library in
 * between, and checks the results: device info, remote context and memory, copies through
 * pinned user buffers (including one large enough to need an indirect scatter table), a
 * batch of asynchronous memsets, device query, isolation of a second open file, bad input
 * the module must refuse, non-blocking submission (QUEUE, WAIT, poll), and the regression
 * tests of the security findings (issue 12) that fail on the module before they were fixed:
 *   - finding 1: a symbol name's length that disagrees with its buffer is refused, and a
 *     name in a read-only mapping is never written (the old module let the device split the
 *     joined list at args[1] and write the parameter table into the name's read-only page);
 *   - finding 8: pinning beyond RLIMIT_MEMLOCK fails with ENOMEM (the old module pinned
 *     anything), the charge shows in VmPin and is gone afterwards; one user holds at most
 *     max_queues_per_user queues (the old module let one user take all 64).
 * Prints "NETGPU-TEST: PASS|FAIL name" lines. Runs as root (it changes module parameters).
 */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "netgpu-test.h"

/* VmPin of this process in kB, or -1. */
static long vm_pin_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void test_basic(int fd, uint64_t *ctx_out, uint64_t *dptr_out)
{
	struct netgpu_ioc_info info;
	struct netgpu_completion cpl;
	struct netgpu_command c;
	uint64_t flags0 = 0;

	check("info-ioctl", ioctl(fd, NETGPU_IOC_INFO, &info) == 0);
	printf("remote GPU: %s, %llu bytes, executor %u, queue %u, ABI %#x, features %#x\n",
	       info.name, (unsigned long long)info.total_mem, info.executor, info.queue,
	       info.abi_version, info.features);
	check("info-ready", (info.status & NETGPU_STATUS_READY) != 0);
	check("info-name", strcmp(info.name, "netgpu CPU executor") == 0);

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
	c = cmd3(NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
	buf(&c, src, n);
	check("memcpy-htod", one(fd, c, NULL) == 0);
	c = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&c, dst, n);
	check("memcpy-dtoh", one(fd, c, NULL) == 0);
	check("round-trip-bytes-equal", memcmp(src, dst, n) == 0);

	/* A batch of ASYNC memsets then a synchronous read. */
	struct netgpu_command batch[17];
	struct netgpu_completion cpls[17];

	for (int i = 0; i < 16; i++) {
		uint64_t m[6] = { ctx, dptr + i * 4096, 0x40 + i, 1, 4096, 0 };

		batch[i] = cmd(NETGPU_OP_MEMSET, 6, m);
		batch[i].flags = NETGPU_CMD_FLAG_ASYNC;
	}
	batch[16] = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&batch[16], dst, 16 * 4096);
	int ok = submit(fd, batch, 17, cpls) == 0;

	for (int i = 0; ok && i < 17; i++)
		ok = cpls[i].result == 0 && cpls[i].cid == (uint32_t)i;
	for (int i = 0; ok && i < 16; i++)
		ok = dst[i * 4096] == 0x40 + i && dst[i * 4096 + 4095] == 0x40 + i;
	check("async-memset-batch", ok);

	unsigned char rec[NETGPU_DEVICE_INFO_SIZE];

	c = cmd(NETGPU_OP_DEVICE_QUERY, 0, NULL);
	buf(&c, rec, sizeof(rec));
	check("device-query",
	      one(fd, c, &cpl) == 0 && strcmp((char *)rec, "netgpu CPU executor") == 0);

	/* Bad input the module refuses before the device sees it. */
	c = cmd(0x7777, 0, NULL);
	check("unknown-opcode-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd3(NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
	buf(&c, (void *)0x10, 4096);
	check("unmapped-user-buffer-refused", one(fd, c, NULL) == -EFAULT);
	c = cmd3(NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
	check("missing-buffer-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&c, dst, 4096);
	c.flags = NETGPU_CMD_FLAG_SG_INDIRECT;
	check("user-indirect-flag-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&c, dst, 4096);
	c.sg[0].flags = NETGPU_SG_FLAG_DEVICE_WRITE;
	check("user-sg-flags-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&c, (const void *)"read-only", 4096);
	check("readonly-buffer-as-output-refused", one(fd, c, NULL) == -EFAULT);
	c = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&c, dst, 4096);
	c.flags = NETGPU_CMD_FLAG_ASYNC;
	check("async-on-sync-opcode-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd(NETGPU_OP_DEVICE_QUERY, 0, NULL);
	buf(&c, rec, 100);
	check("short-device-query-buffer-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd3(NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
	buf(&c, src, 0);
	check("empty-buffer-allowed", one(fd, c, NULL) == 0);
	free(src);
	free(dst);
	*ctx_out = ctx;
	*dptr_out = dptr;
}

/* Finding 1: the device must never write a buffer the module pinned read-only. */
static void test_finding1(int fd, uint64_t ctx)
{
	unsigned char table[64 * NETGPU_PARAM_RECORD_SIZE], before[64], after[64];
	struct netgpu_completion cpl;
	struct netgpu_command c;
	uint64_t module = load_test_module(fd, ctx);
	int mfd = memfd_create("netgpu-name", 0);
	char *ro;

	check("finding1-module-load", module != 0);
	memset(before, 0, sizeof(before));
	memcpy(before, "parm", 4);
	check("finding1-memfd", mfd >= 0 && pwrite(mfd, before, sizeof(before), 0) == 64 &&
				ftruncate(mfd, 4096) == 0);
	ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mfd, 0);
	check("finding1-readonly-mapping", ro != MAP_FAILED);
	if (ro == MAP_FAILED)
		return;

	/* The old module accepted this and the device wrote the table into the name page. */
	c = cmd3(NETGPU_OP_MODULE_GET_FUNCTION, module, 4, 0);
	buf(&c, ro, 64);
	buf(&c, table, sizeof(table));
	check("finding1-name-length-disagrees-refused", one(fd, c, &cpl) == -EINVAL);
	check("finding1-readonly-name-untouched",
	      pread(mfd, after, sizeof(after), 0) == 64 && memcmp(before, after, 64) == 0);

	/* The same read-only name with its true length works and stays untouched. */
	memset(table, 0xee, sizeof(table));
	c = cmd3(NETGPU_OP_MODULE_GET_FUNCTION, module, 4, 0);
	buf(&c, ro, 4);
	buf(&c, table, sizeof(table));
	int r = one(fd, c, &cpl);
	uint32_t rec[6];

	memcpy(rec, table, sizeof(rec));
	printf("get-function parm: result %d, v1 %#llx, records (%u,%u) (%u,%u) (%u,%u)\n", r,
	       (unsigned long long)cpl.value1, rec[0], rec[1], rec[2], rec[3], rec[4], rec[5]);
	check("finding1-exact-name-works", r == 0 && cpl.value0 != 0 && (cpl.value1 >> 32) == 3);
	check("finding1-param-table-written",
	      rec[0] == 0 && rec[1] == 8 && rec[2] == 8 && rec[3] == 4 && rec[4] == 16 &&
	      rec[5] == 8);
	check("finding1-readonly-name-still-untouched",
	      pread(mfd, after, sizeof(after), 0) == 64 && memcmp(before, after, 64) == 0);

	c = cmd3(NETGPU_OP_MODULE_GET_GLOBAL, module, 3, 0);
	buf(&c, ro, 4);
	check("finding1-global-name-length-disagrees-refused", one(fd, c, NULL) == -EINVAL);
	c = cmd3(NETGPU_OP_MODULE_GET_FUNCTION, module, 2000, 0);
	buf(&c, ro, 2000);
	buf(&c, table, sizeof(table));
	check("finding1-name-too-long-refused", one(fd, c, NULL) == -EINVAL);
	munmap(ro, 4096);
	close(mfd);
}

/* NETGPU_IOC_QUEUE / NETGPU_IOC_WAIT / poll. */
static void test_nonblocking(int fd, uint64_t ctx, uint64_t dptr)
{
	struct netgpu_command c[3];
	struct netgpu_ioc_reap r[3];
	uint64_t seq = 0, seq2 = 0;
	uint32_t done = 0;
	int ok;

	for (int i = 0; i < 3; i++)
		c[i] = cmd(NETGPU_OP_NOP, 0, NULL);
	check("queue-ioctl", queue_cmds(fd, c, 3, &seq) == 0);
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 3; i++)
		r[i].seq = seq + i;
	ok = wait_cmds(fd, r, 3, 0, 5000000000ll, &done) == 0 && done == 3;
	for (int i = 0; ok && i < 3; i++)
		ok = r[i].state == NETGPU_REAP_DONE && reap_cpl(&r[i]).result == 0 &&
		     reap_cpl(&r[i]).cid == (uint32_t)(seq + i);
	check("wait-all-done", ok);
	memset(r, 0, sizeof(r));
	r[0].seq = seq;
	check("reaped-twice-is-unknown", wait_cmds(fd, r, 1, 0, 0, &done) == 0 &&
					 r[0].state == NETGPU_REAP_UNKNOWN);
	r[0].seq = seq + 1000;
	check("never-queued-is-unknown", wait_cmds(fd, r, 1, 0, 0, &done) == 0 &&
					 r[0].state == NETGPU_REAP_UNKNOWN);

	/* Data through a queued copy: buffers stay pinned until it completes. */
	unsigned char *dst = calloc(1, 8192);
	uint64_t m[6] = { ctx, dptr, 0x5c, 1, 8192, 0 };

	c[0] = cmd(NETGPU_OP_MEMSET, 6, m);
	c[0].flags = NETGPU_CMD_FLAG_ASYNC;
	c[1] = cmd3(NETGPU_OP_MEMCPY_DTOH, ctx, dptr, 0);
	buf(&c[1], dst, 8192);
	ok = queue_cmds(fd, c, 2, &seq) == 0;
	memset(r, 0, sizeof(r));
	r[0].seq = seq + 1;
	ok = ok && wait_cmds(fd, r, 1, 0, 5000000000ll, &done) == 0 &&
	     r[0].state == NETGPU_REAP_DONE && reap_cpl(&r[0]).result == 0 &&
	     dst[0] == 0x5c && dst[8191] == 0x5c;
	check("queued-copy-data", ok);
	/* The memset's completion is still there for COLLECT. */
	memset(r, 0, sizeof(r));
	ok = wait_cmds(fd, r, 3, NETGPU_WAIT_COLLECT, 5000000000ll, &done) == 0 && done == 1 &&
	     r[0].seq == seq && r[0].state == NETGPU_REAP_DONE && r[1].state == NETGPU_REAP_PENDING;
	check("collect-reaps-what-is-left", ok);
	free(dst);

	/* poll: readable once a queued completion waits. */
	c[0] = cmd(NETGPU_OP_NOP, 0, NULL);
	ok = queue_cmds(fd, c, 1, &seq) == 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	ok = ok && poll(&p, 1, 5000) == 1 && (p.revents & POLLIN);
	memset(r, 0, sizeof(r));
	ok = ok && wait_cmds(fd, r, 1, NETGPU_WAIT_COLLECT, 0, &done) == 0 && done == 1 &&
	     r[0].seq == seq;
	p.revents = 0;
	ok = ok && poll(&p, 1, 0) == 0;
	check("poll-readable-when-completed", ok);
	memset(r, 0, sizeof(r));
	check("collect-nothing-times-out",
	      wait_cmds(fd, r, 1, NETGPU_WAIT_COLLECT, 0, &done) == -1 && errno == ETIMEDOUT);

	/* A long command: not done at once (timeout 0), done later; ANY returns the short one. */
	uint64_t module = load_test_module(fd, ctx);
	uint64_t func = module ? get_function(fd, module, "spin") : 0;
	uint64_t params[2], out = dptr;

	check("spin-kernel", func != 0);
	c[0] = spin_launch(func, params, 3000000, out, 0);
	ok = queue_cmds(fd, c, 1, &seq) == 0;
	c[1] = cmd(NETGPU_OP_NOP, 0, NULL);
	memset(r, 0, sizeof(r));
	r[0].seq = seq;
	ok = ok && wait_cmds(fd, r, 1, 0, 0, &done) == -1 && errno == ETIMEDOUT;
	check("pending-times-out", ok);
	ok = queue_cmds(fd, &c[1], 1, &seq2) == 0;
	memset(r, 0, sizeof(r));
	r[0].seq = seq;
	r[1].seq = seq2;
	ok = ok && wait_cmds(fd, r, 2, 0, 60000000000ll, &done) == 0 && done == 2 &&
	     r[0].state == NETGPU_REAP_DONE && reap_cpl(&r[0]).result == 0 &&
	     r[1].state == NETGPU_REAP_DONE;
	check("long-command-completes", ok);
	memset(r, 0, sizeof(r));
	check("wait-bad-flags-refused",
	      wait_cmds(fd, r, 1, NETGPU_WAIT_ANY | NETGPU_WAIT_COLLECT, 0, NULL) == -1 &&
	      errno == EINVAL);
	check("wait-zero-count-refused", wait_cmds(fd, r, 0, 0, 0, NULL) == -1 && errno == EINVAL);
	struct netgpu_ioc_queue bad = { .cmds = 0, .count = 1, .flags = 1 };

	check("queue-bad-flags-refused",
	      ioctl(fd, NETGPU_IOC_QUEUE, &bad) == -1 && errno == EINVAL);
}

/*
 * Finding 8: a process over its memlock limit gets ENOMEM. The child drops every privilege
 * (CAP_IPC_LOCK lifts the limit) and keeps using the parent's open file.
 */
static void test_finding8_memlock(int fd, uint64_t ctx, uint64_t dptr)
{
	pid_t pid = fork();
	int status = 0;

	if (pid == 0) {
		struct rlimit rl = { 1 << 20, 1 << 20 };
		size_t big = 4u << 20, small = 256u << 10;
		unsigned char *p = malloc(big);
		struct netgpu_command c;
		int r1, r2, code = 0;
		long pin_after;

		memset(p, 1, big);
		if (setrlimit(RLIMIT_MEMLOCK, &rl) || setresuid(65534, 65534, 65534))
			_exit(10);
		prctl(PR_SET_DUMPABLE, 1);	/* /proc/self/status readable again */
		c = cmd3(NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
		buf(&c, p, big);
		r1 = one(fd, c, NULL);
		c = cmd3(NETGPU_OP_MEMCPY_HTOD, ctx, dptr, 0);
		buf(&c, p, small);
		r2 = one(fd, c, NULL);
		pin_after = vm_pin_kb();
		printf("memlock 1 MiB: 4 MiB copy -> %d, 256 KiB copy -> %d, VmPin after %ld kB\n",
		       r1, r2, pin_after);
		if (r1 != -ENOMEM)
			code |= 1;
		if (r2 != 0)
			code |= 2;
		if (pin_after != 0)
			code |= 4;
		_exit(code);
	}
	waitpid(pid, &status, 0);
	check("finding8-over-memlock-is-enomem", WIFEXITED(status) && !(WEXITSTATUS(status) & 9));
	check("finding8-under-memlock-works", WIFEXITED(status) && !(WEXITSTATUS(status) & 10));
	check("finding8-charge-returned", WIFEXITED(status) && !(WEXITSTATUS(status) & 12));
}

static int set_param(const char *name, const char *value)
{
	char path[128];
	int f, ok;

	snprintf(path, sizeof(path), "/sys/module/netgpu/parameters/%s", name);
	f = open(path, O_WRONLY);
	if (f < 0)
		return -1;
	ok = write(f, value, strlen(value)) == (ssize_t)strlen(value);
	close(f);
	return ok ? 0 : -1;
}

/*
 * Finding 8: one user holds at most max_queues_per_user queues (here 2), and another user
 * (root, which holds one queue already) still gets its own while the first is at its cap.
 */
static void test_finding8_queue_cap(void)
{
	int status = 0, held[2], go[2];
	char ch = 0;
	pid_t pid;

	check("finding8-set-cap", set_param("max_queues_per_user", "2") == 0 &&
				  chmod("/dev/netgpu0", 0666) == 0 && pipe(held) == 0 &&
				  pipe(go) == 0);
	pid = fork();
	if (pid == 0) {
		int a, b, c, code = 0;

		if (setresuid(65534, 65534, 65534))
			_exit(10);
		a = open("/dev/netgpu0", O_RDWR);
		b = open("/dev/netgpu0", O_RDWR);
		c = open("/dev/netgpu0", O_RDWR);
		printf("cap 2: opens -> %d %d %d (%s)\n", a, b, c, c < 0 ? strerror(errno) : "ok");
		if (a < 0 || b < 0)
			code |= 1;
		if (c >= 0 || errno != EDQUOT)
			code |= 2;
		fflush(stdout);
		if (write(held[1], "x", 1) != 1 || read(go[0], &ch, 1) != 1)
			code |= 8;
		close(a);
		close(b);
		a = open("/dev/netgpu0", O_RDWR);
		if (a < 0)
			code |= 4;
		close(a);
		_exit(code);
	}
	/* While the other user is at its cap, this one (holding one queue) gets a second. */
	int x = read(held[0], &ch, 1) == 1 ? open("/dev/netgpu0", O_RDWR) : -1;

	check("finding8-cap-is-per-user", x >= 0);
	close(x);
	if (write(go[1], "x", 1) != 1)
		perror("pipe");
	waitpid(pid, &status, 0);
	check("finding8-cap-allows-up-to-limit", WIFEXITED(status) && !(WEXITSTATUS(status) & 9));
	check("finding8-cap-refuses-beyond-limit",
	      WIFEXITED(status) && !(WEXITSTATUS(status) & 10));
	check("finding8-cap-frees-on-close", WIFEXITED(status) && !(WEXITSTATUS(status) & 12));
	set_param("max_queues_per_user", "16");
	chmod("/dev/netgpu0", 0600);
	close(held[0]);
	close(held[1]);
	close(go[0]);
	close(go[1]);
}

int main(void)
{
	struct netgpu_ioc_info info, info2;
	struct netgpu_completion cpl;
	uint64_t ctx = 0, dptr = 0;
	int fd = open("/dev/netgpu0", O_RDWR);

	check("open", fd >= 0);
	if (fd < 0) {
		perror("open /dev/netgpu0");
		return 1;
	}
	test_basic(fd, &ctx, &dptr);
	test_finding1(fd, ctx);
	test_nonblocking(fd, ctx, dptr);
	test_finding8_memlock(fd, ctx, dptr);
	test_finding8_queue_cap();

	/* A second open file is a second queue: this file's context means nothing there. */
	int fd2 = open("/dev/netgpu0", O_RDWR);

	ioctl(fd, NETGPU_IOC_INFO, &info);
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
