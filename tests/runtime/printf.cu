// Device-side printf: output of every thread reaches the program's stdout by the next
// synchronisation, with integer, float, string and pointer-sized arguments. The runner
// checks the lines in printf.expect.
#include "common.h"

__global__ void hello(int base, float f) {
  printf("printf: block %d thread %d value %d f %.2f %s\n", blockIdx.x, threadIdx.x,
         base + (int)(blockIdx.x * blockDim.x + threadIdx.x), f * threadIdx.x, "ok");
}

__global__ void wide(long long v, unsigned long long u, double d) {
  printf("printf: wide %lld %llu %.3f %c%c\n", v, u, d, 'n', 'g');
}

int main() {
  TEST_NAME("printf");
  hello<<<2, 4>>>(100, 1.5f);
  CHECK_LAUNCH();
  wide<<<1, 1>>>(-1234567890123LL, 18000000000000000000ULL, 3.14159);
  CHECK_LAUNCH();
  fflush(stdout);
  return pass("kernel printf (checked by the runner against printf.expect)");
}
