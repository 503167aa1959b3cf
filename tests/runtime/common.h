// Shared by netgpu's CUDA runtime test programs: checks that report what failed and where,
// and the one-line verdict the runner (tests/runtime/run.sh) reads.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

static const char* g_test_name = "?";

#define TEST_NAME(n) g_test_name = (n)

// Ends the program with a FAIL verdict naming the check and the CUDA error.
#define CHECK(call)                                                                       \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != cudaSuccess) {                                                            \
      printf("%s: FAIL %s:%d: %s -> %s (%d: %s)\n", g_test_name, __FILE__, __LINE__, #call, \
             cudaGetErrorName(err_), (int)err_, cudaGetErrorString(err_));               \
      fflush(stdout);                                                                     \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

// A call that must fail with a given error.
#define EXPECT_ERROR(call, want)                                                          \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != (want)) {                                                                 \
      printf("%s: FAIL %s:%d: %s -> %s (%d), expected %s\n", g_test_name, __FILE__,        \
             __LINE__, #call, cudaGetErrorName(err_), (int)err_, cudaGetErrorName(want));  \
      fflush(stdout);                                                                     \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

#define REQUIRE(cond, ...)                                                                \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      printf("%s: FAIL %s:%d: %s: ", g_test_name, __FILE__, __LINE__, #cond);            \
      printf(__VA_ARGS__);                                                                \
      printf("\n");                                                                       \
      fflush(stdout);                                                                     \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

// A kernel launch: the launch itself, then the kernel's completion.
#define CHECK_LAUNCH()                                                                    \
  do {                                                                                    \
    CHECK(cudaGetLastError());                                                            \
    CHECK(cudaDeviceSynchronize());                                                       \
  } while (0)

static inline int pass(const char* detail) {
  printf("%s: PASS %s\n", g_test_name, detail);
  fflush(stdout);
  return 0;
}
