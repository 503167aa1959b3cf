// Warp collectives and bit manipulation: shfl (all modes, widths, sub-warp), vote (all
// modes), match, activemask, and the integer intrinsics (__byte_perm, __brev, __popc,
// __clz, __ffs, __fns, funnel shifts, bit-field extract/insert via asm).
extern "C" __global__ void shuffles(const int *in, int *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    unsigned full = 0xffffffffu;
    int o = 0;
    o += __shfl_sync(full, v, 5);
    o += 3 * __shfl_up_sync(full, v, 3);
    o += 5 * __shfl_down_sync(full, v, 7);
    o += 7 * __shfl_xor_sync(full, v, 9);
    o += 11 * __shfl_sync(full, v, threadIdx.x + 1, 8);
    o += 13 * __shfl_down_sync(full, v, 2, 16);
    o += 17 * __shfl_up_sync(full, v, 1, 4);
    long long w = ((long long)v << 33) | (unsigned)i;
    long long x = __shfl_xor_sync(full, w, 1);
    double d = __shfl_down_sync(full, (double)v * 0.25, 1);
    out[i * 3] = o;
    out[i * 3 + 1] = (int)(x >> 33) ^ (int)(x & 0xffff);
    out[i * 3 + 2] = (int)(d * 4.0);
}

extern "C" __global__ void votes(const int *in, unsigned *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    unsigned b = __ballot_sync(0xffffffffu, v & 1);
    int all = __all_sync(0xffffffffu, v > -1000);
    int any = __any_sync(0xffffffffu, v > 900);
    int uni = __uni_sync(0xffffffffu, v > 2000);
    unsigned act = __activemask();
    unsigned m_any = __match_any_sync(0xffffffffu, v & 3);
    int pred;
    unsigned m_all = __match_all_sync(0xffffffffu, v & 0, &pred);
    unsigned m_all2 = __match_all_sync(0xffffffffu, v, &pred);
    unsigned long long m64 = __match_any_sync(0xffffffffu, (unsigned long long)(v & 1) << 40);
    out[i * 6] = b;
    out[i * 6 + 1] = all | (any << 1) | (uni << 2) | (pred << 3);
    out[i * 6 + 2] = act;
    out[i * 6 + 3] = m_any;
    out[i * 6 + 4] = m_all ^ (m_all2 << 1);
    out[i * 6 + 5] = (unsigned)m64;
    // Divergent: half the warp votes.
    if (threadIdx.x & 1) {
        unsigned bb = __ballot_sync(0xaaaaaaaau, v > 0);
        out[i * 6 + 5] ^= bb;
    }
}

extern "C" __global__ void bits(const unsigned *in, unsigned *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    unsigned a = in[i], b = in[(i + 1) % n];
    unsigned long long w = ((unsigned long long)a << 32) | b;
    unsigned *o = out + i * 16;
    o[0] = __byte_perm(a, b, 0x5140);
    o[1] = __byte_perm(a, b, b & 0x7777);
    o[2] = __brev(a);
    o[3] = __popc(a) + (__popcll(w) << 8);
    o[4] = __clz(a) + (__clzll(w) << 8);
    o[5] = __ffs(a) + (__ffsll(w) << 8);
    o[6] = __fns(a, b & 31, 1 + (int)(b % 5));
    o[7] = __funnelshift_l(a, b, b & 63);
    o[8] = __funnelshift_rc(a, b, b & 63);
    unsigned e;
    asm("bfe.u32 %0, %1, %2, %3;" : "=r"(e) : "r"(a), "r"(b & 31), "r"((b >> 5) & 31));
    o[9] = e;
    int se;
    asm("bfe.s32 %0, %1, %2, %3;" : "=r"(se) : "r"((int)a), "r"(b & 31), "r"((b >> 5) & 31));
    o[10] = (unsigned)se;
    unsigned f;
    asm("bfi.b32 %0, %1, %2, %3, %4;" : "=r"(f) : "r"(a), "r"(b), "r"(b & 31), "r"((b >> 5) & 31));
    o[11] = f;
    unsigned bf;
    asm("bfind.u32 %0, %1;" : "=r"(bf) : "r"(a));
    o[12] = bf;
    int sbf;
    asm("bfind.shiftamt.s32 %0, %1;" : "=r"(sbf) : "r"((int)a));
    o[13] = (unsigned)sbf;
    o[14] = __brevll(w) >> 13;
    o[15] = __umulhi(a, b) ^ (unsigned)(__umul64hi(w, a) >> 3) ^ (unsigned)__mulhi((int)a, (int)b);
}
