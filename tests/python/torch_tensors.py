"""PyTorch on netgpu: device discovery, the caching allocator, copies (pageable, pinned and
non-blocking, on side streams), events, and kernels. PyTorch's CUDA build from PyPI ships its
kernels as SASS only (no PTX in any of libtorch_cuda.so's fatbins), so on the CPU executor,
which runs PTX, a kernel fails cleanly with cudaErrorNoKernelImageForDevice and the process
goes on; on the CUDA executor (a real GPU) the kernels run. Each check prints one verdict line
"torch-<name>: PASS|FAIL ..."; the process exits 0 only if every check passed. Run by
tests/python/run.sh torch."""

import sys
import traceback

results = []


def check(name):
    def wrap(fn):
        try:
            detail = fn() or ""
            print(f"torch-{name}: PASS {detail}", flush=True)
            results.append(True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check
            last = traceback.format_exception(e)[-1].strip()
            print(f"torch-{name}: FAIL {last}", flush=True)
            traceback.print_exc(file=sys.stdout)
            results.append(False)
        return fn

    return wrap


import torch  # noqa: E402

cpu_executor = False


@check("device")
def _():
    global cpu_executor
    assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    assert torch.cuda.device_count() >= 1
    p = torch.cuda.get_device_properties(0)
    cpu_executor = "CPU executor" in p.name
    free, total = torch.cuda.mem_get_info()
    assert 0 < free <= total, f"free {free} total {total}"
    return f"{p.name} cc {p.major}.{p.minor}, {p.multi_processor_count} SMs, torch {torch.__version__}"


@check("copies")
def _():
    a = torch.arange(1 << 20, dtype=torch.float32)
    g = a.to("cuda")
    assert g.is_cuda and g.shape == a.shape
    assert torch.equal(g.cpu(), a)
    # A slice lands where it belongs (device-side offsets).
    assert torch.equal(g[12345:12400].cpu(), a[12345:12400])
    # Device to device.
    h = g.clone()
    assert torch.equal(h.cpu(), a)


@check("pinned-non-blocking")
def _():
    p = torch.empty(1 << 16, dtype=torch.uint8).pin_memory()
    assert p.is_pinned()
    p.fill_(7)
    g = p.to("cuda", non_blocking=True)
    back = torch.empty_like(p).pin_memory()
    back.copy_(g, non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(back, p)


@check("streams-events")
def _():
    a = torch.arange(1 << 18, dtype=torch.int64)
    s = torch.cuda.Stream()
    e1 = torch.cuda.Event(enable_timing=True)
    e2 = torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(s):
        e1.record()
        g = a.to("cuda", non_blocking=True)
        e2.record()
    torch.cuda.current_stream().wait_stream(s)
    e2.synchronize()
    ms = e1.elapsed_time(e2)
    assert ms >= 0.0, ms
    assert torch.equal(g.cpu(), a)
    return f"{ms:.2f} ms for 2 MiB"


@check("caching-allocator")
def _():
    torch.cuda.empty_cache()
    free0, _ = torch.cuda.mem_get_info()
    xs = [torch.empty(1 << 20, dtype=torch.uint8, device="cuda") for _ in range(8)]
    assert torch.cuda.memory_allocated() >= 8 << 20
    free1, _ = torch.cuda.mem_get_info()
    assert free1 < free0, (free0, free1)
    del xs
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() == 0
    free2, _ = torch.cuda.mem_get_info()
    assert free2 == free0, (free0, free2)


@check("kernels")
def _():
    x = torch.arange(16, dtype=torch.float32, device="cuda")
    y = (x * 2 + 1).sum().item()
    assert y == 256.0, y


@check("no-ptx-is-a-clean-error")
def _():
    if not cpu_executor:
        return "not applicable: the CUDA executor runs SASS"
    try:
        torch.ones(4, device="cuda").add_(1).cpu()
    except torch.AcceleratorError as e:
        assert "no kernel image" in str(e), str(e)
    else:
        raise AssertionError("a SASS-only kernel ran on the CPU executor")
    # The error is not sticky: the context goes on working.
    a = torch.arange(1000, dtype=torch.int32)
    assert torch.equal(a.to("cuda").cpu(), a)
    return "cudaErrorNoKernelImageForDevice, then copies go on"


sys.exit(0 if all(results) else 1)
