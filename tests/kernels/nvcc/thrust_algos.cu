// A thrust program as users write it: sort, scan and reduce of int and float through
// thrust::device_vector (each call runs CUB's device-wide kernels: radix sort onesweep,
// decoupled look-back scan, two-pass reduce). Its PTX is what the executor must load whole.
#include <thrust/device_vector.h>
#include <thrust/host_vector.h>
#include <thrust/reduce.h>
#include <thrust/scan.h>
#include <thrust/sort.h>
#include <thrust/functional.h>
#include <cstdio>

int main()
{
    const int n = 100000;
    thrust::host_vector<int> hi(n);
    thrust::host_vector<float> hf(n);
    for (int i = 0; i < n; ++i) {
        hi[i] = (i * 7919) % 10007 - 5000;
        hf[i] = (float)((i * 104729) % 1000) / 10.0f;
    }
    thrust::device_vector<int> di = hi;
    thrust::device_vector<float> df = hf;
    long long sum = thrust::reduce(di.begin(), di.end(), 0LL);
    float fsum = thrust::reduce(df.begin(), df.end(), 0.0f);
    int imax = thrust::reduce(di.begin(), di.end(), -1 << 30, thrust::maximum<int>());
    thrust::sort(di.begin(), di.end());
    thrust::sort(df.begin(), df.end(), thrust::greater<float>());
    thrust::device_vector<int> si(n);
    thrust::inclusive_scan(di.begin(), di.end(), si.begin());
    thrust::device_vector<float> sf(n);
    thrust::exclusive_scan(df.begin(), df.end(), sf.begin(), 0.0f);
    printf("sum %lld fsum %f max %d first %d last %d scan %d %f\n", sum, fsum, imax,
           (int)di[0], (int)di[n - 1], (int)si[n - 1], (float)sf[n - 1]);
    return 0;
}
