// Multi-threaded host code: four threads share the device, each with its own stream,
// buffers and pinned memory; each launches, copies asynchronously and synchronises its own
// stream many times. A thread also creates and synchronises with the legacy default stream.
#include "common.h"
#include <atomic>
#include <thread>
#include <vector>

__global__ void fill(int* p, int n, int v) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = v + i;
}

static std::atomic<int> failures{0};
static char failure[256];

static void worker(int id) {
  const int n = 4096, rounds = 20;
  cudaStream_t s;
  int *d, *h;
  if (cudaStreamCreate(&s) != cudaSuccess || cudaMalloc(&d, n * sizeof(int)) != cudaSuccess ||
      cudaMallocHost(&h, n * sizeof(int)) != cudaSuccess) {
    if (failures++ == 0) snprintf(failure, sizeof failure, "thread %d: setup: %s", id, cudaGetErrorString(cudaGetLastError()));
    return;
  }
  for (int r = 0; r < rounds; r++) {
    int v = id * 100000 + r * 1000;
    fill<<<n / 256, 256, 0, s>>>(d, n, v);
    cudaError_t e = cudaMemcpyAsync(h, d, n * sizeof(int), cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
      if (failures++ == 0) snprintf(failure, sizeof failure, "thread %d round %d: %s", id, r, cudaGetErrorString(e));
      return;
    }
    for (int i = 0; i < n; i++)
      if (h[i] != v + i) {
        if (failures++ == 0) snprintf(failure, sizeof failure, "thread %d round %d: h[%d] = %d, want %d", id, r, i, h[i], v + i);
        return;
      }
  }
  cudaStreamDestroy(s);
  cudaFree(d);
  cudaFreeHost(h);
}

int main() {
  TEST_NAME("threads");
  CHECK(cudaFree(0));  // initialise the runtime on the main thread first
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++) ts.emplace_back(worker, i);
  for (auto& t : ts) t.join();
  REQUIRE(failures == 0, "%d threads failed; first: %s", failures.load(), failure);
  // A thread that only uses the default stream, started after the others ended.
  int ok = 0;
  std::thread t([&] {
    int* d;
    int h[256];
    if (cudaMalloc(&d, sizeof h) != cudaSuccess) return;
    fill<<<1, 256>>>(d, 256, 5);
    if (cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) return;
    ok = h[255] == 260;
    cudaFree(d);
  });
  t.join();
  REQUIRE(ok, "default-stream thread");
  CHECK(cudaDeviceSynchronize());
  return pass("4 threads x 20 rounds, each with its own stream and pinned buffer");
}
