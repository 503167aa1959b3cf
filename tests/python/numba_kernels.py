"""Numba-CUDA kernels on netgpu: what a Numba user writes first. Each check prints one verdict
line "numba-<name>: PASS|FAIL ..."; the process exits 0 only if every check passed.
Run by tests/python/run.sh (pinned numba-cuda in a venv, libcuda.so.1 from netgpu)."""

import math
import sys
import traceback

import numpy as np

results = []


def check(name):
    def wrap(fn):
        try:
            detail = fn() or ""
            print(f"numba-{name}: PASS {detail}", flush=True)
            results.append(True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check
            last = traceback.format_exception(e)[-1].strip()
            print(f"numba-{name}: FAIL {last}", flush=True)
            traceback.print_exc(file=sys.stdout)
            results.append(False)
        return fn

    return wrap


from numba import cuda  # noqa: E402


@check("device")
def _():
    assert cuda.is_available(), "cuda.is_available() is False"
    dev = cuda.get_current_device()
    cc = dev.compute_capability
    assert cc[0] >= 5, f"compute capability {cc}"
    return f"{dev.name.decode() if isinstance(dev.name, bytes) else dev.name} cc {cc}"


@cuda.jit
def axpy(a, x, y, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]


@check("elementwise")
def _():
    n = 10000
    x = np.arange(n, dtype=np.float32)
    y = np.ones(n, dtype=np.float32)
    out = cuda.device_array(n, dtype=np.float32)
    axpy[(n + 255) // 256, 256](np.float32(2.0), cuda.to_device(x), cuda.to_device(y), out)
    got = out.copy_to_host()
    np.testing.assert_array_equal(got, 2.0 * x + y)
    return f"{n} elements"


@cuda.jit(device=True)
def poly(v):
    return v * v + 1.0


@cuda.jit
def apply_poly(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = poly(a[i])


@check("device-function")
def _():
    a = np.linspace(-2, 2, 512).astype(np.float64)
    d = cuda.to_device(a)
    apply_poly[4, 128](d)
    np.testing.assert_allclose(d.copy_to_host(), a * a + 1.0)


@cuda.jit
def block_sum(x, out):
    s = cuda.shared.array(256, dtype=np.float32)
    t = cuda.threadIdx.x
    i = cuda.blockIdx.x * cuda.blockDim.x + t
    s[t] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    k = 128
    while k > 0:
        if t < k:
            s[t] += s[t + k]
        cuda.syncthreads()
        k //= 2
    if t == 0:
        cuda.atomic.add(out, 0, s[0])


@check("shared-memory-atomics")
def _():
    n = 4096
    x = np.random.default_rng(1).random(n, dtype=np.float32)
    out = cuda.to_device(np.zeros(1, dtype=np.float32))
    block_sum[n // 256, 256](cuda.to_device(x), out)
    got = out.copy_to_host()[0]
    assert math.isclose(got, float(x.sum()), rel_tol=1e-4), f"{got} != {x.sum()}"


@cuda.jit
def histogram(data, bins):
    i = cuda.grid(1)
    if i < data.size:
        cuda.atomic.add(bins, data[i] % bins.size, 1)


@check("atomics-2d-grid")
def _():
    data = np.arange(100000, dtype=np.int32)
    bins = cuda.to_device(np.zeros(16, dtype=np.int32))
    histogram[(100000 + 511) // 512, 512](cuda.to_device(data), bins)
    got = bins.copy_to_host()
    np.testing.assert_array_equal(got, np.bincount(data % 16, minlength=16))


@cuda.jit
def transpose(a, out):
    x, y = cuda.grid(2)
    if x < a.shape[0] and y < a.shape[1]:
        out[y, x] = a[x, y]


@check("2d-arrays-streams")
def _():
    a = np.arange(64 * 48, dtype=np.int64).reshape(64, 48)
    s = cuda.stream()
    da = cuda.to_device(a, stream=s)
    out = cuda.device_array((48, 64), dtype=np.int64, stream=s)
    transpose[(8, 6), (8, 8), s](da, out)
    got = out.copy_to_host(stream=s)
    s.synchronize()
    np.testing.assert_array_equal(got, a.T)


@cuda.reduce
def sum_reduce(a, b):
    return a + b


@check("cuda-reduce")
def _():
    a = np.arange(1, 10001, dtype=np.float64)
    got = sum_reduce(a)
    assert got == a.sum(), f"{got} != {a.sum()}"


@cuda.jit
def say(out):
    i = cuda.grid(1)
    if i < 3:
        print("numba-print", i, out[i])


@check("kernel-print")
def _():
    # Device print is vprintf; netgpu's libcuda writes the kernel's console output to the
    # process's stdout (fd 1) when the launch's stream synchronises.
    import os
    import tempfile

    out = cuda.to_device(np.array([1.5, 2.5, 3.5]))
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        try:
            say[1, 32](out)
            cuda.synchronize()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        text = f.read().decode()
    got = sorted(line for line in text.splitlines() if line.startswith("numba-print"))
    want = ["numba-print 0 1.500000", "numba-print 1 2.500000", "numba-print 2 3.500000"]
    assert got == want, f"printed {text!r}"
    return "3 lines on stdout"


sys.exit(0 if results and all(results) else 1)
