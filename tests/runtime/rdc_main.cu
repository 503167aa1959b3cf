// Relocatable device code (-rdc=true) across two translation units: a kernel here calls a
// device function and reads a __device__ variable defined in rdc_lib.cu, and launches a
// kernel defined there.
#include "common.h"

extern __device__ int lib_scale;
__device__ int lib_combine(int a, int b);
__global__ void lib_kernel(int* p, int n);

__global__ void main_kernel(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = lib_combine(p[i], i) * lib_scale;
}

int main() {
  TEST_NAME("rdc");
  const int n = 300;
  int h[n];
  for (int i = 0; i < n; i++) h[i] = i;
  int* d;
  CHECK(cudaMalloc(&d, sizeof h));
  CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice));
  int scale = 3;
  CHECK(cudaMemcpyToSymbol(lib_scale, &scale, sizeof scale));
  main_kernel<<<(n + 127) / 128, 128>>>(d, n);
  CHECK_LAUNCH();
  lib_kernel<<<(n + 127) / 128, 128>>>(d, n);
  CHECK_LAUNCH();
  int r[n];
  CHECK(cudaMemcpy(r, d, sizeof r, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) {
    int want = (i + 2 * i) * 3 + 1;  // lib_combine(a, b) = a + 2b; lib_kernel adds 1
    REQUIRE(r[i] == want, "r[%d] = %d, want %d", i, r[i], want);
  }
  CHECK(cudaFree(d));
  return pass("device function, __device__ variable and kernel across two translation units");
}
