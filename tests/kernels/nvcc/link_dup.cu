// A second strong definition of link_a.cu's helper_a: linking both must fail.
__device__ __noinline__ int helper_a(int x) { return x; }
