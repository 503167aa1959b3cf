// Streams, events and pinned memory: asynchronous copies and kernels on several streams,
// cudaStreamWaitEvent ordering across streams, event timing, stream/event queries.
#include "common.h"

__global__ void scale(float* p, int n, float k) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] *= k;
}

__global__ void add_from(float* dst, const float* src, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

int main() {
  TEST_NAME("streams_events");
  const int n = 1 << 16, parts = 4, chunk = n / parts;
  float* h;
  CHECK(cudaMallocHost(&h, n * sizeof(float)));
  float* h2;
  CHECK(cudaHostAlloc(&h2, n * sizeof(float), cudaHostAllocDefault));
  for (int i = 0; i < n; i++) h[i] = (float)i;
  float *d, *d2;
  CHECK(cudaMalloc(&d, n * sizeof(float)));
  CHECK(cudaMalloc(&d2, n * sizeof(float)));
  cudaStream_t s[parts];
  for (int k = 0; k < parts; k++) CHECK(cudaStreamCreateWithFlags(&s[k], cudaStreamNonBlocking));
  cudaEvent_t start, stop, done[parts];
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int k = 0; k < parts; k++) CHECK(cudaEventCreateWithFlags(&done[k], cudaEventDisableTiming));

  CHECK(cudaEventRecord(start, s[0]));
  // Each stream: copy its chunk in, scale it, copy it out.
  for (int k = 0; k < parts; k++) {
    float* dp = d + k * chunk;
    CHECK(cudaMemcpyAsync(dp, h + k * chunk, chunk * sizeof(float), cudaMemcpyHostToDevice, s[k]));
    scale<<<chunk / 256, 256, 0, s[k]>>>(dp, chunk, 2.0f);
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(done[k], s[k]));
  }
  // Stream 0 waits for all the others, then adds the whole array into d2.
  CHECK(cudaMemsetAsync(d2, 0, n * sizeof(float), s[0]));
  for (int k = 1; k < parts; k++) CHECK(cudaStreamWaitEvent(s[0], done[k], 0));
  add_from<<<n / 256, 256, 0, s[0]>>>(d2, d, n);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpyAsync(h2, d2, n * sizeof(float), cudaMemcpyDeviceToHost, s[0]));
  CHECK(cudaEventRecord(stop, s[0]));
  CHECK(cudaEventSynchronize(stop));
  CHECK(cudaStreamQuery(s[0]));
  CHECK(cudaEventQuery(stop));
  float ms = -1;
  CHECK(cudaEventElapsedTime(&ms, start, stop));
  REQUIRE(ms >= 0.0f, "elapsed %f ms", ms);
  for (int i = 0; i < n; i++) REQUIRE(h2[i] == 2.0f * i, "h2[%d] = %f", i, h2[i]);
  // Async copies back on every stream, then one device-wide synchronisation.
  for (int k = 0; k < parts; k++)
    CHECK(cudaMemcpyAsync(h + k * chunk, d + k * chunk, chunk * sizeof(float), cudaMemcpyDeviceToHost, s[k]));
  CHECK(cudaDeviceSynchronize());
  for (int i = 0; i < n; i++) REQUIRE(h[i] == 2.0f * i, "h[%d] = %f", i, h[i]);
  // A timing-disabled event cannot time.
  EXPECT_ERROR(cudaEventElapsedTime(&ms, done[0], done[1]), cudaErrorInvalidResourceHandle);
  for (int k = 0; k < parts; k++) {
    CHECK(cudaStreamSynchronize(s[k]));
    CHECK(cudaStreamDestroy(s[k]));
    CHECK(cudaEventDestroy(done[k]));
  }
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaFreeHost(h));
  CHECK(cudaFreeHost(h2));
  CHECK(cudaFree(d));
  CHECK(cudaFree(d2));
  char detail[128];
  snprintf(detail, sizeof detail, "%d streams, cross-stream waits, pinned async copies, %.3f ms", parts, ms);
  return pass(detail);
}
