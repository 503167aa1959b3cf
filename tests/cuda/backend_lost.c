/* Keeps using the device until an operation fails; the harness stops the backend meanwhile.
 * Passes when the failure is a CUDA error that arrives within the time limit (no hang). */
#include <time.h>
#include "common.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	CUcontext ctx = setup();
	CUdeviceptr d;
	unsigned char buf[4096] = { 1 };
	CHECK(cuMemAlloc(&d, sizeof(buf)));
	printf("READY\n");
	fflush(stdout);
	double t0 = now();
	CUresult r = CUDA_SUCCESS;
	while (now() - t0 < 60) {
		r = cuMemcpyHtoD(d, buf, sizeof(buf));
		if (r == CUDA_SUCCESS)
			r = cuCtxSynchronize();
		if (r != CUDA_SUCCESS)
			break;
		struct timespec pause = { 0, 20 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	const char *name = "?";
	cuGetErrorName(r, &name);
	printf("first failure after %.1f s: %s\n", now() - t0, name);
	expect("error-not-hang", r != CUDA_SUCCESS);
	expect("later-calls-fail-fast", cuMemcpyHtoD(d, buf, 16) != CUDA_SUCCESS);
	(void)ctx;
	return finish("backend_lost");
}
