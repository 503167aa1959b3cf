// Thrust (CCCL) on the device: sort, sort_by_key, inclusive and exclusive scan, reduce,
// transform_reduce, count_if. These run CUB's kernels (radix sort, decoupled look-back scan).
#include "common.h"
#include <thrust/count.h>
#include <thrust/device_vector.h>
#include <thrust/functional.h>
#include <thrust/host_vector.h>
#include <thrust/reduce.h>
#include <thrust/scan.h>
#include <thrust/sort.h>
#include <thrust/transform_reduce.h>
#include <algorithm>
#include <numeric>
#include <vector>

struct square {
  __host__ __device__ long long operator()(int x) const { return (long long)x * x; }
};
struct is_odd {
  __host__ __device__ bool operator()(int x) const { return x & 1; }
};

int main() {
  TEST_NAME("thrust");
  const int n = 5000;
  std::vector<int> h(n);
  unsigned s = 12345;
  for (int i = 0; i < n; i++) {
    s = s * 1103515245u + 12345u;
    h[i] = (int)(s >> 8) % 100000 - 50000;
  }
  try {
    thrust::device_vector<int> d(h.begin(), h.end());
    long long sum = thrust::reduce(d.begin(), d.end(), 0LL, thrust::plus<long long>());
    long long want_sum = std::accumulate(h.begin(), h.end(), 0LL);
    REQUIRE(sum == want_sum, "reduce %lld != %lld", sum, want_sum);
    long long sq = thrust::transform_reduce(d.begin(), d.end(), square(), 0LL, thrust::plus<long long>());
    long long want_sq = 0;
    for (int v : h) want_sq += (long long)v * v;
    REQUIRE(sq == want_sq, "transform_reduce %lld != %lld", sq, want_sq);
    long long odd = thrust::count_if(d.begin(), d.end(), is_odd());
    REQUIRE(odd == std::count_if(h.begin(), h.end(), [](int x) { return x & 1; }), "count_if %lld", odd);

    thrust::device_vector<int> scanned(n);
    thrust::inclusive_scan(d.begin(), d.end(), scanned.begin());
    thrust::host_vector<int> hs = scanned;
    std::vector<int> want(n);
    std::partial_sum(h.begin(), h.end(), want.begin());
    for (int i = 0; i < n; i++) REQUIRE(hs[i] == want[i], "inclusive_scan[%d] %d != %d", i, (int)hs[i], want[i]);
    thrust::exclusive_scan(d.begin(), d.end(), scanned.begin(), 7);
    hs = scanned;
    REQUIRE(hs[0] == 7 && hs[n - 1] == 7 + want[n - 2], "exclusive_scan ends %d %d", (int)hs[0], (int)hs[n - 1]);

    thrust::device_vector<int> keys = d;
    thrust::device_vector<int> vals(n);
    thrust::sequence(vals.begin(), vals.end());
    thrust::sort_by_key(keys.begin(), keys.end(), vals.begin());
    thrust::host_vector<int> hk = keys, hv = vals;
    for (int i = 0; i < n; i++) {
      REQUIRE(i == 0 || hk[i - 1] <= hk[i], "sort_by_key order at %d", i);
      REQUIRE(h[hv[i]] == hk[i], "sort_by_key value at %d", i);
    }
    thrust::sort(d.begin(), d.end(), thrust::greater<int>());
    thrust::host_vector<int> hd = d;
    std::vector<int> sorted = h;
    std::sort(sorted.begin(), sorted.end(), std::greater<int>());
    for (int i = 0; i < n; i++) REQUIRE(hd[i] == sorted[i], "sort desc [%d] %d != %d", i, (int)hd[i], sorted[i]);
  } catch (const std::exception& e) {
    printf("thrust: FAIL exception: %s\n", e.what());
    return 1;
  }
  return pass("reduce, transform_reduce, count_if, inclusive/exclusive scan, sort, sort_by_key on 5000 ints");
}
