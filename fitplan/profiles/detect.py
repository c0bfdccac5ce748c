"""This machine, measured: GPUs through NVML, CPU through py-cpuinfo, RAM through psutil.

No GPU and no NVML library are normal cases (one NVMLError in ~0.02 s), never an error.
"""
from __future__ import annotations

import os
import platform
import shutil
from typing import TYPE_CHECKING, Any

from fitplan.hardware_spec import CPUSpec, GPUSpec, HardwareSpec

if TYPE_CHECKING:
    from types import ModuleType

_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "fma", "neon", "asimd")


def detect_gpus() -> tuple[GPUSpec, ...]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library, no permission: a machine without NVIDIA GPUs
        return ()
    try:
        return tuple(_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount()))
    finally:
        pynvml.nvmlShutdown()


def _nvml_gpu(pynvml: ModuleType, index: int) -> GPUSpec:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    bandwidth = gen = lanes = None
    try:  # bus width (bits) x max memory clock (MHz) x 2 (DDR) / 8 -> GB/s
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        bandwidth = bus_bits * clock_mhz * 2 / 8 / 1000 or None
        gen = pynvml.nvmlDeviceGetMaxPcieLinkGeneration(handle) or None
        lanes = pynvml.nvmlDeviceGetMaxPcieLinkWidth(handle) or None
    except pynvml.NVMLError:
        pass
    return GPUSpec(
        name=name.decode() if isinstance(name, bytes) else name, memory_bytes=memory.total,
        free_memory_bytes=memory.free, memory_bandwidth_GB_per_s=bandwidth,
        compute_capability=f"{major}.{minor}", pcie_gen=gen, pcie_lanes=lanes,
    )


def detect_cpu() -> CPUSpec:
    import psutil

    threads = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    cores = psutil.cpu_count(logical=False) or threads
    info = _proc_cpuinfo()
    if not info:
        try:
            import cpuinfo  # py-cpuinfo: ~1 s, so only where /proc/cpuinfo is missing

            info = cpuinfo.get_cpu_info()
        except Exception:
            info = {}
    flags = set(info.get("flags", ()))
    return CPUSpec(
        name=info.get("brand_raw") or platform.processor() or platform.machine(),
        cores=cores, threads=threads, flags=tuple(f for f in _FLAGS if f in flags),
    )


def detect(model_folder: str | None = None) -> HardwareSpec:
    """This machine; free disk is that of the model's folder (or the working directory)."""
    import psutil

    memory = psutil.virtual_memory()
    return HardwareSpec(
        name="this machine", description=f"{platform.node()} ({platform.system()} {platform.machine()})",
        gpus=detect_gpus(), cpu=detect_cpu(), ram_bytes=memory.total,
        ram_available_bytes=memory.available,
        disk_free_bytes=shutil.disk_usage(model_folder or os.getcwd()).free, detected=True,
    )


def _proc_cpuinfo() -> dict[str, Any]:
    """Model name and flags from Linux's /proc/cpuinfo (milliseconds, where py-cpuinfo takes ~1 s)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return {}
    info: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and "brand_raw" not in info:
            info["brand_raw"] = value.strip()
        elif key in ("flags", "Features") and "flags" not in info:
            info["flags"] = value.split()
        if len(info) == 2:
            break
    return info
