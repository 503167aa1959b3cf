// __constant__ and __device__ symbols: cudaMemcpyToSymbol/FromSymbol (with offsets),
// cudaGetSymbolAddress/Size, a kernel reading constant memory and updating a device global.
#include "common.h"

__constant__ float coeffs[8];
__constant__ int offset_c;
__device__ int counter;
__device__ float table[64];

__global__ void apply(float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float x = (float)i;
    float acc = 0.0f;
    for (int k = 7; k >= 0; k--) acc = acc * x + coeffs[k];
    out[i] = acc + table[i % 64] + offset_c;
    atomicAdd(&counter, 1);
  }
}

int main() {
  TEST_NAME("symbols");
  float c[8] = {1, 0.5f, 0.25f, 0, 0, 0, 0, 0};
  CHECK(cudaMemcpyToSymbol(coeffs, c, sizeof c));
  int off = 10;
  CHECK(cudaMemcpyToSymbol(offset_c, &off, sizeof off));
  // Part of an array, at an offset.
  float t[64];
  for (int i = 0; i < 64; i++) t[i] = 0;
  CHECK(cudaMemcpyToSymbol(table, t, sizeof t));
  float upper[32];
  for (int i = 0; i < 32; i++) upper[i] = 100.0f + i;
  CHECK(cudaMemcpyToSymbol(table, upper, sizeof upper, 32 * sizeof(float)));
  int zero = 0;
  CHECK(cudaMemcpyToSymbol(counter, &zero, sizeof zero));

  size_t sz = 0;
  CHECK(cudaGetSymbolSize(&sz, table));
  REQUIRE(sz == 64 * sizeof(float), "table size %zu", sz);
  float* table_ptr = nullptr;
  CHECK(cudaGetSymbolAddress((void**)&table_ptr, table));
  REQUIRE(table_ptr != nullptr, "null symbol address");

  const int n = 256;
  float* out;
  CHECK(cudaMalloc(&out, n * sizeof(float)));
  apply<<<2, 128>>>(out, n);
  CHECK_LAUNCH();
  float h[n];
  CHECK(cudaMemcpy(h, out, sizeof h, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) {
    float x = (float)i;
    float want = 1 + 0.5f * x + 0.25f * x * x + (i % 64 >= 32 ? 100.0f + (i % 64 - 32) : 0) + 10;
    REQUIRE(h[i] == want, "out[%d] = %f, want %f", i, h[i], want);
  }
  int cnt = 0;
  CHECK(cudaMemcpyFromSymbol(&cnt, counter, sizeof cnt));
  REQUIRE(cnt == n, "counter %d", cnt);
  // The symbol's device address works like any device pointer.
  float back[64];
  CHECK(cudaMemcpy(back, table_ptr, sizeof back, cudaMemcpyDeviceToHost));
  REQUIRE(back[33] == 101.0f && back[0] == 0.0f, "table via address: %f %f", back[33], back[0]);
  float got = 0;
  CHECK(cudaMemcpyFromSymbol(&got, table, sizeof got, 40 * sizeof(float)));
  REQUIRE(got == 108.0f, "table[40] = %f", got);
  CHECK(cudaFree(out));
  return pass("__constant__ and __device__ symbols copied, read by a kernel, read back");
}
