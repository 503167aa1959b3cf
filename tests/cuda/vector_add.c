/* vector_add from tests/kernels: a PTX module loaded, launched and checked. */
#include "common.h"

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1 << 20;
	CUcontext ctx = setup();
	CUmodule mod;
	CUfunction f;
	char *ptx = load_ptx("vector_add.ptx");
	CHECK(cuModuleLoadData(&mod, ptx));
	CHECK(cuModuleGetFunction(&f, mod, "vector_add"));
	size_t bytes = (size_t)n * sizeof(float);
	float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
	for (int i = 0; i < n; i++) {
		a[i] = (float)(rnd() % 1000) / 7.0f;
		b[i] = (float)(rnd() % 1000) / 3.0f;
	}
	CUdeviceptr da, db, dc;
	CHECK(cuMemAlloc(&da, bytes));
	CHECK(cuMemAlloc(&db, bytes));
	CHECK(cuMemAlloc(&dc, bytes));
	CHECK(cuMemcpyHtoD(da, a, bytes));
	CHECK(cuMemcpyHtoD(db, b, bytes));
	void *args[] = { &da, &db, &dc, &n };
	CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
	CHECK(cuCtxSynchronize());
	CHECK(cuMemcpyDtoH(c, dc, bytes));
	int wrong = 0;
	for (int i = 0; i < n; i++)
		wrong += c[i] != a[i] + b[i];
	printf("vector_add: %d elements, %d wrong\n", n, wrong);
	expect("vector-add-exact", wrong == 0);
	CHECK(cuModuleUnload(mod));
	CHECK(cuCtxDestroy(ctx));
	return finish("vector_add");
}
