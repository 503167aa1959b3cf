/* sgemm_tiled from tests/kernels (shared-memory tiles, __syncthreads), checked against C. */
#include <math.h>
#include "common.h"

int main(void)
{
	int M = 96, N = 80, K = 112;
	CUcontext ctx = setup();
	CUmodule mod;
	CUfunction f;
	CHECK(cuModuleLoadData(&mod, load_ptx("sgemm.ptx")));
	CHECK(cuModuleGetFunction(&f, mod, "sgemm_tiled"));
	float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
	float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
	for (int i = 0; i < M * K; i++)
		A[i] = (float)((int)(rnd() % 200) - 100) / 50.0f;
	for (int i = 0; i < K * N; i++)
		B[i] = (float)((int)(rnd() % 200) - 100) / 50.0f;
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			float s = 0;
			for (int k = 0; k < K; k++)
				s += A[i * K + k] * B[k * N + j];
			R[i * N + j] = s;
		}
	CUdeviceptr dA, dB, dC;
	CHECK(cuMemAlloc(&dA, sizeof(float) * M * K));
	CHECK(cuMemAlloc(&dB, sizeof(float) * K * N));
	CHECK(cuMemAlloc(&dC, sizeof(float) * M * N));
	CHECK(cuMemcpyHtoD(dA, A, sizeof(float) * M * K));
	CHECK(cuMemcpyHtoD(dB, B, sizeof(float) * K * N));
	void *args[] = { &dA, &dB, &dC, &M, &N, &K };
	CHECK(cuLaunchKernel(f, (N + 15) / 16, (M + 15) / 16, 1, 16, 16, 1, 0, NULL, args, NULL));
	CHECK(cuMemcpyDtoH(C, dC, sizeof(float) * M * N));
	float worst = 0;
	for (int i = 0; i < M * N; i++) {
		float e = fabsf(C[i] - R[i]);
		if (e > worst)
			worst = e;
	}
	printf("sgemm_tiled %dx%dx%d: max abs error %g\n", M, N, K, worst);
	expect("sgemm-tiled-close", worst < 1e-3f);
	CHECK(cuCtxDestroy(ctx));
	return finish("sgemm_tiled");
}
