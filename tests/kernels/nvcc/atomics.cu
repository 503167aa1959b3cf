// Atomics of every width and kind, in global and shared memory, with scopes and memory
// orders (cuda::atomic_ref), as CUB's look-back and user code emit them.
#include <cuda/atomic>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

struct Totals {
    int add_i; unsigned add_u; unsigned long long add_ull; float add_f; double add_d;
    int min_i; int max_i; unsigned min_u; unsigned max_u;
    long long min_ll; long long max_ll; unsigned long long min_ull; unsigned long long max_ull;
    unsigned and_u; unsigned or_u; unsigned xor_u; unsigned long long and_ull;
    unsigned long long or_ull; unsigned long long xor_ull;
    unsigned inc_u; unsigned dec_u; int exch_i; int cas_i; unsigned long long cas_ull;
    unsigned short cas_us; unsigned short pad;
    __half2 add_h2; __nv_bfloat162 add_b2; __half add_h; __nv_bfloat16 add_b;
    int block_scope; int system_scope; int relaxed_ref; int acq_rel_ref;
};

extern "C" __global__ void atomics_global(Totals *t, const int *in, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    int v = in[i];
    atomicAdd(&t->add_i, v);
    atomicAdd(&t->add_u, (unsigned)v);
    atomicAdd(&t->add_ull, (unsigned long long)(long long)v);
    atomicAdd(&t->add_f, (float)(v & 7));
    atomicAdd(&t->add_d, (double)v * 0.5);
    atomicMin(&t->min_i, v);
    atomicMax(&t->max_i, v);
    atomicMin(&t->min_u, (unsigned)v);
    atomicMax(&t->max_u, (unsigned)v);
    atomicMin(&t->min_ll, (long long)v * 1000000007LL);
    atomicMax(&t->max_ll, (long long)v * 1000000007LL);
    atomicMin(&t->min_ull, (unsigned long long)(long long)v);
    atomicMax(&t->max_ull, (unsigned long long)(long long)v);
    atomicAnd(&t->and_u, ~(1u << (i % 32)));
    atomicOr(&t->or_u, 1u << (v & 31));
    atomicXor(&t->xor_u, (unsigned)v);
    atomicAnd(&t->and_ull, ~(1ull << (i % 64)));
    atomicOr(&t->or_ull, 1ull << (v & 63));
    atomicXor(&t->xor_ull, (unsigned long long)(long long)v);
    atomicInc(&t->inc_u, 100u);
    atomicDec(&t->dec_u, 100u);
    atomicExch(&t->exch_i, v);
    // CAS loops: a counter and a 64-bit max.
    int old = t->cas_i, assumed;
    do {
        assumed = old;
        old = atomicCAS(&t->cas_i, assumed, assumed + 1);
    } while (old != assumed);
    unsigned long long o64 = t->cas_ull, a64;
    do {
        a64 = o64;
        unsigned long long want = a64 > (unsigned long long)(v + 5000) ? a64 : (unsigned long long)(v + 5000);
        o64 = atomicCAS(&t->cas_ull, a64, want);
    } while (o64 != a64);
    unsigned short o16 = t->cas_us, a16;
    do {
        a16 = o16;
        o16 = atomicCAS(&t->cas_us, a16, (unsigned short)(a16 + 1));
    } while (o16 != a16);
    atomicAdd(&t->add_h2, __halves2half2(__float2half(1.0f), __float2half(0.5f)));
    atomicAdd(&t->add_b2, __floats2bfloat162_rn(1.0f, 2.0f));
    atomicAdd(&t->add_h, __float2half(0.25f));
    atomicAdd(&t->add_b, __float2bfloat16(1.0f));
    atomicAdd_block(&t->block_scope, 1);
    atomicAdd_system(&t->system_scope, 2);
    cuda::atomic_ref<int, cuda::thread_scope_device> r(t->relaxed_ref);
    r.fetch_add(3, cuda::memory_order_relaxed);
    cuda::atomic_ref<int, cuda::thread_scope_device> q(t->acq_rel_ref);
    q.fetch_add(1, cuda::memory_order_acq_rel);
}

// Shared-memory atomics: a per-block histogram with 32- and 64-bit counters and float sums,
// reduced into global memory.
extern "C" __global__ void atomics_shared(const int *in, int n, unsigned *hist,
                                          unsigned long long *hist64, float *fsum,
                                          int *mins, int *maxs)
{
    __shared__ unsigned h[16];
    __shared__ unsigned long long h64[16];
    __shared__ float fs;
    __shared__ int mn, mx;
    if (threadIdx.x < 16) {
        h[threadIdx.x] = 0;
        h64[threadIdx.x] = 0;
    }
    if (threadIdx.x == 0) {
        fs = 0;
        mn = 1 << 30;
        mx = -(1 << 30);
    }
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int v = in[i];
        atomicAdd(&h[v & 15], 1u);
        atomicAdd(&h64[(v >> 4) & 15], 3ull);
        atomicAdd(&fs, 0.5f);
        atomicMin(&mn, v);
        atomicMax(&mx, v);
    }
    __syncthreads();
    if (threadIdx.x < 16) {
        atomicAdd(&hist[threadIdx.x], h[threadIdx.x]);
        atomicAdd(&hist64[threadIdx.x], h64[threadIdx.x]);
    }
    if (threadIdx.x == 0) {
        atomicAdd(fsum, fs);
        atomicMin(&mins[0], mn);
        atomicMax(&maxs[0], mx);
    }
}

// Message passing with release/acquire through cuda::atomic_ref: block 0 publishes data
// then a flag; every other block waits for the flag (acquire) and copies the data.
extern "C" __global__ void message_passing(int *data, int *flag, int *out, int n)
{
    if (blockIdx.x == 0) {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            data[i] = i * 3 + 1;
        __syncthreads();
        if (threadIdx.x == 0) {
            cuda::atomic_ref<int, cuda::thread_scope_device> f(*flag);
            f.store(1, cuda::memory_order_release);
        }
    } else {
        if (threadIdx.x == 0) {
            cuda::atomic_ref<int, cuda::thread_scope_device> f(*flag);
            while (f.load(cuda::memory_order_acquire) == 0)
                __nanosleep(100);
        }
        __syncthreads();
        __threadfence();
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            out[blockIdx.x * n + i] = data[i];
    }
}
