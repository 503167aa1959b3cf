// Cooperative groups: thread_block_tile reductions and a grid-wide barrier under a
// cooperative launch.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cstdio>
namespace cg = cooperative_groups;

// Per-tile sums with cg::reduce over 32- and 16-thread tiles, then a block sum.
extern "C" __global__ void tile_reduce(const int *in, int *tile32_out, int *tile16_out,
                                       int *block_out, int n)
{
    cg::thread_block block = cg::this_thread_block();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = i < n ? in[i] : 0;
    cg::thread_block_tile<32> t32 = cg::tiled_partition<32>(block);
    cg::thread_block_tile<16> t16 = cg::tiled_partition<16>(block);
    int s32 = cg::reduce(t32, v, cg::plus<int>());
    int s16 = cg::reduce(t16, v, cg::plus<int>());
    int m16 = t16.shfl_down(v, 1) + t16.shfl_xor(v, 2);
    if (t32.thread_rank() == 0)
        tile32_out[i / 32] = s32;
    if (t16.thread_rank() == 0)
        tile16_out[i / 16] = s16 + 0 * m16;
    __shared__ int partial[32];
    if (t32.thread_rank() == 0)
        partial[t32.meta_group_rank()] = s32;
    block.sync();
    if (threadIdx.x == 0) {
        int s = 0;
        for (unsigned w = 0; w < t32.meta_group_size(); ++w)
            s += partial[w];
        block_out[blockIdx.x] = s;
    }
}

// Tiled shuffle exchange and ballots/any/all on a tile.
extern "C" __global__ void tile_votes(const int *in, unsigned *ballots, int *flags)
{
    cg::thread_block_tile<32> t = cg::tiled_partition<32>(cg::this_thread_block());
    int v = in[blockIdx.x * blockDim.x + threadIdx.x];
    unsigned b = t.ballot(v > 0);
    bool any = t.any(v > 100);
    bool all = t.all(v > -100);
    if (t.thread_rank() == 0) {
        int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
        ballots[w] = b;
        flags[w] = (any ? 1 : 0) | (all ? 2 : 0);
    }
}

// Two phases separated by grid.sync(): every block writes its partial sum, then block 0
// sums all partials; then every thread reads the total.
extern "C" __global__ void grid_sum(const int *in, int *partials, int *total, int *out, int n)
{
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    __shared__ int s[1024];
    int acc = 0;
    for (int i = grid.thread_rank(); i < n; i += grid.size())
        acc += in[i];
    s[threadIdx.x] = acc;
    block.sync();
    for (int k = blockDim.x / 2; k > 0; k /= 2) {
        if (threadIdx.x < k)
            s[threadIdx.x] += s[threadIdx.x + k];
        block.sync();
    }
    if (threadIdx.x == 0)
        partials[blockIdx.x] = s[0];
    grid.sync();
    if (grid.thread_rank() == 0) {
        int t = 0;
        for (unsigned b = 0; b < gridDim.x; ++b)
            t += partials[b];
        *total = t;
    }
    grid.sync();
    out[grid.thread_rank()] = *total;
}

int main()
{
    int *in, *p, *t, *o;
    cudaMalloc(&in, 4096 * 4);
    cudaMalloc(&p, 64 * 4);
    cudaMalloc(&t, 4);
    cudaMalloc(&o, 4096 * 4);
    int n = 4096;
    void *args[] = {&in, &p, &t, &o, &n};
    cudaLaunchCooperativeKernel((void *)grid_sum, dim3(4), dim3(256), args, 0, 0);
    cudaDeviceSynchronize();
    printf("done\n");
    return 0;
}
