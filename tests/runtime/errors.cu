// Non-sticky errors: a bad argument or an impossible launch fails that call only; the
// context goes on working, and cudaGetLastError/cudaPeekAtLastError report and clear it as
// CUDA documents.
#include "common.h"

__global__ void k(int* p) { p[threadIdx.x] = threadIdx.x; }

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
  return pass("allocation, launch configuration and argument errors leave the context usable");
}
