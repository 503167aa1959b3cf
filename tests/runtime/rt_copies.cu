// Pitched and 3D copies, event waits between streams, and stream-ordered allocation, as the
// runtime issues them: cudaMallocPitch + cudaMemcpy2D (both ways, sub-rectangles, async into
// pinned memory), cudaMalloc3D + cudaMemcpy3D, device-to-device 2D, cudaMemset2D,
// cudaStreamWaitEvent ordering a consumer stream after a producer, cudaMallocAsync/FreeAsync.
// Prints PASS or what went wrong.
#include <cstdio>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  printf("FAIL %s:%d %s: %s (%d)\n", __FILE__, __LINE__, #x, cudaGetErrorName(e), (int)e); return 1; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); return 1; } } while (0)

__global__ void spin_then_fill(int *x, int n, int v) {
  // Slow enough on any executor that a missing wait would show.
  for (int k = 0; k < 2000; k++) __syncthreads();
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = v;
}
__global__ void add_one(const int *x, int *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] + 1;
}

int main() {
  // 2D: a 37 x 23 byte rectangle out of a 64-wide host image into a pitched allocation.
  const int W = 64, H = 40, w = 37, h = 23;
  std::vector<unsigned char> img(W * H), back(W * H, 0);
  for (int i = 0; i < W * H; i++) img[i] = (unsigned char)(i * 7 + 3);
  unsigned char *d;
  size_t pitch;
  CHECK(cudaMallocPitch((void **)&d, &pitch, W, H));
  EXPECT(pitch >= (size_t)W);
  CHECK(cudaMemset2D(d, pitch, 0xee, W, H));
  CHECK(cudaMemcpy2D(d + 5 + 3 * pitch, pitch, img.data() + 2 + 4 * W, W, w, h, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy2D(back.data(), W, d, pitch, W, H, cudaMemcpyDeviceToHost));
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      bool in = x >= 5 && x < 5 + w && y >= 3 && y < 3 + h;
      unsigned char want = in ? img[(x - 5 + 2) + (y - 3 + 4) * W] : 0xee;
      if (back[x + y * W] != want) { printf("FAIL 2D (%d,%d) = %d want %d\n", x, y, back[x + y * W], want); return 1; }
    }
  // Device to device 2D, then async into pinned memory.
  unsigned char *d2;
  size_t pitch2;
  CHECK(cudaMallocPitch((void **)&d2, &pitch2, W, H));
  CHECK(cudaMemcpy2D(d2, pitch2, d, pitch, W, H, cudaMemcpyDeviceToDevice));
  unsigned char *pinned;
  CHECK(cudaMallocHost((void **)&pinned, W * H));
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  CHECK(cudaMemcpy2DAsync(pinned, W, d2, pitch2, W, H, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  EXPECT(memcmp(pinned, back.data(), W * H) == 0);

  // 3D: a 10 x 6 x 5 box of ints.
  const int X = 10, Y = 6, Z = 5;
  std::vector<int> vol(X * Y * Z), out(X * Y * Z, 0);
  for (int i = 0; i < X * Y * Z; i++) vol[i] = i * 3 - 7;
  cudaExtent ext = make_cudaExtent(X * sizeof(int), Y, Z);
  cudaPitchedPtr dp;
  CHECK(cudaMalloc3D(&dp, ext));
  cudaMemcpy3DParms up = {};
  up.srcPtr = make_cudaPitchedPtr(vol.data(), X * sizeof(int), X, Y);
  up.dstPtr = dp;
  up.extent = ext;
  up.kind = cudaMemcpyHostToDevice;
  CHECK(cudaMemcpy3D(&up));
  cudaMemcpy3DParms down = {};
  down.srcPtr = dp;
  down.dstPtr = make_cudaPitchedPtr(out.data(), X * sizeof(int), X, Y);
  down.extent = ext;
  down.kind = cudaMemcpyDeviceToHost;
  CHECK(cudaMemcpy3D(&down));
  EXPECT(out == vol);

  // A consumer stream waits for the producer's event (no host wait in between).
  const int n = 1024;
  int *a, *b;
  CHECK(cudaMalloc(&a, n * sizeof(int)));
  CHECK(cudaMalloc(&b, n * sizeof(int)));
  CHECK(cudaMemset(a, 0, n * sizeof(int)));
  cudaStream_t prod, cons;
  CHECK(cudaStreamCreateWithFlags(&prod, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&cons, cudaStreamNonBlocking));
  cudaEvent_t ready;
  CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  spin_then_fill<<<n / 256, 256, 0, prod>>>(a, n, 41);
  CHECK(cudaEventRecord(ready, prod));
  CHECK(cudaStreamWaitEvent(cons, ready, 0));
  add_one<<<n / 256, 256, 0, cons>>>(a, b, n);
  std::vector<int> hb(n);
  CHECK(cudaMemcpyAsync(hb.data(), b, n * sizeof(int), cudaMemcpyDeviceToHost, cons));
  CHECK(cudaStreamSynchronize(cons));
  for (int i = 0; i < n; i++)
    if (hb[i] != 42) { printf("FAIL wait-event b[%d] = %d\n", i, hb[i]); return 1; }

  // Stream-ordered allocation.
  int *t;
  CHECK(cudaMallocAsync((void **)&t, n * sizeof(int), s));
  add_one<<<n / 256, 256, 0, s>>>(b, t, n);
  CHECK(cudaMemcpyAsync(hb.data(), t, n * sizeof(int), cudaMemcpyDeviceToHost, s));
  CHECK(cudaFreeAsync(t, s));
  CHECK(cudaStreamSynchronize(s));
  EXPECT(hb[0] == 43 && hb[n - 1] == 43);

  CHECK(cudaFree(d));
  CHECK(cudaFree(d2));
  CHECK(cudaFree(dp.ptr));
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  CHECK(cudaFreeHost(pinned));
  printf("PASS\n");
  return 0;
}
