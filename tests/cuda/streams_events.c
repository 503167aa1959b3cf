/* Asynchronous copies and memsets on two streams, ordered by events, and timed. */
#include "common.h"

int main(void)
{
	CUcontext ctx = setup();
	CUstream s[2];
	CUevent start, mid, stop;
	size_t n = 1u << 20;
	unsigned char *h[2], *back[2];
	CUdeviceptr d[2];

	CHECK(cuStreamCreate(&s[0], CU_STREAM_NON_BLOCKING));
	CHECK(cuStreamCreate(&s[1], CU_STREAM_NON_BLOCKING));
	CHECK(cuEventCreate(&start, CU_EVENT_DEFAULT));
	CHECK(cuEventCreate(&mid, CU_EVENT_DEFAULT));
	CHECK(cuEventCreate(&stop, CU_EVENT_DEFAULT));
	for (int i = 0; i < 2; i++) {
		CHECK(cuMemAllocHost((void **)&h[i], n));
		back[i] = malloc(n);
		for (size_t j = 0; j < n; j++)
			h[i][j] = (unsigned char)(rnd() ^ i);
		CHECK(cuMemAlloc(&d[i], n));
	}
	CHECK(cuEventRecord(start, s[0]));
	for (int i = 0; i < 2; i++) {
		CHECK(cuMemcpyHtoDAsync(d[i], h[i], n, s[i]));
		CHECK(cuMemsetD32Async(d[i], 0x01020304u + i, 16, s[i]));
	}
	CHECK(cuEventRecord(mid, s[1]));
	/* Stream 0 waits for stream 1's work before copying device 1 into device 0's tail. */
	CHECK(cuStreamWaitEvent(s[0], mid, 0));
	CHECK(cuMemcpyDtoDAsync(d[0] + n / 2, d[1] + n / 2, n / 2, s[0]));
	CHECK(cuEventRecord(stop, s[0]));
	for (int i = 0; i < 2; i++)
		CHECK(cuMemcpyDtoHAsync(back[i], d[i], n, s[i]));
	CHECK(cuEventSynchronize(stop));
	CHECK(cuStreamSynchronize(s[0]));
	CHECK(cuStreamSynchronize(s[1]));
	expect("stream-query-done", cuStreamQuery(s[0]) == CUDA_SUCCESS);
	expect("event-query-done", cuEventQuery(stop) == CUDA_SUCCESS);
	float ms = -1;
	CHECK(cuEventElapsedTime(&ms, start, stop));
	printf("elapsed %.3f ms\n", ms);
	expect("elapsed-time-sane", ms >= 0 && ms < 60000);
	unsigned w0, w1;
	memcpy(&w0, back[0], 4);
	memcpy(&w1, back[1], 4);
	expect("memset-heads", w0 == 0x01020304u && w1 == 0x01020305u);
	expect("stream0-own-data", memcmp(back[0] + 64, h[0] + 64, n / 2 - 64) == 0);
	expect("stream0-tail-from-stream1", memcmp(back[0] + n / 2, h[1] + n / 2, n / 2) == 0);
	expect("stream1-data", memcmp(back[1] + 64, h[1] + 64, n - 64) == 0);

	/* An asynchronous error surfaces at the next synchronisation, as in CUDA. */
	CHECK(cuMemsetD32Async(d[1] + n - 4, 0, 64, s[1]));
	CUresult r = cuStreamSynchronize(s[1]);
	expect("async-error-at-sync", r != CUDA_SUCCESS);
	expect("reported-once", cuStreamSynchronize(s[1]) == CUDA_SUCCESS);

	CHECK(cuEventDestroy(start));
	CHECK(cuEventDestroy(mid));
	CHECK(cuEventDestroy(stop));
	CHECK(cuStreamDestroy(s[0]));
	CHECK(cuStreamDestroy(s[1]));
	for (int i = 0; i < 2; i++) {
		CHECK(cuMemFree(d[i]));
		CHECK(cuMemFreeHost(h[i]));
		free(back[i]);
	}
	CHECK(cuCtxDestroy(ctx));
	return finish("streams_events");
}
