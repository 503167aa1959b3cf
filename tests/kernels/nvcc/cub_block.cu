// CUB's block- and warp-level primitives inside our own kernels, and a single-pass scan with
// CUB's decoupled look-back (ScanTileState + TilePrefixCallbackOp), as DeviceScan runs it.
#include <cub/cub.cuh>

constexpr int THREADS = 128;
constexpr int ITEMS = 4;
constexpr int TILE = THREADS * ITEMS;

// Sorts each tile of TILE keys (with values) in shared memory.
extern "C" __global__ void block_radix_sort(const unsigned *keys_in, const int *vals_in,
                                            unsigned *keys_out, int *vals_out)
{
    using Sort = cub::BlockRadixSort<unsigned, THREADS, ITEMS, int>;
    __shared__ typename Sort::TempStorage tmp;
    unsigned k[ITEMS];
    int v[ITEMS];
    int base = blockIdx.x * TILE;
    cub::LoadDirectBlocked(threadIdx.x, keys_in + base, k);
    cub::LoadDirectBlocked(threadIdx.x, vals_in + base, v);
    Sort(tmp).Sort(k, v);
    cub::StoreDirectBlocked(threadIdx.x, keys_out + base, k);
    cub::StoreDirectBlocked(threadIdx.x, vals_out + base, v);
}

// Descending sort of floats, striped output.
extern "C" __global__ void block_radix_sort_float_desc(const float *in, float *out)
{
    using Sort = cub::BlockRadixSort<float, THREADS, ITEMS>;
    __shared__ typename Sort::TempStorage tmp;
    float k[ITEMS];
    int base = blockIdx.x * TILE;
    cub::LoadDirectStriped<THREADS>(threadIdx.x, in + base, k);
    Sort(tmp).SortDescendingBlockedToStriped(k);
    cub::StoreDirectStriped<THREADS>(threadIdx.x, out + base, k);
}

// Inclusive and exclusive block scans (warp-scans algorithm and raking), block reduce.
extern "C" __global__ void block_scan_reduce(const int *in, int *incl, int *excl, int *raking,
                                             int *sums, float *fmax)
{
    using ScanW = cub::BlockScan<int, THREADS, cub::BLOCK_SCAN_WARP_SCANS>;
    using ScanR = cub::BlockScan<int, THREADS, cub::BLOCK_SCAN_RAKING>;
    using Red = cub::BlockReduce<int, THREADS>;
    using RedF = cub::BlockReduce<float, THREADS, cub::BLOCK_REDUCE_RAKING_COMMUTATIVE_ONLY>;
    __shared__ union {
        typename ScanW::TempStorage w;
        typename ScanR::TempStorage r;
        typename Red::TempStorage red;
        typename RedF::TempStorage redf;
    } tmp;
    int x[ITEMS];
    int base = blockIdx.x * TILE;
    cub::LoadDirectBlocked(threadIdx.x, in + base, x);
    int y[ITEMS];
    ScanW(tmp.w).InclusiveSum(x, y);
    cub::StoreDirectBlocked(threadIdx.x, incl + base, y);
    __syncthreads();
    int agg;
    ScanW(tmp.w).ExclusiveSum(x, y, agg);
    cub::StoreDirectBlocked(threadIdx.x, excl + base, y);
    __syncthreads();
    ScanR(tmp.r).ExclusiveScan(x, y, 0, cuda::maximum<>());
    cub::StoreDirectBlocked(threadIdx.x, raking + base, y);
    __syncthreads();
    int s = Red(tmp.red).Sum(x);
    __syncthreads();
    float f = RedF(tmp.redf).Reduce((float)x[0] * 0.5f, cuda::maximum<>());
    if (threadIdx.x == 0) {
        sums[blockIdx.x * 2] = s;
        sums[blockIdx.x * 2 + 1] = agg;
        fmax[blockIdx.x] = f;
    }
}

// Warp-level reduce and scan, full and logical sub-warps of 8.
extern "C" __global__ void warp_reduce_scan(const int *in, int *red, int *scan, int *red8, int *mx)
{
    using WR = cub::WarpReduce<int>;
    using WS = cub::WarpScan<int>;
    using WR8 = cub::WarpReduce<int, 8>;
    __shared__ typename WR::TempStorage wr[THREADS / 32];
    __shared__ typename WS::TempStorage ws[THREADS / 32];
    __shared__ typename WR8::TempStorage wr8[THREADS / 8];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = in[i];
    int w = threadIdx.x / 32;
    int s = WR(wr[w]).Sum(v);
    int m = WR(wr[w]).Reduce(v, cuda::maximum<>());
    int sc;
    WS(ws[w]).InclusiveSum(v, sc);
    int s8 = WR8(wr8[threadIdx.x / 8]).Sum(v);
    scan[i] = sc;
    if (threadIdx.x % 32 == 0) {
        red[i / 32] = s;
        mx[i / 32] = m;
    }
    if (threadIdx.x % 8 == 0)
        red8[i / 8] = s8;
}

// Single-pass inclusive prefix sum across the whole grid with decoupled look-back.
using TileState = cub::ScanTileState<int>;

extern "C" __global__ void lookback_init(TileState state, int num_tiles)
{
    state.InitializeStatus(num_tiles);
}

extern "C" __global__ void lookback_scan(const int *in, int *out, TileState state)
{
    using Scan = cub::BlockScan<int, THREADS, cub::BLOCK_SCAN_WARP_SCANS>;
    using Prefix = cub::TilePrefixCallbackOp<int, cuda::std::plus<>, TileState>;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ typename Prefix::TempStorage prefix_tmp;
    int tile = blockIdx.x;
    int x[ITEMS];
    cub::LoadDirectBlocked(threadIdx.x, in + tile * TILE, x);
    int y[ITEMS];
    if (tile == 0) {
        int agg;
        Scan(scan_tmp).InclusiveSum(x, y, agg);
        if (threadIdx.x == 0)
            state.SetInclusive(0, agg);
    } else {
        Prefix prefix(state, prefix_tmp, cuda::std::plus<>(), tile);
        Scan(scan_tmp).InclusiveScan(x, y, cuda::std::plus<>(), prefix);
    }
    cub::StoreDirectBlocked(threadIdx.x, out + tile * TILE, y);
}

// Block histogram (atomic algorithm) and block load/store with vectorisation and transposes.
extern "C" __global__ void block_histogram_load(const unsigned char *in, unsigned *hist,
                                                const int *vin, int *vout)
{
    using Hist = cub::BlockHistogram<unsigned char, THREADS, ITEMS, 256, cub::BLOCK_HISTO_ATOMIC>;
    using Load = cub::BlockLoad<int, THREADS, ITEMS, cub::BLOCK_LOAD_TRANSPOSE>;
    using Store = cub::BlockStore<int, THREADS, ITEMS, cub::BLOCK_STORE_WARP_TRANSPOSE>;
    __shared__ unsigned smem_hist[256];
    __shared__ union {
        typename Hist::TempStorage h;
        typename Load::TempStorage l;
        typename Store::TempStorage s;
    } tmp;
    unsigned char items[ITEMS];
    cub::LoadDirectBlocked(threadIdx.x, in + blockIdx.x * TILE, items);
    Hist(tmp.h).Histogram(items, smem_hist);
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += THREADS)
        atomicAdd(&hist[b], smem_hist[b]);
    int v[ITEMS];
    __syncthreads();
    Load(tmp.l).Load(vin + blockIdx.x * TILE, v);
    for (int k = 0; k < ITEMS; ++k)
        v[k] = v[k] * 2 + 1;
    __syncthreads();
    Store(tmp.s).Store(vout + blockIdx.x * TILE, v);
}
