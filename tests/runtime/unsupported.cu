// What netgpu does not do answers a clear cudaErrorNotSupported, never success without the
// work: managed memory (cudaMallocManaged) and graphs built node by node
// (cudaGraphAddKernelNode, cudaGraphAddMemcpyNode). Graphs made by stream capture do run,
// with the captured work done (checked here too). The context stays usable after each.
#include "common.h"

__global__ void scale(float* x, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= a;
}

int main() {
  TEST_NAME("unsupported");
  int managed = -1, concurrent = -1;
  CHECK(cudaDeviceGetAttribute(&managed, cudaDevAttrManagedMemory, 0));
  CHECK(cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, 0));
  REQUIRE(managed == 0 && concurrent == 0, "managed memory attributes %d %d, want 0 0", managed, concurrent);
  float* m = nullptr;
  EXPECT_ERROR(cudaMallocManaged(&m, 4096), cudaErrorNotSupported);
  REQUIRE(m == nullptr, "cudaMallocManaged wrote a pointer it did not allocate");
  cudaGetLastError();

  // A graph built node by node.
  const int n = 256;
  float h[n];
  for (int i = 0; i < n; i++) h[i] = (float)i;
  float* d;
  CHECK(cudaMalloc(&d, sizeof h));
  CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice));
  cudaGraph_t g;
  CHECK(cudaGraphCreate(&g, 0));
  cudaGraphNode_t node;
  float a = 2.0f;
  int count = n;
  void* args[] = {&d, &a, &count};
  cudaKernelNodeParams kp = {};
  kp.func = (void*)scale;
  kp.gridDim = dim3(1);
  kp.blockDim = dim3(n);
  kp.kernelParams = args;
  EXPECT_ERROR(cudaGraphAddKernelNode(&node, g, nullptr, 0, &kp), cudaErrorNotSupported);
  cudaGetLastError();
  EXPECT_ERROR(cudaGraphAddMemcpyNode1D(&node, g, nullptr, 0, h, d, sizeof h, cudaMemcpyDeviceToHost),
               cudaErrorNotSupported);
  cudaGetLastError();
  CHECK(cudaGraphDestroy(g));

  // The same work by stream capture runs, replayed twice.
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  scale<<<1, n, 0, s>>>(d, a, n);
  CHECK(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, g, 0));
  CHECK(cudaGraphLaunch(exec, s));
  CHECK(cudaGraphLaunch(exec, s));
  CHECK(cudaStreamSynchronize(s));
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) REQUIRE(h[i] == 4.0f * i, "h[%d] = %f after two graph launches", i, h[i]);
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(g));
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaFree(d));
  return pass("managed memory and node-by-node graphs: cudaErrorNotSupported; captured graphs run");
}
