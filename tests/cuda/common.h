/* Shared helpers for the netgpu CUDA driver-API test programs (plain C against cuda.h). */
#ifndef NETGPU_TEST_COMMON_H
#define NETGPU_TEST_COMMON_H

#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(call)                                                                  \
	do {                                                                         \
		CUresult r_ = (call);                                                \
		if (r_ != CUDA_SUCCESS) {                                            \
			const char *n_ = "?";                                        \
			cuGetErrorName(r_, &n_);                                     \
			printf("FAIL %s:%d %s -> %s (%d)\n", __FILE__, __LINE__,     \
			       #call, n_, (int)r_);                                  \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

static inline void expect(const char *name, int ok)
{
	printf("%s %s\n", ok ? "PASS" : "FAIL", name);
	if (!ok)
		failures++;
}

static inline int finish(const char *program)
{
	printf("%s: %s\n", program, failures ? "FAILED" : "all checks passed");
	return failures ? 1 : 0;
}

static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;
static inline unsigned rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (unsigned)rng_state;
}

/* Reads a PTX file from $NETGPU_KERNELS (default tests/kernels) into a NUL-terminated buffer. */
static inline char *load_ptx(const char *name)
{
	const char *dir = getenv("NETGPU_KERNELS");
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/kernels", name);
	FILE *f = fopen(path, "rb");
	if (!f) {
		printf("FAIL cannot open %s\n", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc(n + 1);
	if (fread(buf, 1, n, f) != (size_t)n) {
		printf("FAIL cannot read %s\n", path);
		exit(1);
	}
	buf[n] = 0;
	fclose(f);
	return buf;
}

static inline CUcontext setup(void)
{
	CUdevice dev;
	CUcontext ctx;
	CHECK(cuInit(0));
	CHECK(cuDeviceGet(&dev, 0));
	CHECK(cuCtxCreate(&ctx, 0, dev));
	return ctx;
}

#endif
