// Device code for netgpu-image's tests: templates, __constant__/__device__ symbols, an
// extern "C" kernel, static shared memory. Built by the tests with NVIDIA's nvcc in
// several modes; the built images are not committed (NVIDIA's licence), only this source.
__constant__ float scale[4];
__device__ int counter;

template <typename T> __global__ void axpy(T a, const T* x, T* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] * scale[0] + y[i];
  if (i == 0) atomicAdd(&counter, 1);
}
template __global__ void axpy<float>(float, const float*, float*, int);
template __global__ void axpy<double>(double, const double*, double*, int);

extern "C" __global__ void plain(int* p) { p[threadIdx.x] = threadIdx.x; }

extern "C" __global__ void block_sum(const float* in, float* out) {
  __shared__ float tile[256];
  tile[threadIdx.x] = in[blockIdx.x * 256 + threadIdx.x];
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (threadIdx.x < s) tile[threadIdx.x] += tile[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = tile[0];
}

int main() { return 0; }
