// Instructions that need sm_80: redux.sync, native bf16 arithmetic, cp.async-free paths.
#include <cuda_bf16.h>

extern "C" __global__ void redux(const int *in, int *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned v = (unsigned)in[i];
    unsigned full = 0xffffffffu;
    out[i * 6] = __reduce_add_sync(full, v);
    out[i * 6 + 1] = __reduce_min_sync(full, (int)v);
    out[i * 6 + 2] = __reduce_max_sync(full, (int)v);
    out[i * 6 + 3] = __reduce_min_sync(full, v);
    out[i * 6 + 4] = __reduce_and_sync(full, v) ^ __reduce_or_sync(full, v);
    out[i * 6 + 5] = __reduce_xor_sync(full, v);
}

extern "C" __global__ void bf16_native(const float *a, const float *b, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    __nv_bfloat16 x = __float2bfloat16(a[i]), y = __float2bfloat16(b[i]);
    __nv_bfloat162 x2 = __floats2bfloat162_rn(a[i], b[i]);
    out[i * 4] = __bfloat162float(__hfma(x, y, x));
    out[i * 4 + 1] = __bfloat162float(__hmul(x, y));
    out[i * 4 + 2] = __high2float(__hmul2(x2, x2));
    out[i * 4 + 3] = __bfloat162float(__hmax(x, y));
}
