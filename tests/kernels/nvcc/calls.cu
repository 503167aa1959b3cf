// Calls with .param aggregates and return values, struct kernel parameters, local memory
// (dynamically indexed arrays, stack frames), dynamic shared memory, launch bounds.
struct Vec3 {
    float x, y, z;
};

struct Params {
    int n;
    float scale;
    Vec3 offset;
    const float *in;
    float *out;
    char tag[5];
    double bias;
};

struct Big {
    int v[12];
    long long w;
};

__device__ __noinline__ Vec3 cross(Vec3 a, Vec3 b)
{
    return Vec3{a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

__device__ __noinline__ Big make_big(int seed)
{
    Big b;
    for (int i = 0; i < 12; ++i)
        b.v[i] = seed * (i + 1);
    b.w = (long long)seed << 20;
    return b;
}

__device__ __noinline__ int sum_big(Big b, int k)
{
    int s = 0;
    for (int i = 0; i < 12; ++i)
        s += b.v[(i + k) % 12] * (i + 1);
    return s + (int)(b.w >> 20);
}

__device__ __noinline__ int fib_iter(int n)
{
    int a = 0, b = 1;
    for (int i = 0; i < n; ++i) {
        int t = a + b;
        a = b;
        b = t;
    }
    return a;
}

extern "C" __global__ void __launch_bounds__(256, 2) struct_params(Params p, Vec3 axis, int *iout)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n)
        return;
    float v = p.in[i] * p.scale;
    Vec3 a = {v + p.offset.x, p.offset.y, p.offset.z};
    Vec3 c = cross(a, axis);
    p.out[i * 3] = c.x;
    p.out[i * 3 + 1] = c.y;
    p.out[i * 3 + 2] = c.z + (float)p.bias + (float)p.tag[i % 5];
    Big b = make_big(i);
    iout[i * 2] = sum_big(b, i % 7);
    iout[i * 2 + 1] = fib_iter(i % 30);
}

// A dynamically indexed per-thread array (lives in .local memory).
extern "C" __global__ void local_array(const int *idx, int *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    int a[64];
    for (int k = 0; k < 64; ++k)
        a[k] = k * i;
    int s = 0;
    for (int k = 0; k < 16; ++k)
        s += a[(idx[i] + k * 7) & 63];
    out[i] = s;
}

extern "C" __global__ void __launch_bounds__(128) dyn_shared(const float *in, float *out, int n)
{
    extern __shared__ float buf[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = i < n ? in[i] : 0.0f;
    buf[blockDim.x + threadIdx.x] = 1.0f;
    __syncthreads();
    if (i < n)
        out[i] = buf[blockDim.x - 1 - threadIdx.x] + buf[blockDim.x + threadIdx.x];
}

__device__ int counter;
__constant__ int table[8] = {1, 2, 3, 5, 8, 13, 21, 34};

extern "C" __global__ void symbols(int *out)
{
    int i = threadIdx.x;
    out[i] = table[i % 8] + atomicAdd(&counter, 1) * 0;
}

// A global whose initial value is another global's address.
__device__ int target_arr[4] = {10, 20, 30, 40};
__device__ int *ptr_to = &target_arr[2];

extern "C" __global__ void follow_pointer(int *out)
{
    out[threadIdx.x] = ptr_to[threadIdx.x % 2];
}
