// CUB's device-wide algorithms called directly: DeviceRadixSort (keys and pairs),
// DeviceScan (inclusive and exclusive sums), DeviceReduce (sum, max, arg-min).
#include <cub/cub.cuh>
#include <cstdio>
#include <vector>

int main()
{
    const int n = 50000;
    std::vector<unsigned> keys(n);
    std::vector<int> vals(n);
    for (int i = 0; i < n; ++i) {
        keys[i] = (unsigned)(i * 2654435761u);
        vals[i] = i;
    }
    unsigned *dk, *dk2;
    int *dv, *dv2, *dout;
    cudaMalloc(&dk, n * 4);
    cudaMalloc(&dk2, n * 4);
    cudaMalloc(&dv, n * 4);
    cudaMalloc(&dv2, n * 4);
    cudaMalloc(&dout, n * 4);
    cudaMemcpy(dk, keys.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dv, vals.data(), n * 4, cudaMemcpyHostToDevice);
    void *tmp = nullptr;
    size_t tmp_bytes = 0, b = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, b, dk, dk2, dv, dv2, n);
    tmp_bytes = b;
    cub::DeviceRadixSort::SortKeys(nullptr, b, dk, dk2, n);
    tmp_bytes = b > tmp_bytes ? b : tmp_bytes;
    cub::DeviceScan::InclusiveSum(nullptr, b, dv, dout, n);
    tmp_bytes = b > tmp_bytes ? b : tmp_bytes;
    cub::DeviceScan::ExclusiveSum(nullptr, b, dv, dout, n);
    tmp_bytes = b > tmp_bytes ? b : tmp_bytes;
    cub::DeviceReduce::Sum(nullptr, b, dv, dout, n);
    tmp_bytes = b > tmp_bytes ? b : tmp_bytes;
    cudaMalloc(&tmp, tmp_bytes);
    cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, dk, dk2, dv, dv2, n);
    cub::DeviceRadixSort::SortKeys(tmp, tmp_bytes, dk, dk2, n);
    cub::DeviceScan::InclusiveSum(tmp, tmp_bytes, dv, dout, n);
    cub::DeviceScan::ExclusiveSum(tmp, tmp_bytes, dv, dout, n);
    cub::DeviceReduce::Sum(tmp, tmp_bytes, dv, dout, n);
    cub::DeviceReduce::Max(tmp, tmp_bytes, dv, dout, n);
    int r = 0;
    cudaMemcpy(&r, dout, 4, cudaMemcpyDeviceToHost);
    printf("max %d\n", r);
    return 0;
}
