"""One machine probe per process: `python -m fitplan.profiles.probe_worker NAME [ARG]`.

Each probe runs in its own process so that a crash (a BLAS or driver abort), a hang or a thread
setting cannot touch the caller: BLAS reads OPENBLAS_NUM_THREADS and friends only once, at import,
so the caller sets them in this process's environment. Stdout carries exactly one JSON object,
`{"value", "unit", "seconds"}` or `{"values": {key: {...}}, "errors": {key: reason}}`; anything a
library prints goes to stderr. Rates are the best of a few repeats: on a shared machine the
slowest runs measure the neighbours, the fastest one measures the hardware.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

Result = dict[str, Any]

_HOST_BYTES = 256 * 2**20  # larger than any last-level cache, small enough for a laptop
_MM_N = 2048  # matrix-matrix, as in prefill
_MV_N = 4096  # matrix-vector, as in decode
_GPU_MM_N = 8192
_DISK_MAX_BYTES = 512 * 2**20
_DISK_MAX_S = 3.0
_CHUNK = 8 * 2**20


def best_rate(run: Callable[[], object], work: float, *, budget_s: float = 0.5, min_reps: int = 3) -> float:
    """Best work per second over repeats that fit in `budget_s`, after one untimed warm-up run."""
    run()
    best, started, reps = 0.0, time.perf_counter(), 0
    while reps < min_reps or (time.perf_counter() - started < budget_s and reps < 200):
        t0 = time.perf_counter()
        run()
        best = max(best, work / max(time.perf_counter() - t0, 1e-9))
        reps += 1
    return best


def figure(value: float, unit: str, started: float, note: str = "") -> Result:
    out: Result = {"value": value, "unit": unit, "seconds": time.perf_counter() - started}
    if note:
        out["note"] = note
    return out


def thread_count() -> int:
    """Threads for the `_all` probes: the caller's choice, else every CPU this process may use."""
    env = os.environ.get("FITPLAN_PROBE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _parallel(threads: int, size: int, body: Callable[[slice], object]) -> Callable[[], object]:
    """Run `body` on `threads` disjoint slices at once (numpy releases the GIL while copying/summing)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads)
    slices = [slice(i * size // threads, (i + 1) * size // threads) for i in range(threads)]
    return lambda: list(pool.map(body, slices))


def host_copy(threads: int) -> Result:
    """Copy bandwidth, read + write bytes counted (what a decode step streams through RAM)."""
    import numpy as np

    started = time.perf_counter()
    src = np.ones(_HOST_BYTES // 8)
    dst = np.zeros_like(src)
    if threads == 1:
        def copy() -> None:
            np.copyto(dst, src)

        run: Callable[[], object] = copy
    else:
        run = _parallel(threads, src.size, lambda s: np.copyto(dst[s], src[s]))
    rate = best_rate(run, 2 * src.nbytes)
    return figure(rate / 1e9, "GB/s", started, f"numpy copy of 256 MiB, {threads} thread(s)")


def host_read(threads: int) -> Result:
    """Read bandwidth as a reduction sees it (single-thread sums may be compute-bound, by design)."""
    import numpy as np

    started = time.perf_counter()
    src = np.ones(_HOST_BYTES // 8)
    run: Callable[[], object] = src.sum if threads == 1 else _parallel(threads, src.size, lambda s: src[s].sum())
    rate = best_rate(run, src.nbytes)
    return figure(rate / 1e9, "GB/s", started, f"numpy sum of 256 MiB, {threads} thread(s)")


def numpy_fp32(threads: int) -> Result:
    """fp32 GFLOP/s through numpy's BLAS; its thread count was fixed by the caller's environment."""
    import numpy as np

    suffix = "1thread" if threads == 1 else "all"
    rng = np.random.default_rng(0)
    values: dict[str, Result] = {}
    started = time.perf_counter()
    a, b = rng.random((_MM_N, _MM_N), np.float32), rng.random((_MM_N, _MM_N), np.float32)
    rate = best_rate(lambda: a @ b, 2 * _MM_N**3, budget_s=0.6)
    values[f"fp32_mm_{suffix}"] = figure(rate / 1e9, "GFLOP/s", started)
    started = time.perf_counter()
    m, x = rng.random((_MV_N, _MV_N), np.float32), rng.random(_MV_N, np.float32)
    rate = best_rate(lambda: m @ x, 2 * _MV_N**2, budget_s=0.3)
    values[f"fp32_mv_{suffix}"] = figure(rate / 1e9, "GFLOP/s", started)
    return {"values": values}


def torch_matmul(_arg: str | None = None) -> Result:
    """bf16 and int8 2048^2 matmul through torch (oneDNN: AMX/AVX-512 where the CPU has them)."""
    keys = [f"{kind}_{suffix}" for kind in ("bf16_mm", "int8_mm") for suffix in ("1thread", "all")]
    try:
        import torch
    except ImportError:
        return {"values": {}, "errors": {k: f"{k.split('_')[0]} matmul needs torch" for k in keys}}
    values: dict[str, Result] = {}
    errors: dict[str, str] = {}
    for suffix, threads in (("1thread", 1), ("all", thread_count())):
        torch.set_num_threads(threads)
        for kind, measure in (("bf16_mm", _torch_bf16), ("int8_mm", _torch_int8)):
            try:
                values[f"{kind}_{suffix}"] = measure(torch)
            except Exception as exc:  # an op this torch build lacks: skip this figure only
                errors[f"{kind}_{suffix}"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return {"values": values, "errors": errors}


def _torch_bf16(torch: ModuleType) -> Result:
    started = time.perf_counter()
    a, b = (torch.randn(_MM_N, _MM_N).to(torch.bfloat16) for _ in range(2))
    return figure(best_rate(lambda: a @ b, 2 * _MM_N**3, budget_s=0.4) / 1e9, "GFLOP/s", started)


def _torch_int8(torch: ModuleType) -> Result:
    """torch._int_mm is the int8 GEMM (int32 accumulate); plain int8 matmul is a slow generic loop."""
    started = time.perf_counter()
    a, b = (torch.randint(-128, 127, (_MM_N, _MM_N), dtype=torch.int8) for _ in range(2))
    note = ""

    def int_mm() -> object:
        return torch._int_mm(a, b)

    run: Callable[[], object] = int_mm
    try:
        run()
    except (AttributeError, RuntimeError, NotImplementedError):
        run, note = (lambda: a @ b), "generic int8 matmul (torch._int_mm unavailable)"
    return figure(best_rate(run, 2 * _MM_N**3, budget_s=0.4, min_reps=1) / 1e9, "GOP/s", started, note)


def disk_read(path: str | None) -> Result:
    """Sequential read of a model file after asking the kernel to drop its cached pages.

    posix_fadvise(DONTNEED) drops only clean pages nobody maps, so the figure can still be
    optimistic; /proc/sys/vm/drop_caches is never written (a shared machine's cache is not ours).
    """
    if not path:
        raise ValueError("disk probe needs a file path")
    started = time.perf_counter()
    buffer = bytearray(_CHUNK)
    fd = os.open(path, os.O_RDONLY)
    try:
        note = _drop_cache(fd)
        total, t0 = 0, time.perf_counter()
        while total < _DISK_MAX_BYTES and time.perf_counter() - t0 < _DISK_MAX_S:
            got = os.readv(fd, [buffer])
            if not got:
                break
            total += got
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    if total == 0:
        raise ValueError(f"{path} is empty")
    return figure(total / max(elapsed, 1e-9) / 1e9, "GB/s", started, f"{note}; {total / 2**20:.0f} MiB read")


def _drop_cache(fd: int) -> str:
    if not hasattr(os, "posix_fadvise"):
        return "page cache not dropped (no posix_fadvise): may be a cached read"
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return "cold-ish: posix_fadvise(DONTNEED) first; pages other processes map stay cached"


def gpu(index: str | None) -> Result:
    """Device copy, fp16/bf16 8192^2 matmul and pinned host->device copy, timed with CUDA events."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch cannot use CUDA (CPU-only build or no driver)")
    device = torch.device("cuda", int(index or 0))
    torch.cuda.set_device(device)
    values: dict[str, Result] = {}
    started = time.perf_counter()
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    rate = _cuda_rate(torch, partial(dst.copy_, src), 2 * src.numel())
    values["memory_GB_per_s"] = figure(rate / 1e9, "GB/s", started, "1 GiB device-to-device copy, read + write")
    del src, dst
    for dtype, key in ((torch.float16, "fp16_TFLOP_per_s"), (torch.bfloat16, "bf16_TFLOP_per_s")):
        started = time.perf_counter()
        a, b = (torch.randn(_GPU_MM_N, _GPU_MM_N, device=device, dtype=dtype) for _ in range(2))
        values[key] = figure(_cuda_rate(torch, partial(torch.matmul, a, b), 2 * _GPU_MM_N**3) / 1e12, "TFLOP/s", started)
    del a, b
    started = time.perf_counter()
    host = torch.empty(_HOST_BYTES, dtype=torch.uint8).pin_memory()
    on_device = torch.empty(_HOST_BYTES, dtype=torch.uint8, device=device)
    rate = _cuda_rate(torch, lambda: on_device.copy_(host, non_blocking=True), _HOST_BYTES)
    values["h2d_GB_per_s"] = figure(rate / 1e9, "GB/s", started, "pinned 256 MiB host->device")
    return {"values": values}


def _cuda_rate(torch: ModuleType, run: Callable[[], object], work: float, reps: int = 10) -> float:
    """Best work per second, each repeat timed between CUDA events after a warm-up."""
    run()
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        run()
        end.record()
        end.synchronize()
        best = max(best, work / max(begin.elapsed_time(end) / 1e3, 1e-9))
    return best


def crash(_arg: str | None = None) -> Result:
    """Test only: die the way a broken native library does."""
    os.abort()


def hang(_arg: str | None = None) -> Result:
    """Test only: never return, so the caller's timeout must fire."""
    while True:
        time.sleep(3600)


PROBES: dict[str, Callable[[str | None], Result]] = {
    "host_copy_1thread": lambda _: host_copy(1),
    "host_copy_all": lambda _: host_copy(thread_count()),
    "host_read_1thread": lambda _: host_read(1),
    "host_read_all": lambda _: host_read(thread_count()),
    "fp32_1thread": lambda _: numpy_fp32(1),
    "fp32_all": lambda _: numpy_fp32(thread_count()),
    "torch_matmul": torch_matmul,
    "disk": disk_read,
    "gpu": gpu,
    "crash": crash,
    "hang": hang,
}


def main(argv: list[str]) -> int:
    """Run one probe; stdout gets its JSON alone (fd 1 points at stderr while the probe runs)."""
    if not argv or argv[0] not in PROBES:
        print(f"usage: probe_worker NAME [ARG]; NAME is one of {', '.join(PROBES)}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # C libraries and stray prints cannot corrupt the JSON
    try:
        result = PROBES[argv[0]](argv[1] if len(argv) > 1 else None)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
