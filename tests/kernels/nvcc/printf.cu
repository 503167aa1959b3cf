// Device-side printf in every conversion CUDA supports, and assert.
#include <cstdio>
#include <cassert>

extern "C" __global__ void print_basic(int base)
{
    printf("block %d thread %d value %d\n", blockIdx.x, threadIdx.x, base + (int)threadIdx.x);
}

extern "C" __global__ void print_formats(const char *s, double d, long long ll, unsigned long long ull)
{
    printf("[%5d|%-5d|%05d|%+d|% d|%i]\n", 42, 42, 42, 42, 42, -7);
    printf("[%u|%x|%X|%#x|%o|%#o|%8.3x]\n", 4000000000u, 0xbeefu, 0xbeefu, 255u, 8u, 8u, 0xabu);
    printf("[%f|%.2f|%10.3f|%-10.1f|%e|%.3E|%g|%G|%g]\n", d, d, d, d, d, d, d, 1e-10, 100000.0);
    printf("[%c%c%c|%s|%.3s|%8s|%-8s|]\n", 'a', 'b', 'c', s, s, s, s);
    printf("[%ld|%lld|%llu|%lx|%hd|%hhd]\n", (long)ll, ll, ull, (unsigned long)ull, (short)ll, (char)ll);
    printf("[%p|%%|%5.1f%%]\n", (void *)0x1234, 99.5);
    printf("[%f|%f|%f|%e]\n", 1.0 / 0.0, -1.0 / 0.0, 0.0 / 0.0, 0.0);
    printf("[%*d|%-*d|%.*f]\n", 6, 7, 4, 8, 2, 3.14159);
    printf("no args\n");
}

extern "C" __global__ void print_loop(int n)
{
    for (int i = 0; i < n; ++i)
        printf("thread %d line %d of %d with some padding to make it long\n", threadIdx.x, i, n);
}

extern "C" __global__ void assert_positive(const int *v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        assert(v[i] > 0);
}

extern "C" __global__ void trap_now()
{
    __trap();
}
