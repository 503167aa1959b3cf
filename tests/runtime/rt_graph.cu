// CUDA graphs by stream capture (as PyTorch uses them): capture copies, memsets, kernels and a
// host function on a stream, fork/join a second stream into the capture, instantiate, launch
// repeatedly with new host input, and the capture errors CUDA defines. With netgpu's
// libcuda a graph launch makes no round trip (netgpu_stats). Prints PASS or what went wrong.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>
#include <dlfcn.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  printf("FAIL %s:%d %s: %s (%d)\n", __FILE__, __LINE__, #x, cudaGetErrorName(e), (int)e); return 1; } } while (0)
#define EXPECT(c) do { if (!(c)) { printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); return 1; } } while (0)

__global__ void scale(int n, float a, float *x) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= a;
}
__global__ void add(int n, const float *x, float *y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

static int host_calls;
static void CUDART_CB on_host(void *p) { host_calls += *(int *)p; }

typedef size_t (*stats_fn)(unsigned long long *, size_t);

int main() {
  const int n = 4096;
  static float in[n], out[n];
  float *x, *y;
  CHECK(cudaMalloc(&x, n * sizeof(float)));
  CHECK(cudaMalloc(&y, n * sizeof(float)));
  cudaStream_t s, side;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  cudaEvent_t fork, join;
  CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  CHECK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  int one = 1;

  // y = 2 * in (on s); x = 3 * in on the side stream, joined back; y += x; y copied out;
  // a host function counts the launches. So out = 5 * in.
  cudaStreamCaptureStatus st;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CHECK(cudaStreamIsCapturing(s, &st));
  EXPECT(st == cudaStreamCaptureStatusActive);
  CHECK(cudaMemcpyAsync(x, in, sizeof in, cudaMemcpyHostToDevice, s));
  CHECK(cudaMemsetAsync(y, 0, sizeof out, s));
  CHECK(cudaMemcpyAsync(y, x, sizeof out, cudaMemcpyDeviceToDevice, s));
  scale<<<n / 256, 256, 0, s>>>(n, 2.0f, y);
  CHECK(cudaEventRecord(fork, s));
  CHECK(cudaStreamWaitEvent(side, fork, 0));           // side joins the capture
  CHECK(cudaStreamIsCapturing(side, &st));
  EXPECT(st == cudaStreamCaptureStatusActive);
  scale<<<n / 256, 256, 0, side>>>(n, 3.0f, x);
  CHECK(cudaEventRecord(join, side));
  CHECK(cudaStreamWaitEvent(s, join, 0));              // and is joined back
  add<<<n / 256, 256, 0, s>>>(n, x, y);
  CHECK(cudaMemcpyAsync(out, y, sizeof out, cudaMemcpyDeviceToHost, s));
  CHECK(cudaLaunchHostFunc(s, on_host, &one));
  unsigned long long id = 0;
  CHECK(cudaStreamGetCaptureInfo(s, &st, &id));
  EXPECT(st == cudaStreamCaptureStatusActive && id != 0);
  cudaGraph_t g;
  CHECK(cudaStreamEndCapture(s, &g));
  CHECK(cudaStreamIsCapturing(s, &st));
  EXPECT(st == cudaStreamCaptureStatusNone);
  CHECK(cudaStreamIsCapturing(side, &st));
  EXPECT(st == cudaStreamCaptureStatusNone);
  EXPECT(host_calls == 0);  // nothing ran while capturing

  size_t nodes = 0;
  CHECK(cudaGraphGetNodes(g, nullptr, &nodes));
  printf("captured %zu nodes\n", nodes);
  EXPECT(nodes >= 8);
  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, g, 0));

  // cudart loaded libcuda.so.1 privately: look it up there.
  void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
  stats_fn stats = lib ? (stats_fn)dlsym(lib, "netgpu_stats") : nullptr;
  for (int round = 1; round <= 3; round++) {
    for (int i = 0; i < n; i++) in[i] = i * round;
    memset(out, 0, sizeof out);
    unsigned long long before[2] = {0, 0}, after[2] = {0, 0};
    if (stats) stats(before, 2);
    CHECK(cudaGraphLaunch(exec, s));
    if (stats) stats(after, 2);
    CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < n; i++)
      if (out[i] != 5.0f * i * round) { printf("FAIL round %d out[%d] = %f, want %f\n", round, i, out[i], 5.0f * i * round); return 1; }
    EXPECT(host_calls == round);
    // The host node waits for the stream (one round trip); everything else is posted.
    if (stats) {
      printf("graph launch %d: %llu round trips, %llu requests posted\n", round, after[0] - before[0], after[1] - before[1]);
      EXPECT(after[0] - before[0] <= 1);
    }
  }

  // Errors: synchronising a capturing stream is refused and invalidates the capture.
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  scale<<<1, 1, 0, s>>>(1, 1.0f, x);
  EXPECT(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamIsCapturing(s, &st));
  EXPECT(st == cudaStreamCaptureStatusInvalidated);
  cudaGraph_t bad = (cudaGraph_t)1;
  EXPECT(cudaStreamEndCapture(s, &bad) == cudaErrorStreamCaptureInvalidated && bad == nullptr);
  (void)cudaGetLastError();
  // The legacy NULL stream cannot be captured.
  EXPECT(cudaStreamBeginCapture(cudaStreamLegacy, cudaStreamCaptureModeGlobal) != cudaSuccess);
  (void)cudaGetLastError();
  // The graph still works after those errors; the stream works normally again.
  for (int i = 0; i < n; i++) in[i] = 1;
  CHECK(cudaGraphLaunch(exec, s));
  CHECK(cudaStreamSynchronize(s));
  EXPECT(out[7] == 5.0f);

  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(g));
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaStreamDestroy(side));
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  printf("PASS\n");
  return 0;
}
