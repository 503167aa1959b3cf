// Dynamic shared memory (extern __shared__), sized at launch, with two arrays carved out of
// it, and a launch asking for more than the default 48 KiB after cudaFuncSetAttribute.
#include "common.h"
#include <vector>

__global__ void reverse_blocks(const int* in, int* out, int n) {
  extern __shared__ int buf[];
  int* second = buf + blockDim.x;
  int base = blockIdx.x * blockDim.x;
  int t = threadIdx.x;
  buf[t] = in[base + t];
  second[t] = in[base + t] * 2;
  __syncthreads();
  out[base + t] = buf[blockDim.x - 1 - t] + second[t];
}

__global__ void big_shared(int* out) {
  extern __shared__ unsigned char big[];
  for (int i = threadIdx.x; i < 64 * 1024; i += blockDim.x) big[i] = (unsigned char)(i * 7);
  __syncthreads();
  if (threadIdx.x == 0) {
    int s = 0;
    for (int i = 0; i < 64 * 1024; i += 1024) s += big[i];
    *out = s;
  }
}

int main() {
  TEST_NAME("dynamic_shared");
  const int block = 128, blocks = 8, n = block * blocks;
  std::vector<int> h(n);
  for (int i = 0; i < n; i++) h[i] = i * 3 + 1;
  int *din, *dout;
  CHECK(cudaMalloc(&din, n * sizeof(int)));
  CHECK(cudaMalloc(&dout, n * sizeof(int)));
  CHECK(cudaMemcpy(din, h.data(), n * sizeof(int), cudaMemcpyHostToDevice));
  reverse_blocks<<<blocks, block, 2 * block * sizeof(int)>>>(din, dout, n);
  CHECK_LAUNCH();
  std::vector<int> r(n);
  CHECK(cudaMemcpy(r.data(), dout, n * sizeof(int), cudaMemcpyDeviceToHost));
  for (int b = 0; b < blocks; b++)
    for (int t = 0; t < block; t++) {
      int i = b * block + t;
      int want = h[b * block + block - 1 - t] + 2 * h[i];
      REQUIRE(r[i] == want, "out[%d] = %d, want %d", i, r[i], want);
    }

  int dev = 0, optin = 0;
  CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const char* big = "64 KiB launch skipped (device opt-in limit below 64 KiB)";
  if (optin >= 64 * 1024) {
    CHECK(cudaFuncSetAttribute(big_shared, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
    int* dres;
    CHECK(cudaMalloc(&dres, sizeof(int)));
    big_shared<<<1, 256, 64 * 1024>>>(dres);
    CHECK_LAUNCH();
    int res = 0, want = 0;
    CHECK(cudaMemcpy(&res, dres, sizeof res, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 64 * 1024; i += 1024) want += (unsigned char)(i * 7);
    REQUIRE(res == want, "big shared sum %d, want %d", res, want);
    CHECK(cudaFree(dres));
    big = "64 KiB after cudaFuncSetAttribute";
  }
  CHECK(cudaFree(din));
  CHECK(cudaFree(dout));
  char d[160];
  snprintf(d, sizeof d, "two arrays in dynamic shared memory; %s", big);
  return pass(d);
}
