// The first thing every CUDA program does: count devices, allocate, copy, launch, copy back.
// Built with nvcc (static cudart by default); prints PASS or says what went wrong.
#include <cstdio>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  printf("FAIL %s:%d %s: %s (%d)\n", __FILE__, __LINE__, #x, cudaGetErrorString(e), (int)e); return 1; } } while (0)

__global__ void saxpy(int n, float a, const float *x, float *y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

int main() {
  int count = 0, rt = 0, drv = 0;
  CHECK(cudaGetDeviceCount(&count));
  CHECK(cudaRuntimeGetVersion(&rt));
  CHECK(cudaDriverGetVersion(&drv));
  cudaDeviceProp p;
  CHECK(cudaGetDeviceProperties(&p, 0));
  printf("devices %d runtime %d driver %d: %s cc %d.%d, %d SMs\n", count, rt, drv, p.name, p.major, p.minor, p.multiProcessorCount);
  const int n = 1000;
  float hx[n], hy[n];
  for (int i = 0; i < n; i++) { hx[i] = i; hy[i] = 2 * i; }
  float *x, *y;
  CHECK(cudaMalloc(&x, n * sizeof(float)));
  CHECK(cudaMalloc(&y, n * sizeof(float)));
  CHECK(cudaMemcpy(x, hx, sizeof hx, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(y, hy, sizeof hy, cudaMemcpyHostToDevice));
  saxpy<<<(n + 255) / 256, 256>>>(n, 3.0f, x, y);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(hy, y, sizeof hy, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++)
    if (hy[i] != 5.0f * i) { printf("FAIL y[%d] = %f, want %f\n", i, hy[i], 5.0f * i); return 1; }
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  printf("PASS\n");
  return 0;
}
