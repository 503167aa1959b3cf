// Threads on their per-thread default streams (build with --default-stream per-thread, as
// PyTorch-style programs are): each thread allocates, copies and launches on "stream 0",
// which is its own stream; streams of different threads are different streams; a capture on
// cudaStreamPerThread works while the legacy NULL stream cannot be captured. Prints PASS.
#include <cstdio>
#include <thread>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  printf("FAIL %s:%d %s: %s (%d)\n", __FILE__, __LINE__, #x, cudaGetErrorName(e), (int)e); return 1; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); return 1; } } while (0)

__global__ void fill(int n, int v, int *x) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = v + i;
}
__global__ void inc(int n, int *x) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1;
}

static int worker(int t, unsigned long long *id) {
  const int n = 2048;
  std::vector<int> h(n);
  int *d;
  CHECK(cudaMalloc(&d, n * sizeof(int)));
  CHECK(cudaStreamGetId(cudaStreamPerThread, id));
  for (int round = 0; round < 20; round++) {
    fill<<<n / 256, 256>>>(n, t * 100000 + round, d);
    inc<<<n / 256, 256>>>(n, d);
    CHECK(cudaMemcpyAsync(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost, 0));
    CHECK(cudaStreamSynchronize(0));
    for (int i = 0; i < n; i++)
      if (h[i] != t * 100000 + round + i + 1) { printf("FAIL thread %d round %d: h[%d] = %d\n", t, round, i, h[i]); return 1; }
  }
  CHECK(cudaFree(d));
  return 0;
}

int main() {
  CHECK(cudaFree(0));
  const int threads = 4;
  std::vector<std::thread> ts;
  int rc[threads] = {0};
  unsigned long long ids[threads] = {0};
  for (int t = 0; t < threads; t++) ts.emplace_back([&, t] { rc[t] = worker(t, &ids[t]); });
  for (auto &th : ts) th.join();
  for (int t = 0; t < threads; t++) EXPECT(rc[t] == 0);
  for (int a = 0; a < threads; a++)
    for (int b = a + 1; b < threads; b++) EXPECT(ids[a] != ids[b]);
  unsigned long long legacy = 0, mine = 0;
  CHECK(cudaStreamGetId(cudaStreamLegacy, &legacy));
  CHECK(cudaStreamGetId(cudaStreamPerThread, &mine));
  EXPECT(legacy != mine);

  // Capture on this thread's default stream; the legacy stream cannot be captured.
  int *d;
  CHECK(cudaMalloc(&d, 256 * sizeof(int)));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CHECK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeGlobal));
  fill<<<1, 256>>>(256, 7, d);
  inc<<<1, 256>>>(256, d);
  CHECK(cudaStreamEndCapture(cudaStreamPerThread, &g));
  CHECK(cudaGraphInstantiate(&ge, g, 0));
  CHECK(cudaGraphLaunch(ge, cudaStreamPerThread));
  int h[256];
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  EXPECT(h[0] == 8 && h[255] == 7 + 255 + 1);
  EXPECT(cudaStreamBeginCapture(cudaStreamLegacy, cudaStreamCaptureModeGlobal) != cudaSuccess);
  (void)cudaGetLastError();
  CHECK(cudaGraphExecDestroy(ge));
  CHECK(cudaGraphDestroy(g));
  CHECK(cudaFree(d));
  printf("PASS\n");
  return 0;
}
