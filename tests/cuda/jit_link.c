/* The JIT linker (cuLink*, as Numba uses it): PTX added from memory and from a file, the log
 * buffers and wall time written back, the linked image loaded with cuModuleLoadDataEx and
 * launched, a linked image added back to a new link, and bad inputs refused with a log. */
#include "common.h"

static int run_vector_add(CUmodule mod)
{
	enum { N = 1000 };
	CUfunction f;
	CHECK(cuModuleGetFunction(&f, mod, "vector_add"));
	float a[N], b[N], c[N];
	for (int i = 0; i < N; i++) {
		a[i] = (float)i;
		b[i] = (float)(2 * i);
	}
	CUdeviceptr da, db, dc;
	CHECK(cuMemAlloc(&da, sizeof(a)));
	CHECK(cuMemAlloc(&db, sizeof(b)));
	CHECK(cuMemAlloc(&dc, sizeof(c)));
	CHECK(cuMemcpyHtoD(da, a, sizeof(a)));
	CHECK(cuMemcpyHtoD(db, b, sizeof(b)));
	int n = N;
	void *args[] = { &da, &db, &dc, &n };
	CHECK(cuLaunchKernel(f, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, args, NULL));
	CHECK(cuMemcpyDtoH(c, dc, sizeof(c)));
	int wrong = 0;
	for (int i = 0; i < N; i++)
		wrong += c[i] != 3.0f * i;
	CHECK(cuMemFree(da));
	CHECK(cuMemFree(db));
	CHECK(cuMemFree(dc));
	return wrong == 0;
}

int main(void)
{
	CUcontext ctx = setup();
	char *ptx = load_ptx("vector_add.ptx");
	char info[256], error[256];
	float wall = -1.0f;
	CUjit_option opts[] = { CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
				CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
				CU_JIT_WALL_TIME, CU_JIT_TARGET_FROM_CUCONTEXT };
	void *vals[] = { info, (void *)sizeof(info), error, (void *)sizeof(error), NULL, NULL };
	memset(info, 'x', sizeof(info));
	memset(error, 'x', sizeof(error));

	CUlinkState link;
	CHECK(cuLinkCreate(6, opts, vals, &link));
	CHECK(cuLinkAddData(link, CU_JIT_INPUT_PTX, ptx, strlen(ptx) + 1, "vector_add.ptx", 0, NULL,
			    NULL));
	void *image;
	size_t size;
	CHECK(cuLinkComplete(link, &image, &size));
	memcpy(&wall, &vals[4], sizeof(wall));
	expect("complete-gives-an-image", image != NULL && size > 0);
	expect("info-log-written", strlen(info) < sizeof(info) && (size_t)vals[1] == strlen(info));
	expect("error-log-empty", error[0] == 0 && (size_t)vals[3] == 0);
	expect("wall-time-written", wall >= 0.0f);

	CUmodule mod;
	CHECK(cuModuleLoadDataEx(&mod, image, 0, NULL, NULL));
	expect("linked-ptx-runs", run_vector_add(mod));
	CHECK(cuModuleUnload(mod));

	/* The linked image, added back as a cubin (how Numba reuses cached code). */
	void *copy = malloc(size);
	memcpy(copy, image, size);
	CHECK(cuLinkDestroy(link));
	expect("destroyed-state-is-invalid",
	       cuLinkComplete(link, &image, &size) == CUDA_ERROR_INVALID_HANDLE);
	CHECK(cuLinkCreate(0, NULL, NULL, &link));
	CHECK(cuLinkAddData(link, CU_JIT_INPUT_CUBIN, copy, size, "cached", 0, NULL, NULL));
	CHECK(cuLinkComplete(link, &image, &size));
	CHECK(cuModuleLoadData(&mod, image));
	expect("relinked-image-runs", run_vector_add(mod));
	CHECK(cuModuleUnload(mod));
	CHECK(cuLinkDestroy(link));

	/* From a file. */
	const char *dir = getenv("NETGPU_KERNELS");
	char path[4096];
	snprintf(path, sizeof(path), "%s/vector_add.ptx", dir ? dir : "tests/kernels");
	CHECK(cuLinkCreate(6, opts, vals, &link));
	CHECK(cuLinkAddFile(link, CU_JIT_INPUT_PTX, path, 0, NULL, NULL));
	CHECK(cuLinkComplete(link, &image, &size));
	CHECK(cuModuleLoadData(&mod, image));
	expect("file-input-runs", run_vector_add(mod));
	CHECK(cuModuleUnload(mod));
	expect("missing-file",
	       cuLinkAddFile(link, CU_JIT_INPUT_PTX, "/nonexistent.ptx", 0, NULL, NULL) ==
		       CUDA_ERROR_FILE_NOT_FOUND);
	CHECK(cuLinkDestroy(link));

	/* Bad inputs: refused with the reason in the error log. The size slots are in/out: the
	 * earlier links wrote the lengths there. */
	vals[1] = (void *)sizeof(info);
	vals[3] = (void *)sizeof(error);
	CHECK(cuLinkCreate(6, opts, vals, &link));
	unsigned char junk[64];
	memset(junk, 0xfe, sizeof(junk));
	expect("junk-refused", cuLinkAddData(link, CU_JIT_INPUT_CUBIN, junk, sizeof(junk), "junk",
					     0, NULL, NULL) == CUDA_ERROR_INVALID_IMAGE);
	expect("junk-error-logged", strstr(error, "junk") != NULL && (size_t)vals[3] > 0);
	expect("nvvm-not-supported", cuLinkAddData(link, CU_JIT_INPUT_NVVM, ptx, strlen(ptx), "ir",
						   0, NULL, NULL) == CUDA_ERROR_NOT_SUPPORTED);
	expect("empty-link-refused", cuLinkComplete(link, &image, &size) != CUDA_SUCCESS);
	CHECK(cuLinkDestroy(link));
	expect("null-state-out", cuLinkCreate(0, NULL, NULL, NULL) == CUDA_ERROR_INVALID_VALUE);

	CHECK(cuCtxDestroy(ctx));
	free(copy);
	free(ptx);
	return finish("jit_link");
}
