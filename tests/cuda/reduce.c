/* reduce_sum from tests/kernels (shared-memory tree + atomicAdd), integers exact as floats. */
#include "common.h"

int main(void)
{
	int n = 100003;
	CUcontext ctx = setup();
	CUmodule mod;
	CUfunction f;
	CHECK(cuModuleLoadData(&mod, load_ptx("reduce.ptx")));
	CHECK(cuModuleGetFunction(&f, mod, "reduce_sum"));
	float *in = malloc(sizeof(float) * n);
	double want = 0;
	for (int i = 0; i < n; i++) {
		in[i] = (float)(rnd() % 64);
		want += in[i];
	}
	CUdeviceptr din, dout;
	CHECK(cuMemAlloc(&din, sizeof(float) * n));
	CHECK(cuMemAlloc(&dout, sizeof(float)));
	CHECK(cuMemcpyHtoD(din, in, sizeof(float) * n));
	CHECK(cuMemsetD32(dout, 0, 1));
	void *args[] = { &din, &dout, &n };
	CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 256 * sizeof(float), NULL, args, NULL));
	float got = 0;
	CHECK(cuMemcpyDtoH(&got, dout, sizeof(float)));
	printf("reduce_sum of %d values: %.0f (want %.0f)\n", n, got, want);
	expect("reduce-sum-exact", (double)got == want);
	CHECK(cuCtxDestroy(ctx));
	return finish("reduce");
}
