// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu-stress: processes that keep /dev/netgpu0 busy or hold it open, for the lifecycle
 * and torture tests (killed mid-command, device reset, unbind and hot-unplug under load).
 *   netgpu-stress meminfo        prints "free <bytes> total <bytes>" (MEM_GET_INFO)
 *   netgpu-stress hold MiB [queued]
 *                                creates a context, allocates MiB of device memory, prints
 *                                "HOLDING", then copies a MiB buffer to the device and back in
 *                                a loop (blocking SUBMIT, or with "queued" QUEUE + WAIT with
 *                                several copies in flight) until a call fails; then prints
 *                                "ERROR <what> <errno name or CUresult>" and exits 3
 *   netgpu-stress idle           opens the device, prints "HOLDING", sleeps until killed
 *   netgpu-stress use-fd N       on an inherited open file N of a removed device: INFO and
 *                                SUBMIT must both fail with ENODEV (exit 0), else exit 1
 *   netgpu-stress openclose N    N cycles of open, INFO, NOP, close; exit 0 if all worked;
 *                                prints "openclose N cycles in S s"
 *   netgpu-stress open-within S  opens and runs MEM_GET_INFO, retrying failed opens for up
 *                                to S seconds; prints "OPEN ok|<errno> after <s> s"; exit 0 on
 *                                success
 *   netgpu-stress spin N         loads a kernel that loops N times and launches it
 *                                synchronously (one long command): prints "SPINNING" before
 *                                the launch, "SPUN <CUresult>" after
 *   netgpu-stress churn MiB      forever: open, context, MiB of device memory, copies back and
 *                                forth; on any failure close and start again (a device reset
 *                                or removal ends its calls). Every call is timed; on SIGTERM
 *                                prints "CHURN copies C failures F reopens R slowest S s" and
 *                                exits 0 if no call took longer than 5 s (a call that waits
 *                                on a failed device must end within 5 s)
 */
#include <signal.h>

#include "netgpu-test.h"

static int fail(const char *what, int r)
{
	if (r < 0)
		printf("ERROR %s %s\n", what, strerror(-r));
	else
		printf("ERROR %s CUresult %d\n", what, r);
	fflush(stdout);
	return 3;
}

static int hold(int fd, size_t mib, int queued, double t_start, double t_open)
{
	struct netgpu_completion cpl;
	struct netgpu_command c;
	size_t n = mib << 20;
	double t_ctx, t_alloc;
	int r;

	c = cmd3(NETGPU_OP_CTX_CREATE, 0, 0, 0);
	r = one(fd, c, &cpl);
	if (r)
		return fail("ctx-create", r);
	uint64_t ctx = cpl.value0;

	t_ctx = now_s();
	c = cmd3(NETGPU_OP_MEM_ALLOC, ctx, n, 0);
	r = one(fd, c, &cpl);
	if (r)
		return fail("mem-alloc", r);
	t_alloc = now_s();
	uint64_t dptr = cpl.value0;
	unsigned char *b = malloc(n);

	if (!b)
		return 2;
	memset(b, 0x5a, n);
	printf("HOLDING after %.2f s (open %.2f, context %.2f, allocation %.2f)\n",
	       now_s() - t_start, t_open - t_start, t_ctx - t_open, t_alloc - t_ctx);
	fflush(stdout);
	for (unsigned long i = 0;; i++) {
		if (!queued) {
			uint16_t op = i % 2 ? NETGPU_OP_MEMCPY_DTOH : NETGPU_OP_MEMCPY_HTOD;

			c = cmd3(op, ctx, dptr, 0);
			buf(&c, b, n);
			r = one(fd, c, NULL);
			if (r)
				return fail("memcpy", r);
			continue;
		}
		/* Four copies in flight (quarters of the buffer), reaped together. */
		struct netgpu_command q[4];
		struct netgpu_ioc_reap rp[4];
		uint64_t seq;
		uint32_t done;

		for (int k = 0; k < 4; k++) {
			q[k] = cmd3(i % 2 ? NETGPU_OP_MEMCPY_DTOH : NETGPU_OP_MEMCPY_HTOD, ctx,
				    dptr + k * (n / 4), 0);
			buf(&q[k], b + k * (n / 4), n / 4);
		}
		if (queue_cmds(fd, q, 4, &seq))
			return fail("queue", -errno);
		memset(rp, 0, sizeof(rp));
		for (int k = 0; k < 4; k++)
			rp[k].seq = seq + k;
		if (wait_cmds(fd, rp, 4, 0, -1, &done))
			return fail("wait", -errno);
		for (int k = 0; k < 4; k++) {
			if (rp[k].state != NETGPU_REAP_DONE)
				return fail("reap-state", -EIO);
			if (reap_cpl(&rp[k]).result)
				return fail("memcpy", (int)reap_cpl(&rp[k]).result);
		}
	}
}

static volatile sig_atomic_t churn_stop;

static void churn_term(int sig)
{
	(void)sig;
	churn_stop = 1;
}

/* One timed call: the result of one(), and the slowest call so far in *slowest. */
static int timed_one(int fd, struct netgpu_command c, struct netgpu_completion *cpl,
		     double *slowest)
{
	double t0 = now_s(), dt;
	int r = one(fd, c, cpl);

	dt = now_s() - t0;
	if (dt > *slowest)
		*slowest = dt;
	return r;
}

/* One open file's share of the churn: copies until a call fails; returns the copies. */
static unsigned long churn_session(int fd, unsigned char *b, size_t n, double *slowest)
{
	struct netgpu_completion cpl = {};
	unsigned long copies = 0;
	uint64_t ctx, dptr;

	if (timed_one(fd, cmd3(NETGPU_OP_CTX_CREATE, 0, 0, 0), &cpl, slowest))
		return 0;
	ctx = cpl.value0;
	if (timed_one(fd, cmd3(NETGPU_OP_MEM_ALLOC, ctx, n, 0), &cpl, slowest))
		return 0;
	dptr = cpl.value0;
	for (unsigned long i = 0; !churn_stop; i++) {
		uint16_t op = i % 2 ? NETGPU_OP_MEMCPY_DTOH : NETGPU_OP_MEMCPY_HTOD;
		struct netgpu_command c = cmd3(op, ctx, dptr, 0);

		buf(&c, b, n);
		if (timed_one(fd, c, NULL, slowest))
			break;
		copies++;
	}
	return copies;
}

static int churn(size_t mib)
{
	unsigned long copies = 0, failures = 0, reopens = 0;
	size_t n = mib << 20;
	unsigned char *b = malloc(n);
	double slowest = 0;
	struct sigaction sa = { .sa_handler = churn_term };

	sigaction(SIGTERM, &sa, NULL);	/* no SA_RESTART: a blocked open returns */
	memset(b, 0x33, n);
	printf("HOLDING\n");
	fflush(stdout);
	while (!churn_stop) {
		double t0 = now_s();
		int fd = open("/dev/netgpu0", O_RDWR);

		if (now_s() - t0 > slowest)
			slowest = now_s() - t0;
		if (fd < 0) {
			usleep(50000);
			continue;
		}
		reopens++;
		copies += churn_session(fd, b, n, &slowest);
		failures++;
		close(fd);
	}
	printf("CHURN copies %lu failures %lu reopens %lu slowest %.2f s\n", copies, failures,
	       reopens, slowest);
	return slowest > 5.0;
}

static int spin(int fd, uint64_t n)
{
	struct netgpu_completion cpl;
	uint64_t params[2], ctx, dptr, module, func;
	int r;

	if (one(fd, cmd3(NETGPU_OP_CTX_CREATE, 0, 0, 0), &cpl))
		return fail("ctx-create", -EIO);
	ctx = cpl.value0;
	if (one(fd, cmd3(NETGPU_OP_MEM_ALLOC, ctx, 4096, 0), &cpl))
		return fail("mem-alloc", -EIO);
	dptr = cpl.value0;
	module = load_test_module(fd, ctx);
	func = module ? get_function(fd, module, "spin") : 0;
	if (!func)
		return fail("module", -EIO);
	printf("SPINNING\n");
	fflush(stdout);
	r = one(fd, spin_launch(func, params, n, dptr, 0), NULL);
	printf("SPUN %d\n", r);
	return r ? 3 : 0;
}

static int use_fd(int fd)
{
	struct netgpu_ioc_info info;
	struct netgpu_command c = cmd3(NETGPU_OP_MEM_GET_INFO, 0, 0, 0);
	int ri = ioctl(fd, NETGPU_IOC_INFO, &info) ? errno : 0;
	int rs = one(fd, c, NULL);

	printf("held file after removal: INFO %s, SUBMIT %s\n", ri ? strerror(ri) : "ok",
	       rs < 0 ? strerror(-rs) : "ok");
	return ri == ENODEV && rs == -ENODEV ? 0 : 1;
}

static int open_close_cycles(long n)
{
	double t0 = now_s();

	for (long i = 0; i < n; i++) {
		struct netgpu_ioc_info info;
		int fd = open("/dev/netgpu0", O_RDWR);

		if (fd < 0) {
			printf("ERROR open cycle %ld %s\n", i, strerror(errno));
			return 3;
		}
		if (ioctl(fd, NETGPU_IOC_INFO, &info) ||
		    one(fd, cmd3(NETGPU_OP_NOP, 0, 0, 0), NULL)) {
			printf("ERROR use cycle %ld %s\n", i, strerror(errno));
			return 3;
		}
		close(fd);
	}
	printf("openclose %ld cycles in %.2f s\n", n, now_s() - t0);
	return 0;
}

static int open_within(double limit)
{
	double t0 = now_s();
	int err = 0;

	for (;;) {
		int fd = open("/dev/netgpu0", O_RDWR);

		if (fd >= 0) {
			int r = one(fd, cmd3(NETGPU_OP_MEM_GET_INFO, 0, 0, 0), NULL);

			close(fd);
			if (r == 0) {
				printf("OPEN ok after %.2f s\n", now_s() - t0);
				return 0;
			}
			err = r < 0 ? -r : EIO;
		} else {
			err = errno;
		}
		if (now_s() - t0 > limit)
			break;
		usleep(20000);
	}
	printf("OPEN %s after %.2f s\n", strerror(err), now_s() - t0);
	return 1;
}

int main(int argc, char **argv)
{
	struct netgpu_completion cpl;
	double t_start, t_open;
	int fd, r;

	if (argc < 2) {
		fprintf(stderr, "usage: netgpu-stress meminfo | hold MiB [queued] | idle | spin N | use-fd N | openclose N | open-within S | churn MiB\n");
		return 2;
	}
	if (strcmp(argv[1], "use-fd") == 0 && argc > 2)
		return use_fd(atoi(argv[2]));
	if (strcmp(argv[1], "openclose") == 0 && argc > 2)
		return open_close_cycles(atol(argv[2]));
	if (strcmp(argv[1], "open-within") == 0 && argc > 2)
		return open_within(atof(argv[2]));
	if (strcmp(argv[1], "churn") == 0 && argc > 2)
		return churn((size_t)atoi(argv[2]));
	t_start = now_s();
	fd = open("/dev/netgpu0", O_RDWR);
	if (fd < 0) {
		printf("ERROR open %s\n", strerror(errno));
		return 3;
	}
	t_open = now_s();
	if (strcmp(argv[1], "meminfo") == 0) {
		r = one(fd, cmd3(NETGPU_OP_MEM_GET_INFO, 0, 0, 0), &cpl);
		if (r)
			return fail("mem-get-info", r);
		printf("free %llu total %llu\n", (unsigned long long)cpl.value0,
		       (unsigned long long)cpl.value1);
		return 0;
	}
	if (strcmp(argv[1], "spin") == 0 && argc > 2)
		return spin(fd, strtoull(argv[2], NULL, 0));
	if (strcmp(argv[1], "idle") == 0) {
		printf("HOLDING\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	if (strcmp(argv[1], "hold") == 0 && argc > 2)
		return hold(fd, (size_t)atoi(argv[2]), argc > 3 && strcmp(argv[3], "queued") == 0,
			    t_start, t_open);
	return 2;
}
