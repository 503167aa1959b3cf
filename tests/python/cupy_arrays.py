"""CuPy on netgpu: elementwise operations, reductions, ElementwiseKernel, ReductionKernel and
RawKernel (compiled by NVRTC; run.sh sets CUPY_COMPILE_WITH_PTX=1 so CuPy loads PTX, which
every netgpu executor takes). Each check prints one verdict line "cupy-<name>: PASS|FAIL ...";
the process exits 0 only if every check passed. Run by tests/python/run.sh."""

import sys
import traceback

import numpy as np

results = []


def check(name):
    def wrap(fn):
        try:
            detail = fn() or ""
            print(f"cupy-{name}: PASS {detail}", flush=True)
            results.append(True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check
            last = traceback.format_exception(e)[-1].strip()
            print(f"cupy-{name}: FAIL {last}", flush=True)
            traceback.print_exc(file=sys.stdout)
            results.append(False)
        return fn

    return wrap


import cupy as cp  # noqa: E402


@check("device")
def _():
    n = cp.cuda.runtime.getDeviceCount()
    assert n >= 1, f"{n} devices"
    props = cp.cuda.runtime.getDeviceProperties(0)
    free, total = cp.cuda.runtime.memGetInfo()
    assert 0 < free <= total, f"free {free} total {total}"
    return f"{props['name'].decode()} cc {props['major']}.{props['minor']}"


@check("transfers")
def _():
    a = np.arange(100000, dtype=np.float64)
    d = cp.asarray(a)
    np.testing.assert_array_equal(cp.asnumpy(d), a)
    np.testing.assert_array_equal(d[::7].get(), a[::7])


@check("elementwise")
def _():
    a = cp.arange(10000, dtype=cp.float32)
    b = cp.sin(a) * 2 + a / 3
    want = np.sin(np.arange(10000, dtype=np.float32)) * 2 + np.arange(10000, dtype=np.float32) / 3
    np.testing.assert_allclose(b.get(), want, rtol=1e-5, atol=1e-5)
    m = cp.arange(12, dtype=cp.int32).reshape(3, 4)
    np.testing.assert_array_equal((m + m.T.copy().T * 2).get(), np.arange(12).reshape(3, 4) * 3)


@check("reductions")
def _():
    rng = np.random.default_rng(3)
    h = rng.random((300, 200))
    d = cp.asarray(h)
    np.testing.assert_allclose(float(d.sum()), h.sum(), rtol=1e-10)
    np.testing.assert_allclose(d.max(axis=0).get(), h.max(axis=0))
    np.testing.assert_allclose(d.mean(axis=1).get(), h.mean(axis=1), rtol=1e-10)
    assert int(cp.argmax(d)) == int(np.argmax(h))
    i = cp.arange(1, 1001, dtype=cp.int64)
    assert int(i.sum()) == 500500
    assert int(cp.count_nonzero(i % 3 == 0)) == 333


@check("elementwise-kernel")
def _():
    sqdiff = cp.ElementwiseKernel("T x, T y", "T z", "z = (x - y) * (x - y)", "netgpu_sqdiff")
    x = cp.arange(1000, dtype=cp.float32)
    y = cp.full(1000, 10, dtype=cp.float32)
    np.testing.assert_array_equal(sqdiff(x, y).get(), (np.arange(1000, dtype=np.float32) - 10) ** 2)
    xi = cp.arange(50, dtype=cp.int64)
    np.testing.assert_array_equal(sqdiff(xi, xi + 2).get(), np.full(50, 4))


@check("reduction-kernel")
def _():
    l2 = cp.ReductionKernel("T x", "T y", "x * x", "a + b", "y = sqrt(a)", "0", "netgpu_l2")
    x = cp.arange(1, 101, dtype=cp.float64)
    np.testing.assert_allclose(float(l2(x)), np.sqrt((np.arange(1, 101) ** 2).sum()))


@check("raw-kernel")
def _():
    src = r"""
    extern "C" __global__ void scale_add(const float* x, float* y, float a, int n) {
        int i = blockDim.x * blockIdx.x + threadIdx.x;
        if (i < n) y[i] = a * x[i] + y[i];
    }
    """
    k = cp.RawKernel(src, "scale_add")
    n = 5000
    x = cp.arange(n, dtype=cp.float32)
    y = cp.ones(n, dtype=cp.float32)
    k(((n + 127) // 128,), (128,), (x, y, cp.float32(0.5), cp.int32(n)))
    np.testing.assert_array_equal(y.get(), 0.5 * np.arange(n, dtype=np.float32) + 1)


@check("raw-module")
def _():
    src = r"""
    template<typename T> __global__ void fill(T* p, T v, int n) {
        int i = blockDim.x * blockIdx.x + threadIdx.x;
        if (i < n) p[i] = v + i;
    }
    """
    m = cp.RawModule(code=src, name_expressions=["fill<int>", "fill<double>"])
    a = cp.zeros(300, dtype=cp.int32)
    m.get_function("fill<int>")((3,), (128,), (a, cp.int32(7), cp.int32(300)))
    np.testing.assert_array_equal(a.get(), np.arange(300) + 7)
    b = cp.zeros(300, dtype=cp.float64)
    m.get_function("fill<double>")((3,), (128,), (b, cp.float64(0.5), cp.int32(300)))
    np.testing.assert_array_equal(b.get(), np.arange(300) + 0.5)


@check("streams")
def _():
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        a = cp.arange(1 << 16, dtype=cp.float32)
        b = a * 2
    e = s.record()
    e.synchronize()
    s.synchronize()
    np.testing.assert_array_equal(b.get(), np.arange(1 << 16, dtype=np.float32) * 2)


sys.exit(0 if results and all(results) else 1)
