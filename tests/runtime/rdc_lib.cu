// The second translation unit of the rdc program (see rdc_main.cu).
__device__ int lib_scale = 1;
__device__ int lib_combine(int a, int b) { return a + 2 * b; }
__global__ void lib_kernel(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += 1;
}
