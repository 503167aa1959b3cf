// A sticky error: a kernel that writes out of bounds (an illegal address) poisons the
// context; the launch's error comes at the next synchronisation, and every later call that
// needs the context fails with it, as on a real GPU.
#include "common.h"

__global__ void wild(int* p) { p[(size_t)1 << 40] = 1; }  // 4 TiB past a small buffer

int main() {
  TEST_NAME("sticky");
  int* d;
  CHECK(cudaMalloc(&d, 1024));
  wild<<<1, 1>>>(d);
  CHECK(cudaGetLastError());  // the launch itself is valid
  cudaError_t e = cudaDeviceSynchronize();
  REQUIRE(e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure,
          "synchronize after an out-of-bounds write: %s", cudaGetErrorName(e));
  // Sticky: later calls fail too, and cudaGetLastError does not clear it.
  cudaGetLastError();
  int h = 0;
  cudaError_t e2 = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
  REQUIRE(e2 == e, "copy after the fault: %s, want %s", cudaGetErrorName(e2), cudaGetErrorName(e));
  void* p;
  cudaError_t e3 = cudaMalloc(&p, 64);
  REQUIRE(e3 == e, "cudaMalloc after the fault: %s, want %s", cudaGetErrorName(e3), cudaGetErrorName(e));
  cudaError_t e4 = cudaDeviceSynchronize();
  REQUIRE(e4 == e, "second synchronize: %s", cudaGetErrorName(e4));
  // cudaDeviceReset gives a fresh context that works.
  CHECK(cudaDeviceReset());
  CHECK(cudaMalloc(&p, 64));
  CHECK(cudaMemset(p, 0, 64));
  CHECK(cudaMemcpy(&h, p, sizeof h, cudaMemcpyDeviceToHost));
  REQUIRE(h == 0, "after reset");
  CHECK(cudaFree(p));
  char detail[128];
  snprintf(detail, sizeof detail, "%s is sticky until cudaDeviceReset", cudaGetErrorName(e));
  return pass(detail);
}
