// Relocatable device code, unit A: calls a device function defined in unit B.
__device__ int triple(int x);
extern "C" __global__ void ka(int* p) { p[threadIdx.x] = triple(threadIdx.x); }
int main() { return 0; }
