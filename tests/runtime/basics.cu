// The first things every runtime program does: count and describe the device, allocate,
// copy, launch a kernel, copy back.
#include "common.h"
#include <cstring>
#include <vector>

__global__ void vadd(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

int main() {
  TEST_NAME("basics");
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  REQUIRE(count >= 1, "%d devices", count);
  CHECK(cudaSetDevice(0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  REQUIRE(strlen(prop.name) > 0, "empty device name");
  REQUIRE(prop.major >= 3 && prop.totalGlobalMem > 0 && prop.maxThreadsPerBlock >= 256,
          "cc %d.%d, %zu bytes, %d threads", prop.major, prop.minor, prop.totalGlobalMem,
          prop.maxThreadsPerBlock);
  int rt = 0, drv = 0;
  CHECK(cudaRuntimeGetVersion(&rt));
  CHECK(cudaDriverGetVersion(&drv));
  REQUIRE(drv >= rt / 1000 * 1000, "driver %d older than runtime %d", drv, rt);
  size_t free_b = 0, total_b = 0;
  CHECK(cudaMemGetInfo(&free_b, &total_b));
  REQUIRE(free_b <= total_b && total_b > 0, "free %zu total %zu", free_b, total_b);

  const int n = 10000;
  std::vector<float> a(n), b(n), c(n, -1.0f);
  for (int i = 0; i < n; i++) {
    a[i] = i * 0.5f;
    b[i] = 3.0f - i;
  }
  float *da, *db, *dc;
  CHECK(cudaMalloc(&da, n * sizeof(float)));
  CHECK(cudaMalloc(&db, n * sizeof(float)));
  CHECK(cudaMalloc(&dc, n * sizeof(float)));
  CHECK(cudaMemcpy(da, a.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, b.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dc, 0, n * sizeof(float)));
  vadd<<<(n + 255) / 256, 256>>>(da, db, dc, n);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(c.data(), dc, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) REQUIRE(c[i] == a[i] + b[i], "c[%d] = %f", i, c[i]);
  // Device-to-device copy.
  CHECK(cudaMemcpy(da, dc, n * sizeof(float), cudaMemcpyDeviceToDevice));
  CHECK(cudaMemcpy(a.data(), da, n * sizeof(float), cudaMemcpyDeviceToHost));
  REQUIRE(a[n - 1] == c[n - 1], "device-to-device copy");
  CHECK(cudaFree(da));
  CHECK(cudaFree(db));
  CHECK(cudaFree(dc));
  char detail[256];
  snprintf(detail, sizeof detail, "%s cc %d.%d, runtime %d, driver %d", prop.name, prop.major,
           prop.minor, rt, drv);
  return pass(detail);
}
