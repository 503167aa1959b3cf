// Conversions in every rounding and saturation form, and the math the fast-math intrinsics
// and libdevice emit (ex2/lg2/rsqrt/sqrt/rcp/sin/cos .approx and .rn, copysign, testp).
#include <cstdint>

extern "C" __global__ void conversions(const float *f, const double *d, int *oi, float *of, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float x = f[i];
    double y = d[i];
    int *o = oi + i * 16;
    o[0] = __float2int_rn(x);
    o[1] = __float2int_rz(x);
    o[2] = __float2int_ru(x);
    o[3] = __float2int_rd(x);
    o[4] = (int)__float2uint_rn(x);
    o[5] = (int)__float2ll_rn(x * 1e10f);
    o[6] = (int)(__float2ull_rz(x * 1e10f) >> 8);
    o[7] = __double2int_rn(y);
    o[8] = __double2int_rz(y);
    o[9] = (int)__double2ll_rd(y * 1e12);
    o[10] = (int)(signed char)x;
    o[11] = (int)(unsigned short)(int)x;
    o[12] = __float_as_int(__int2float_rz(i * 16777215));
    o[13] = __float_as_int(__uint2float_ru(0xffffff01u + i));
    o[14] = __float_as_int(__double2float_rz(y)) ^ __float_as_int(__double2float_ru(y));
    o[15] = __float_as_int(__saturatef(x));
    float *g = of + i * 16;
    g[0] = __expf(x * 0.1f);
    g[1] = __logf(fabsf(x) + 1.0f);
    g[2] = exp2f(x * 0.1f);
    g[3] = log2f(fabsf(x) + 1.0f);
    g[4] = rsqrtf(fabsf(x) + 1.0f);
    g[5] = sqrtf(fabsf(x));
    g[6] = __fdividef(x, 3.0f);
    g[7] = __sinf(x) + __cosf(x);
    g[8] = copysignf(3.0f, x);
    g[9] = __frcp_rn(x + 0.5f);
    g[10] = __fsqrt_rn(fabsf(x));
    g[11] = isnan(x / (x - x)) ? 1.0f : 0.0f;
    g[12] = isinf(x * 1e38f * 1e38f) ? 1.0f : 0.0f;
    g[13] = (float)sqrt(fabs(y)) + (float)rsqrt(fabs(y) + 1.0);
    g[14] = __fmaf_rz(x, 1.0001f, 0.5f) + __fadd_rd(x, 0.1f) + __fmul_ru(x, 0.3f);
    g[15] = (float)__dadd_rn(y, 1.0) + __int_as_float(0x7f800000 & __float_as_int(x));
}
