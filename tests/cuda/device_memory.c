/* Device queries, memory, synchronous copies and memsets, and the errors a program relies on. */
#include "common.h"

#include <sys/mman.h>

int main(void)
{
	CUdevice dev;
	int count = 0, major = 0, minor = 0, warp = 0, sms = 0;
	char name[256];
	size_t total = 0, free0 = 0, free1 = 0, total1 = 0;
	int drv = 0;

	CHECK(cuInit(0));
	CHECK(cuDriverGetVersion(&drv));
	expect("driver-version-12x", drv >= 12000);
	CHECK(cuDeviceGetCount(&count));
	expect("one-device", count == 1);
	CHECK(cuDeviceGet(&dev, 0));
	expect("invalid-ordinal-refused", cuDeviceGet(&dev, 7) == CUDA_ERROR_INVALID_DEVICE);
	CHECK(cuDeviceGet(&dev, 0));
	CHECK(cuDeviceGetName(name, sizeof(name), dev));
	CHECK(cuDeviceTotalMem(&total, dev));
	CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
	CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
	CHECK(cuDeviceGetAttribute(&warp, CU_DEVICE_ATTRIBUTE_WARP_SIZE, dev));
	CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
	printf("device: %s, %zu MiB, sm_%d%d, %d SMs\n", name, total >> 20, major, minor, sms);
	expect("name-nonempty", strlen(name) > 0);
	expect("warp-size-32", warp == 32);
	expect("total-memory", total > (64u << 20));

	CUcontext ctx;
	CHECK(cuCtxCreate(&ctx, 0, dev));
	CUcontext cur = NULL;
	CHECK(cuCtxGetCurrent(&cur));
	expect("ctx-current", cur == ctx);
	CHECK(cuMemGetInfo(&free0, &total1));

	size_t n = 6u << 20;
	unsigned char *h = malloc(n), *back = malloc(n);
	for (size_t i = 0; i < n; i++)
		h[i] = (unsigned char)rnd();
	CUdeviceptr a, b;
	CHECK(cuMemAlloc(&a, n));
	CHECK(cuMemAlloc(&b, n));
	CHECK(cuMemGetInfo(&free1, &total1));
	expect("mem-info-tracks-allocations", free0 - free1 == 2 * n);
	CHECK(cuMemcpyHtoD(a, h, n));
	CHECK(cuMemcpyDtoD(b, a, n));
	memset(back, 0, n);
	CHECK(cuMemcpyDtoH(back, b, n));
	expect("htod-dtod-dtoh-round-trip", memcmp(h, back, n) == 0);

	CHECK(cuMemsetD8(b, 0xab, 16));
	CHECK(cuMemsetD16(b + 16, 0x1234, 8));
	CHECK(cuMemsetD32(b + 32, 0xdeadbeef, 8));
	CHECK(cuMemcpyDtoH(back, b, 64));
	int ok = back[0] == 0xab && back[15] == 0xab && back[16] == 0x34 && back[17] == 0x12;
	unsigned w;
	memcpy(&w, back + 60, 4);
	expect("memset-8-16-32", ok && w == 0xdeadbeef && back[64] == h[64]);

	/*
	 * Memory the program never wrote (calloc's fresh mapping: every page is the shared zero
	 * page until written) copies like any other: the guest driver's long-term pins must
	 * fault each page in, however many calls that takes.
	 */
	size_t zn = 32u << 20;
	unsigned char *zeros = calloc(zn, 1), *zback = malloc(zn);
	CUdeviceptr z;
	CHECK(cuMemAlloc(&z, zn));
	CHECK(cuMemsetD8(z, 0x5a, zn));
	CHECK(cuMemcpyHtoD(z, zeros, zn));
	memset(zback, 0x77, zn);
	CHECK(cuMemcpyDtoH(zback, z, zn));
	expect("htod-from-untouched-calloc-memory", memcmp(zeros, zback, zn) == 0);
	unsigned char *fresh = calloc(zn, 1);
	CHECK(cuMemcpyDtoH(fresh, b, 64));
	expect("dtoh-into-untouched-calloc-memory", memcmp(fresh, back, 64) == 0);

	/*
	 * Memory whose every page sits apart from its neighbours (written last page first, no
	 * huge pages): one scatter entry per page, so a large copy must travel in sections the
	 * device's scatter limit allows (CI found 32 MiB of calloc memory refused as 8192 entries).
	 */
	unsigned char *frag = mmap(NULL, zn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *fragback = mmap(NULL, zn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (frag == MAP_FAILED || fragback == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	madvise(frag, zn, MADV_NOHUGEPAGE);
	madvise(fragback, zn, MADV_NOHUGEPAGE);
	for (size_t off = zn; off > 0; off -= 4096) {
		memset(frag + off - 4096, (int)(off >> 12), 4096);
		fragback[off - 4096] = 0;
	}
	CHECK(cuMemcpyHtoD(z, frag, zn));
	CHECK(cuMemcpyDtoH(fragback, z, zn));
	expect("copies-of-page-scattered-memory", memcmp(frag, fragback, zn) == 0);
	munmap(frag, zn);
	munmap(fragback, zn);
	CHECK(cuMemFree(z));
	free(zeros);
	free(zback);
	free(fresh);

	/* Errors a program relies on. */
	CUdeviceptr huge;
	expect("oversized-alloc-is-out-of-memory", cuMemAlloc(&huge, (size_t)1 << 50) == CUDA_ERROR_OUT_OF_MEMORY);
	expect("copy-past-end-refused", cuMemcpyDtoH(back, a + n - 8, 64) == CUDA_ERROR_INVALID_VALUE);
	const char *ename = NULL, *estr = NULL;
	CHECK(cuGetErrorName(CUDA_ERROR_ILLEGAL_ADDRESS, &ename));
	CHECK(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &estr));
	expect("error-names", strcmp(ename, "CUDA_ERROR_ILLEGAL_ADDRESS") == 0 && strlen(estr) > 0);
	CHECK(cuMemFree(a));
	expect("double-free-refused", cuMemFree(a) != CUDA_SUCCESS);
	CHECK(cuMemFree(b));
	CHECK(cuCtxDestroy(ctx));
	free(h);
	free(back);
	return finish("device_memory");
}
