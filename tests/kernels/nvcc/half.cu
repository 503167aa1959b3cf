// f16 and bf16, scalar and packed: arithmetic, fma, comparisons, conversions in every
// rounding mode, as cuda_fp16.h / cuda_bf16.h emit them.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

extern "C" __global__ void half_math(const float *a, const float *b, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    __half x = __float2half(a[i]), y = __float2half(b[i]);
    __half2 x2 = __floats2half2_rn(a[i], b[i]), y2 = __floats2half2_rn(b[i], a[i]);
    float *o = out + i * 16;
    o[0] = __half2float(__hadd(x, y));
    o[1] = __half2float(__hmul(x, y));
    o[2] = __half2float(__hfma(x, y, __float2half(1.0f)));
    o[3] = __half2float(__hsub(x, y));
    __half2 s2 = __hadd2(x2, y2), m2 = __hmul2(x2, y2), f2 = __hfma2(x2, y2, x2);
    o[4] = __low2float(s2) + 1000.0f * __high2float(s2);
    o[5] = __low2float(m2);
    o[6] = __high2float(f2);
    o[7] = __hlt(x, y) ? 1.0f : 0.0f;
    o[8] = __half2float(__hmax(x, y)) - __half2float(__hmin(x, y));
    o[9] = __half2float(__float2half_rz(a[i] * 1.001f));
    o[10] = __half2float(__float2half_rd(a[i] * 1.001f)) + __half2float(__float2half_ru(a[i] * 1.001f));
    o[11] = (float)__half2int_rn(__hmul(x, __float2half(3.0f)));
    o[12] = __half2float(__hneg(__habs(x)));
    o[13] = __half2float(hsqrt(__habs(x)));
    o[14] = __half2float(__hdiv(x, __float2half(3.0f)));
    o[15] = __half2float(__int2half_rn(i - 50)) + __half2float(__ushort_as_half(__half_as_ushort(y)));
}

extern "C" __global__ void bf16_math(const float *a, const float *b, float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    __nv_bfloat16 x = __float2bfloat16(a[i]), y = __float2bfloat16(b[i]);
    __nv_bfloat162 x2 = __floats2bfloat162_rn(a[i], b[i]), y2 = __floats2bfloat162_rn(b[i], a[i]);
    float *o = out + i * 8;
    o[0] = __bfloat162float(__hadd(x, y));
    o[1] = __bfloat162float(__hmul(x, y));
    o[2] = __bfloat162float(__hadd(__hmul(x, y), __float2bfloat16(1.0f)));
    __nv_bfloat162 s2 = __hadd2(x2, y2), f2 = __hmul2(x2, y2);
    o[3] = __low2float(s2) + 1000.0f * __high2float(s2);
    o[4] = __high2float(f2);
    o[5] = __hlt(x, y) ? 1.0f : 0.0f;
    o[6] = __bfloat162float(__float2bfloat16_rz(a[i] * 1.001f));
    o[7] = (float)__bfloat162int_rn(x) + __bfloat162float(__hmax(x, y));
}
