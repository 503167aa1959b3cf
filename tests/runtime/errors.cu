// Non-sticky errors: a bad argument or an impossible launch fails that call only; the
// context goes on working, and cudaGetLastError/cudaPeekAtLastError report and clear it as
// CUDA documents.
#include "common.h"

__global__ void k(int* p) { p[threadIdx.x] = threadIdx.x; }
__global__ void add(int* p, int v) { atomicAdd(&p[threadIdx.x], v); }
__global__ void __launch_bounds__(128) bounded(int* p) { p[threadIdx.x] = 1; }

// Each expectation is checked and recorded, so one run reports every mismatch.
static int mismatches = 0;
static char first[512];
#define EXPECT_SOFT(call, want)                                                            \
  do {                                                                                     \
    cudaError_t err_ = (call);                                                             \
    if (err_ != (want)) {                                                                  \
      printf("errors: mismatch %s:%d: %s -> %s, expected %s\n", __FILE__, __LINE__, #call,  \
             cudaGetErrorName(err_), cudaGetErrorName(want));                               \
      if (mismatches++ == 0)                                                               \
        snprintf(first, sizeof first, "%s:%d: %s -> %s, expected %s", __FILE__, __LINE__,   \
                 #call, cudaGetErrorName(err_), cudaGetErrorName(want));                   \
    }                                                                                      \
  } while (0)

static void still_works(const char* after) {
  int* d;
  int h[32];
  CHECK(cudaMalloc(&d, sizeof h));
  k<<<1, 32>>>(d);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  REQUIRE(h[31] == 31, "context broken after %s", after);
  CHECK(cudaFree(d));
}

int main() {
  TEST_NAME("errors");
  still_works("start");
  // Too much memory.
  void* p = nullptr;
  EXPECT_SOFT(cudaMalloc(&p, (size_t)1 << 62), cudaErrorMemoryAllocation);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorMemoryAllocation);
  EXPECT_SOFT(cudaGetLastError(), cudaSuccess);  // cleared by the previous call
  still_works("cudaMalloc(2^62)");
  // A block larger than the device allows: the launch fails, the error is not sticky.
  int* d;
  CHECK(cudaMalloc(&d, 4096 * sizeof(int)));
  k<<<1, 4096>>>(d);
  EXPECT_SOFT(cudaPeekAtLastError(), cudaErrorInvalidConfiguration);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_SOFT(cudaGetLastError(), cudaSuccess);
  still_works("a 4096-thread block");
  // Too much dynamic shared memory.
  k<<<1, 32, 1 << 30>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidValue);
  still_works("1 GiB of dynamic shared memory");
  // Grid dimension beyond the limit.
  k<<<dim3(1, 1 << 20, 1), 1>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  still_works("a grid of 2^20 in y");
  // Block dimensions each within limits, but more threads than a block may have; z beyond 64.
  k<<<1, dim3(32, 33, 1)>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  k<<<1, dim3(1, 1, 65)>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  k<<<0, 32>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // Beyond the function's own limit (__launch_bounds__(128)): the launch fails, not the kernel.
  bounded<<<1, 256>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
  still_works("a block beyond __launch_bounds__");
  // Shared memory: beyond the default 48 KiB without the opt-in attribute, and beyond the
  // opt-in maximum with it.
  int optin = 0;
  CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  REQUIRE(optin > 48 * 1024, "opt-in shared memory per block %d", optin);
  k<<<1, 32, 48 * 1024 + 4>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidValue);
  CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
  k<<<1, 32, 48 * 1024 + 4>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaSuccess);
  k<<<1, 32, optin + 4>>>(d);
  EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_SOFT(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, optin + 4),
              cudaErrorInvalidValue);
  cudaGetLastError();
  CHECK(cudaDeviceSynchronize());
  still_works("shared memory beyond the limits");
  // Batched: launches queued without waiting, a bad one in their midst fails at its own
  // launch, and the good ones before and after it all run.
  {
    int* acc;
    int host[64];
    CHECK(cudaMalloc(&acc, sizeof host));
    CHECK(cudaMemset(acc, 0, sizeof host));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    for (int i = 0; i < 10; i++) add<<<1, 64, 0, s>>>(acc, 1);
    add<<<1, 2048, 0, s>>>(acc, 1000);
    EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
    add<<<dim3(1, 70000), 64, 0, s>>>(acc, 1000);
    EXPECT_SOFT(cudaGetLastError(), cudaErrorInvalidConfiguration);
    for (int i = 0; i < 10; i++) add<<<1, 64, 0, s>>>(acc, 1);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(host, acc, sizeof host, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < 64; i++) REQUIRE(host[i] == 20, "acc[%d] = %d after 20 good launches", i, host[i]);
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(acc));
  }
  // Bad arguments to copies and frees.
  int h[4];
  EXPECT_SOFT(cudaMemcpy(h, d, (size_t)1 << 40, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  cudaGetLastError();
  EXPECT_SOFT(cudaFree((void*)0x1234), cudaErrorInvalidValue);
  cudaGetLastError();
  EXPECT_SOFT(cudaSetDevice(99), cudaErrorInvalidDevice);
  cudaGetLastError();
  still_works("bad copies, frees and device numbers");
  CHECK(cudaFree(d));
  CHECK(cudaDeviceSynchronize());
  REQUIRE(mismatches == 0, "%d calls returned other errors than CUDA's; first: %s", mismatches, first);
  return pass("allocation, launch configuration (grid, block, __launch_bounds__, shared memory; batched) and argument errors fail at the call and leave the context usable");
}
