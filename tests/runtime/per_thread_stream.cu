// Built with --default-stream per-thread: each host thread's default stream is its own
// (cudaStreamPerThread), kernels and copies on it are ordered per thread, and the explicit
// handles cudaStreamPerThread and cudaStreamLegacy work.
#include "common.h"
#include <atomic>
#include <thread>
#include <vector>

__global__ void inc(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += 1;
}

static std::atomic<int> bad{0};

static void worker(int id) {
  const int n = 1024;
  int* d;
  std::vector<int> h(n, id);
  if (cudaMalloc(&d, n * sizeof(int)) != cudaSuccess) { bad++; return; }
  // The default stream here is this thread's stream.
  if (cudaMemcpyAsync(d, h.data(), n * sizeof(int), cudaMemcpyHostToDevice, 0) != cudaSuccess) { bad++; return; }
  for (int r = 0; r < 10; r++) inc<<<n / 128, 128>>>(d, n);
  inc<<<n / 128, 128, 0, cudaStreamPerThread>>>(d, n);
  if (cudaMemcpyAsync(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost, cudaStreamPerThread) != cudaSuccess ||
      cudaStreamSynchronize(cudaStreamPerThread) != cudaSuccess) { bad++; return; }
  for (int i = 0; i < n; i++)
    if (h[i] != id + 11) { bad++; return; }
  cudaFree(d);
}

int main() {
  TEST_NAME("per_thread_stream");
  CHECK(cudaFree(0));
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; i++) ts.emplace_back(worker, i * 1000);
  for (auto& t : ts) t.join();
  REQUIRE(bad == 0, "%d threads got wrong results", bad.load());
  int* d;
  CHECK(cudaMalloc(&d, 128 * sizeof(int)));
  CHECK(cudaMemsetAsync(d, 0, 128 * sizeof(int), cudaStreamLegacy));
  inc<<<1, 128, 0, cudaStreamLegacy>>>(d, 128);
  CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  int h[128];
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  REQUIRE(h[127] == 1, "legacy stream result %d", h[127]);
  CHECK(cudaStreamQuery(cudaStreamPerThread));
  CHECK(cudaFree(d));
  return pass("3 threads on their per-thread default streams, cudaStreamLegacy");
}
