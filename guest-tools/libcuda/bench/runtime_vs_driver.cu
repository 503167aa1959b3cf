// The CUDA runtime against the driver API on netgpu, in one run: kernel launches per second
// and the latency of a small synchronous copy each way, through cudart (<<<>>>, cudaMemcpy)
// and through the driver API (cuLaunchKernel on the same kernel, cuMemcpyHtoD/DtoH), with the
// ratios. With netgpu's libcuda it also reports the round trips each phase made per operation
// (netgpu_stats): a launch must make none through either API.
//
// Build: nvcc -O2 -o runtime_vs_driver runtime_vs_driver.cu -lcuda -ldl
// Run:   runtime_vs_driver [launches] [copies]   (see run.sh)
#include <cuda.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__global__ void nop(int x)
{
	if (x == 0x7fffffff)
		asm volatile("trap;");
}

#define RT(call)                                                                                 \
	do {                                                                                     \
		cudaError_t e_ = (call);                                                         \
		if (e_ != cudaSuccess) {                                                         \
			fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call,             \
				cudaGetErrorName(e_));                                           \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)
#define DRV(call)                                                                                \
	do {                                                                                     \
		CUresult r_ = (call);                                                            \
		if (r_ != CUDA_SUCCESS) {                                                        \
			const char *n_ = "?";                                                    \
			cuGetErrorName(r_, &n_);                                                 \
			fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, n_);        \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef size_t (*stats_fn)(unsigned long long *, size_t);
static stats_fn stats;
static unsigned long long trips(void)
{
	unsigned long long s[2] = { 0, 0 };
	if (stats)
		stats(s, 2);
	return s[0];
}

struct result {
	double rate;   // operations per second (launches: issued; copies: completed)
	double done;   // launches: completed per second, up to the synchronisation
	double trips;  // round trips per operation (-1: unknown)
};

static struct result finish(double t0, unsigned long long r0, long n)
{
	struct result r;
	r.rate = n / (now() - t0);
	r.done = r.rate;
	r.trips = stats ? (double)(trips() - r0) / n : -1;
	return r;
}

// Launches are issued in batches small enough for the socket buffers (a longer run would
// measure how fast the executor drains them): the issue rate counts only the time spent in
// the launch calls, the completed rate includes waiting for each batch to finish.
enum { BATCH = 500 };

static struct result launches(CUfunction f, long n, int runtime)
{
	struct result r = { 0, 0, 0 };
	double issuing = 0, t0 = now();
	unsigned long long trips_in_calls = 0;
	for (long done = 0; done < n; done += BATCH) {
		double b0 = now();
		unsigned long long r0 = trips();
		for (long i = 0; i < BATCH; i++) {
			if (runtime) {
				nop<<<1, 1>>>((int)i);
			} else {
				int x = (int)i;
				void *args[] = { &x };
				DRV(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
			}
		}
		trips_in_calls += trips() - r0;
		issuing += now() - b0;
		if (runtime) {
			RT(cudaGetLastError());
			RT(cudaDeviceSynchronize());
		} else {
			DRV(cuCtxSynchronize());
		}
	}
	long total = (n + BATCH - 1) / BATCH * BATCH;
	r.rate = total / issuing;
	r.done = total / (now() - t0);
	r.trips = stats ? (double)trips_in_calls / total : -1;
	return r;
}

static struct result rt_launches(long n)
{
	return launches(NULL, n, 1);
}

static struct result drv_launches(CUfunction f, long n)
{
	return launches(f, n, 0);
}

static struct result rt_copies(void *d, void *h, size_t bytes, long n, int to_device)
{
	double t0 = now();
	unsigned long long r0 = trips();
	for (long i = 0; i < n; i++) {
		if (to_device)
			RT(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
		else
			RT(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
	}
	return finish(t0, r0, n);
}

static struct result drv_copies(CUdeviceptr d, void *h, size_t bytes, long n, int to_device)
{
	double t0 = now();
	unsigned long long r0 = trips();
	for (long i = 0; i < n; i++) {
		if (to_device)
			DRV(cuMemcpyHtoD(d, h, bytes));
		else
			DRV(cuMemcpyDtoH(h, d, bytes));
	}
	return finish(t0, r0, n);
}

static void report(const char *what, struct result rt, struct result drv)
{
	printf("%-26s runtime %10.0f/s  driver %10.0f/s  ratio %.2fx", what, rt.rate, drv.rate,
	       rt.rate / drv.rate);
	if (rt.trips >= 0)
		printf("  round trips/op: runtime %.3f driver %.3f", rt.trips, drv.trips);
	printf("\n");
}

static struct result best(struct result a, struct result b)
{
	return a.rate >= b.rate ? a : b;
}

int main(int argc, char **argv)
{
	long launches = argc > 1 ? atol(argv[1]) : 100000;
	long copies = argc > 2 ? atol(argv[2]) : 2000;
	const size_t bytes = 64;
	stats = (stats_fn)dlsym(RTLD_DEFAULT, "netgpu_stats");

	RT(cudaSetDevice(0));
	RT(cudaFree(0));  // creates the primary context, current on this thread
	// The driver path loads the same kernel as PTX, as a driver-API program does.
	static const char ptx[] = ".version 7.0\n.target sm_52\n.address_size 64\n"
				  ".visible .entry nop(.param .u32 x)\n{\n\tret;\n}\n";
	CUmodule mod;
	CUfunction f;
	DRV(cuModuleLoadData(&mod, ptx));
	DRV(cuModuleGetFunction(&f, mod, "nop"));

	void *d;
	RT(cudaMalloc(&d, bytes));
	char h[64] = { 1 };

	// Warm up both paths, then alternate them (best of five rounds each: the machine may be
	// shared).
	rt_launches(1000);
	drv_launches(f, 1000);
	struct result rl = { 0, 0, 0 }, dl = rl, rh = rl, dh = rl, rd = rl, dd = rl;
	for (int round = 0; round < 5; round++) {
		rl = best(rl, rt_launches(launches));
		dl = best(dl, drv_launches(f, launches));
		rh = best(rh, rt_copies(d, h, bytes, copies, 1));
		dh = best(dh, drv_copies((CUdeviceptr)d, h, bytes, copies, 1));
		rd = best(rd, rt_copies(d, h, bytes, copies, 0));
		dd = best(dd, drv_copies((CUdeviceptr)d, h, bytes, copies, 0));
	}
	printf("runtime_vs_driver: %ld launches, %ld copies of %zu bytes, best of 5\n", launches,
	       copies, bytes);
	report("launches issued", rl, dl);
	struct result rc = { rl.done, 0, -1 }, dc = { dl.done, 0, -1 };
	report("launches completed", rc, dc);
	report("sync copy HtoD 64 B", rh, dh);
	report("sync copy DtoH 64 B", rd, dd);
	RT(cudaFree(d));
	return 0;
}
