/* Launch configurations the device or the function cannot run fail in cuLaunchKernel itself
 * (also between batched launches), as with NVIDIA's driver; the errors are not sticky; a
 * larger dynamic shared memory size works once cuFuncSetAttribute allows it. */
#include "common.h"

int main(void)
{
	CUcontext ctx = setup();
	CUdevice dev;
	CHECK(cuCtxGetDevice(&dev));
	int max_block, max_grid_z, smem, optin;
	CHECK(cuDeviceGetAttribute(&max_block, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, dev));
	CHECK(cuDeviceGetAttribute(&max_grid_z, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, dev));
	CHECK(cuDeviceGetAttribute(&smem, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, dev));
	CHECK(cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev));
	printf("limits: %d threads/block, grid z %d, shared %d (opt-in %d)\n", max_block, max_grid_z,
	       smem, optin);
	CUmodule mod;
	CUfunction f;
	char *ptx = load_ptx("vector_add.ptx");
	CHECK(cuModuleLoadData(&mod, ptx));
	CHECK(cuModuleGetFunction(&f, mod, "vector_add"));
	int n = 256;
	CUdeviceptr d;
	CHECK(cuMemAlloc(&d, n * sizeof(float)));
	void *args[] = { &d, &d, &d, &n };
	/* A good launch queued first: the bad ones must fail in their own call anyway. */
	CHECK(cuLaunchKernel(f, 1, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
	expect("too-many-threads", cuLaunchKernel(f, 1, 1, 1, max_block + 1, 1, 1, 0, NULL, args,
						  NULL) == CUDA_ERROR_INVALID_VALUE);
	expect("grid-too-deep", cuLaunchKernel(f, 1, 1, max_grid_z + 1, 32, 1, 1, 0, NULL, args,
					       NULL) == CUDA_ERROR_INVALID_VALUE);
	expect("empty-grid", cuLaunchKernel(f, 0, 1, 1, 32, 1, 1, 0, NULL, args, NULL) ==
				     CUDA_ERROR_INVALID_VALUE);
	expect("too-much-shared", cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, optin + 1, NULL, args,
						 NULL) == CUDA_ERROR_INVALID_VALUE);
	if (optin > smem) {
		expect("opt-in-needed", cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, smem + 1, NULL, args,
						       NULL) == CUDA_ERROR_INVALID_VALUE);
		CHECK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin));
		expect("opted-in", cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, smem + 1, NULL, args, NULL) ==
					   CUDA_SUCCESS);
	}
	expect("not-sticky", cuCtxSynchronize() == CUDA_SUCCESS);
	CHECK(cuMemFree(d));
	CHECK(cuModuleUnload(mod));
	CHECK(cuCtxDestroy(ctx));
	free(ptx);
	return finish("launch_config");
}
