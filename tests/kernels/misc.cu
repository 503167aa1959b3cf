// Transpose, row softmax, a kernel calling a non-inlined device function, an integer hash.
#define TILE 32
extern "C" __global__ void transpose(const float *in, float *out, int rows, int cols)
{
    __shared__ float tile[TILE][TILE + 1];
    int x = blockIdx.x * TILE + threadIdx.x;
    int y = blockIdx.y * TILE + threadIdx.y;
    if (x < cols && y < rows)
        tile[threadIdx.y][threadIdx.x] = in[y * cols + x];
    __syncthreads();
    x = blockIdx.y * TILE + threadIdx.x;
    y = blockIdx.x * TILE + threadIdx.y;
    if (x < rows && y < cols)
        out[y * rows + x] = tile[threadIdx.x][threadIdx.y];
}

extern "C" __global__ void softmax_rows(const float *in, float *out, int rows, int cols)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows)
        return;
    const float *x = in + r * cols;
    float m = x[0];
    for (int j = 1; j < cols; ++j)
        m = fmaxf(m, x[j]);
    float sum = 0.0f;
    for (int j = 0; j < cols; ++j)
        sum += expf(x[j] - m);
    for (int j = 0; j < cols; ++j)
        out[r * cols + j] = expf(x[j] - m) / sum;
}

__device__ __noinline__ int mix(int a, int b)
{
    return (a * 31 + b) ^ (a >> 3);
}

extern "C" __global__ void call_func(const int *a, const int *b, int *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = mix(a[i], b[i]);
}

extern "C" __global__ void hash_u32(const unsigned *in, unsigned *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        unsigned x = in[i];
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        out[i] = x;
    }
}
