// Template kernels instantiated for several types, a functor template, a kernel templated
// on a block size.
#include "common.h"
#include <cstdint>
#include <vector>

template <typename T> __global__ void axpy(T a, const T* x, T* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

struct Square {
  template <typename T> __device__ T operator()(T v) const { return v * v; }
};
struct AddConst {
  int k;
  __device__ int operator()(int v) const { return v + k; }
};

template <typename T, typename F> __global__ void transform(T* p, int n, F f) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = f(p[i]);
}

template <int BLOCK> __global__ void block_sum(const int* in, int* out) {
  __shared__ int s[BLOCK];
  s[threadIdx.x] = in[blockIdx.x * BLOCK + threadIdx.x];
  __syncthreads();
  for (int k = BLOCK / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

template <typename T> static void run_axpy(T a) {
  const int n = 1000;
  std::vector<T> x(n), y(n);
  for (int i = 0; i < n; i++) {
    x[i] = (T)(i % 17);
    y[i] = (T)(i % 5);
  }
  T *dx, *dy;
  CHECK(cudaMalloc(&dx, n * sizeof(T)));
  CHECK(cudaMalloc(&dy, n * sizeof(T)));
  CHECK(cudaMemcpy(dx, x.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dy, y.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  axpy<T><<<(n + 127) / 128, 128>>>(a, dx, dy, n);
  CHECK_LAUNCH();
  std::vector<T> r(n);
  CHECK(cudaMemcpy(r.data(), dy, n * sizeof(T), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) REQUIRE(r[i] == a * x[i] + y[i], "axpy[%d]", i);
  CHECK(cudaFree(dx));
  CHECK(cudaFree(dy));
}

int main() {
  TEST_NAME("templates");
  run_axpy<float>(2.5f);
  run_axpy<double>(-1.25);
  run_axpy<int>(3);
  run_axpy<int64_t>(1LL << 33);

  const int n = 512;
  std::vector<int> h(n);
  for (int i = 0; i < n; i++) h[i] = i - 100;
  int* d;
  CHECK(cudaMalloc(&d, n * sizeof(int)));
  CHECK(cudaMemcpy(d, h.data(), n * sizeof(int), cudaMemcpyHostToDevice));
  transform<<<n / 128, 128>>>(d, n, Square());
  CHECK_LAUNCH();
  transform<<<n / 128, 128>>>(d, n, AddConst{7});
  CHECK_LAUNCH();
  std::vector<int> r(n);
  CHECK(cudaMemcpy(r.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) REQUIRE(r[i] == h[i] * h[i] + 7, "transform[%d] = %d", i, r[i]);

  int* sums;
  CHECK(cudaMalloc(&sums, 8 * sizeof(int)));
  block_sum<128><<<4, 128>>>(d, sums);
  CHECK_LAUNCH();
  int got[4];
  CHECK(cudaMemcpy(got, sums, sizeof got, cudaMemcpyDeviceToHost));
  for (int b = 0; b < 4; b++) {
    int want = 0;
    for (int i = 0; i < 128; i++) want += r[b * 128 + i];
    REQUIRE(got[b] == want, "block %d: %d != %d", b, got[b], want);
  }
  block_sum<64><<<8, 64>>>(d, sums);  // a second instantiation of the same template
  CHECK_LAUNCH();
  int got8[8];
  CHECK(cudaMemcpy(got8, sums, sizeof got8, cudaMemcpyDeviceToHost));
  for (int b = 0; b < 8; b++) {
    int want = 0;
    for (int i = 0; i < 64; i++) want += r[b * 64 + i];
    REQUIRE(got8[b] == want, "block_sum<64> block %d: %d != %d", b, got8[b], want);
  }
  CHECK(cudaFree(d));
  CHECK(cudaFree(sums));
  return pass("axpy<float,double,int,int64>, functor templates, block_sum<128,64>");
}
