// Pitched memory: cudaMallocPitch, cudaMemcpy2D in every direction (host to device, device
// to device between different pitches, device to host), cudaMemset2D, cudaMemcpy2DAsync, a
// kernel indexing rows by the pitch.
#include "common.h"
#include <vector>

__global__ void add_row_index(float* p, size_t pitch, int w, int h) {
  int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x < w && y < h) {
    float* row = (float*)((char*)p + y * pitch);
    row[x] += 1000.0f * y;
  }
}

int main() {
  TEST_NAME("memcpy2d");
  const int w = 100, h = 37;  // a width that is not a multiple of the pitch alignment
  std::vector<float> src(w * h), dst(w * h, -1.0f);
  for (int i = 0; i < w * h; i++) src[i] = (float)i;
  float *a, *b;
  size_t pa = 0, pb = 0;
  CHECK(cudaMallocPitch(&a, &pa, w * sizeof(float), h));
  CHECK(cudaMallocPitch(&b, &pb, (w + 50) * sizeof(float), h));
  REQUIRE(pa >= w * sizeof(float) && pb >= (w + 50) * sizeof(float), "pitches %zu %zu", pa, pb);
  CHECK(cudaMemset2D(a, pa, 0xff, pa, h));  // padding too
  CHECK(cudaMemcpy2D(a, pa, src.data(), w * sizeof(float), w * sizeof(float), h, cudaMemcpyHostToDevice));
  add_row_index<<<dim3((w + 127) / 128, h), 128>>>(a, pa, w, h);
  CHECK_LAUNCH();
  CHECK(cudaMemset2D(b, pb, 0, pb, h));
  CHECK(cudaMemcpy2D(b, pb, a, pa, w * sizeof(float), h, cudaMemcpyDeviceToDevice));
  CHECK(cudaMemcpy2D(dst.data(), w * sizeof(float), b, pb, w * sizeof(float), h, cudaMemcpyDeviceToHost));
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      REQUIRE(dst[y * w + x] == src[y * w + x] + 1000.0f * y, "(%d,%d) = %f", x, y, dst[y * w + x]);
  // The padding of b past the copied width is still zero.
  std::vector<unsigned char> row(pb);
  CHECK(cudaMemcpy(row.data(), (char*)b + 5 * pb, pb, cudaMemcpyDeviceToHost));
  for (size_t i = w * sizeof(float); i < pb; i++) REQUIRE(row[i] == 0, "padding byte %zu = %d", i, row[i]);
  // A sub-rectangle, asynchronously, into a tightly packed host buffer.
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  std::vector<float> sub(10 * 5, 0.0f);
  CHECK(cudaMemcpy2DAsync(sub.data(), 10 * sizeof(float), (char*)a + 3 * pa + 20 * sizeof(float), pa,
                          10 * sizeof(float), 5, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  for (int y = 0; y < 5; y++)
    for (int x = 0; x < 10; x++)
      REQUIRE(sub[y * 10 + x] == src[(y + 3) * w + x + 20] + 1000.0f * (y + 3), "sub (%d,%d)", x, y);
  // A width larger than the pitch is an error.
  EXPECT_ERROR(cudaMemcpy2D(a, pa, src.data(), w * sizeof(float), pa + 4, h, cudaMemcpyHostToDevice), cudaErrorInvalidPitchValue);
  cudaGetLastError();
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  return pass("cudaMallocPitch, cudaMemcpy2D H2D/D2D/D2H, cudaMemset2D, cudaMemcpy2DAsync sub-rectangle");
}
