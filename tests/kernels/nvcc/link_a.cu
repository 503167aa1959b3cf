// Separately compiled device code (nvcc -rdc=true), part one: uses a variable and a
// function defined in link_b.cu, defines one link_b.cu uses, and has an internal function
// and printf strings whose names collide with link_b.cu's.
#include <cstdio>

extern __device__ int shared_counter;
extern __device__ float scale_factor;
__device__ int helper_b(int x);

template <class T> __device__ __noinline__ T twice_t(T x) { return x + x; }

static __device__ __noinline__ int local_twice(int x) { return 2 * x; }

__device__ __noinline__ int helper_a(int x) { return x * 3 + 1; }

extern "C" __global__ void kernel_a(int *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = helper_b(i) + (int)(scale_factor * i) + local_twice(i) + twice_t(i);
        atomicAdd(&shared_counter, 1);
        if (i == 0)
            printf("a: counter starts at %d\n", shared_counter);
    }
}
