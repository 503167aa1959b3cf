// Relocatable device code, unit B.
__device__ int triple(int x) { return x * 3; }
extern "C" __global__ void kb(int* p) { p[threadIdx.x] = triple(p[threadIdx.x]); }
