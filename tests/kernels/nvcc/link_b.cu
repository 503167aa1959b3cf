// Separately compiled device code (nvcc -rdc=true), part two (see link_a.cu).
#include <cstdio>

__device__ int shared_counter = 5;
__device__ float scale_factor = 0.5f;
__device__ int helper_a(int x);

template <class T> __device__ __noinline__ T twice_t(T x) { return x + x; }

static __device__ __noinline__ int local_twice(int x) { return 2 * x + 100; }

__device__ __noinline__ int helper_b(int x) { return helper_a(x) + local_twice(x); }

extern "C" __global__ void kernel_b(int *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = helper_a(i) - local_twice(i) + twice_t(i);
        if (i == 0)
            printf("b: scale %.2f\n", scale_factor);
    }
}
