// One thread waiting for a long kernel does not hold up another thread's calls: thread A
// launches a kernel that spins until a flag in device memory is set and waits for it
// (cudaStreamSynchronize); thread B, once A is waiting, sets the flag with a copy on its own
// stream. If a waiting call held up the other thread's calls (a lock held across the wait),
// the copy would never be sent and the kernel never end: the alarm below ends the program
// with a FAIL verdict instead of hanging.
#include <atomic>
#include <csignal>
#include <thread>
#include <unistd.h>

#include "common.h"

__global__ void wait_for_flag(volatile int* flag, int* out) {
  long long spins = 0;
  while (*flag == 0 && spins < (1ll << 40)) spins++;
  *out = *flag;
}

static std::atomic<int> a_waiting{0};

static void on_alarm(int) {
  const char msg[] = "concurrent_wait: FAIL the copy of another thread did not get through while a thread waited (30 s)\n";
  ssize_t r = write(1, msg, sizeof msg - 1);
  (void)r;
  _exit(1);
}

int main() {
  TEST_NAME("concurrent_wait");
  signal(SIGALRM, on_alarm);
  alarm(30);
  int *flag, *out;
  CHECK(cudaMalloc(&flag, sizeof(int)));
  CHECK(cudaMalloc(&out, sizeof(int)));
  CHECK(cudaMemset(flag, 0, sizeof(int)));
  CHECK(cudaMemset(out, 0, sizeof(int)));
  cudaStream_t sa, sb;
  CHECK(cudaStreamCreateWithFlags(&sa, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&sb, cudaStreamNonBlocking));
  cudaError_t a_result = cudaErrorUnknown;
  std::thread a([&] {
    wait_for_flag<<<1, 1, 0, sa>>>(flag, out);
    a_waiting = 1;
    a_result = cudaStreamSynchronize(sa);
  });
  while (!a_waiting) std::this_thread::yield();
  usleep(200 * 1000);  // let A get into its wait (not needed for correctness)
  static int seven = 7;
  CHECK(cudaMemcpyAsync(flag, &seven, sizeof seven, cudaMemcpyHostToDevice, sb));
  CHECK(cudaStreamSynchronize(sb));
  a.join();
  CHECK(a_result);
  int h = 0;
  CHECK(cudaMemcpy(&h, out, sizeof h, cudaMemcpyDeviceToHost));
  REQUIRE(h == 7, "the kernel saw flag %d", h);
  CHECK(cudaStreamDestroy(sa));
  CHECK(cudaStreamDestroy(sb));
  alarm(0);
  return pass("a thread's copy got through while another waited for a kernel that needed it");
}
