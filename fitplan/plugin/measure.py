"""Peak memory of a block of code: this process (native code included), its children, the GPU.

Linux resets the peak-RSS counter when "5" is written to /proc/self/clear_refs, so VmHWM after a
test is the test's own high-water mark, with memory from C extensions counted (~48 us a test,
docs/evidence.md). Children: the largest ru_maxrss of the children reaped meanwhile (per child
through wait4 where Python's os.waitpid reaps them, else a new lifetime maximum of RUSAGE_CHILDREN).
GPU: torch's reserved peak where torch is loaded, and NVML's figure for this process.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass

_STATUS = "/proc/self/status"


def _status_kib(*fields: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(_STATUS, encoding="ascii") as status:
            for line in status:
                key = line.split(":", 1)[0]
                if key in fields:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


_MAXRSS_SCALE = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux


def _children_maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * _MAXRSS_SCALE


_WAITPID = os.waitpid


def _waitpid_with_peak(pid: int, options: int) -> tuple[int, int]:
    """os.waitpid through wait4, so each reaped child's own peak reaches the running meters.

    RUSAGE_CHILDREN keeps one lifetime maximum: a child no bigger than an earlier test's child
    (even the same test run twice) would not show in it.
    """
    reaped, status, usage = os.wait4(pid, options)
    if reaped:
        for meter in _ACTIVE:
            meter.child_peak_bytes = max(meter.child_peak_bytes, usage.ru_maxrss * _MAXRSS_SCALE)
    return reaped, status


@dataclass
class PeakResult:
    ram_bytes: int | None  # peak growth over the start; None where the OS gives no resettable peak
    children_bytes: int  # the largest child's peak, if a new child peaked higher than any before
    vram_bytes: int | None  # None: no GPU memory could be measured (no GPU, no torch/NVML)
    seconds: float
    exact: bool  # the peak counter was reset (Linux); else ru_maxrss, a process-lifetime peak

    @property
    def ram_total_bytes(self) -> int | None:
        if self.ram_bytes is None:
            return None
        return max(self.ram_bytes, self.children_bytes)


_ACTIVE: list[PeakMeter] = []  # meters running now; a nested start() must not erase their peak


class PeakMeter:
    """start() ... stop(): the peak memory growth and wall time between them (meters may nest)."""

    carried_hwm_kib = 0  # the peak a nested meter's start() reset, carried for this one
    child_peak_bytes = 0

    def start(self) -> None:
        if _ACTIVE:  # the reset below erases the peak the running meters have seen so far: carry it
            current = _status_kib("VmHWM").get("VmHWM") or 0
            for outer in _ACTIVE:
                outer.carried_hwm_kib = max(outer.carried_hwm_kib, current)
        self.carried_hwm_kib = 0
        self.child_peak_bytes = 0
        if hasattr(os, "wait4") and os.waitpid is _WAITPID:  # subprocess and multiprocessing reap via waitpid
            os.waitpid = _waitpid_with_peak
        _ACTIVE.append(self)
        self.exact = _reset_peak()
        self.start_rss_kib = _status_kib("VmRSS").get("VmRSS")
        self.children_before = _children_maxrss_bytes()
        _reset_gpu_peak()
        self.started = time.perf_counter()

    def stop(self) -> PeakResult:
        seconds = time.perf_counter() - self.started
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if not _ACTIVE and os.waitpid is _waitpid_with_peak:
            os.waitpid = _WAITPID
        hwm = _status_kib("VmHWM").get("VmHWM")
        if hwm is not None:
            hwm = max(hwm, self.carried_hwm_kib)
        growth = None
        if self.exact and hwm is not None and self.start_rss_kib is not None:
            growth = max(0, hwm - self.start_rss_kib) * 1024
        children = _children_maxrss_bytes()
        children = max(children if children > self.children_before else 0, self.child_peak_bytes)
        return PeakResult(growth, children, gpu_peak_bytes(), seconds, self.exact)


def _reset_gpu_peak() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_bytes() -> int | None:
    """The larger of torch's reserved peak and NVML's memory for this process; None without either."""
    values = []
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        values.append(sum(torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())))
    nvml = _nvml_process_bytes()
    if nvml is not None:
        values.append(nvml)
    return max(values) if values else None


_NVIDIA_DRIVER = os.path.exists("/proc/driver/nvidia")  # one stat at import, not one per test


def _nvml_process_bytes() -> int | None:
    """NVML's used GPU memory of this process over all GPUs (the CUDA context included)."""
    if "pynvml" not in sys.modules and not _NVIDIA_DRIVER:
        return None  # no NVIDIA driver: skip the import and init entirely
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        total, found = 0, False
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == os.getpid() and process.usedGpuMemory:
                    total, found = total + process.usedGpuMemory, True
        return total if found else None
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()
