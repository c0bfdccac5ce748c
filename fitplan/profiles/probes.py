"""Micro-benchmarks that calibrate the speed model on this machine, run on demand, cached per machine.

Published figures say what a chip can do; these say what this box does today: host copy and read
bandwidth, fp32/bf16/int8 matmul, the model file's disk read, and per NVIDIA GPU its copy, matmul
and host->device rates. Each probe runs in its own subprocess (probe_worker.py) with a timeout, so a
crash, a hang or a BLAS thread setting stays there and the other probes still run. Results are
cached as JSON per machine fingerprint; a corrupt or foreign cache is ignored and rebuilt.

Nothing heavy is imported here at module level: numpy, torch and rich load only when probes run.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from fitplan.atomic_file import write_atomic
from fitplan.cachedir import cache_dir
from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec

SCHEMA_VERSION = 1
_MAX_CACHE_BYTES = 4 * 2**20  # a real cache is a few KiB
_WORKER = "fitplan.profiles.probe_worker"
_TIMEOUT_S = 20.0  # per probe; each takes ~1-3 s on a 2-core laptop


class ProbeValue(BaseModel):
    """One measured figure; `seconds` is how long measuring it took (its share of the process)."""

    value: float = Field(gt=0, allow_inf_nan=False)
    unit: str
    seconds: float = Field(ge=0, allow_inf_nan=False)
    note: str = ""  # how it was measured, e.g. page-cache caveats of a disk read


class MachineProbes(BaseModel):
    """Everything measured on one machine; absent figures have a reason in `errors`."""

    schema_version: int = SCHEMA_VERSION
    fingerprint: str
    created_unix: float
    host_copy_GB_per_s_1thread: ProbeValue | None = None  # read + write bytes counted
    host_copy_GB_per_s_all: ProbeValue | None = None
    host_read_GB_per_s_1thread: ProbeValue | None = None
    host_read_GB_per_s_all: ProbeValue | None = None
    matmul_GFLOP_per_s: dict[str, ProbeValue] = {}  # fp32_mm_1thread, ..., int8_mm_all
    disk_read_GB_per_s: dict[str, ProbeValue] = {}  # keyed by absolute file path
    gpus: list[dict[str, ProbeValue]] = []  # by NVML index; {} where that GPU's probe failed
    errors: dict[str, str] = {}  # probe or figure -> one-line reason

    def total_seconds(self) -> float:
        """Time spent measuring the figures present (failed and timed-out probes not counted)."""
        return sum(value.seconds for value in self._values())

    def _values(self) -> Iterator[ProbeValue]:
        host = (self.host_copy_GB_per_s_1thread, self.host_copy_GB_per_s_all,
                self.host_read_GB_per_s_1thread, self.host_read_GB_per_s_all)
        yield from (value for value in host if value is not None)
        yield from self.matmul_GFLOP_per_s.values()
        yield from self.disk_read_GB_per_s.values()
        for gpu in self.gpus:
            yield from gpu.values()


@dataclass(frozen=True)
class _Task:
    """One worker run: a probe name and its argument (a file path, a GPU index)."""

    name: str
    arg: str | None = None

    @property
    def id(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


# probe name -> the MachineProbes field it fills, or the matmul keys it fills
_HOST_FIELDS = {
    "host_copy_1thread": "host_copy_GB_per_s_1thread",
    "host_copy_all": "host_copy_GB_per_s_all",
    "host_read_1thread": "host_read_GB_per_s_1thread",
    "host_read_all": "host_read_GB_per_s_all",
}
_MATMUL_KEYS = {
    "fp32_1thread": ("fp32_mm_1thread", "fp32_mv_1thread"),
    "fp32_all": ("fp32_mm_all", "fp32_mv_all"),
    "torch_matmul": ("bf16_mm_1thread", "int8_mm_1thread", "bf16_mm_all", "int8_mm_all"),
}
_TEST_ONLY = ("crash", "hang")
PROBE_NAMES = (*_HOST_FIELDS, *_MATMUL_KEYS, "disk", "gpu", *_TEST_ONLY)
DEFAULT_PROBES = (*_HOST_FIELDS, *_MATMUL_KEYS)  # plus "disk" per model file and "gpu" per NVIDIA GPU


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far on the CPUs this process may run on: busy by anyone, and this process's own."""

    busy_s: float  # user + nice + system + irq + softirq + steal, summed over those CPUs
    own_s: float  # this process's user + system time, all its threads
    cpus: int


def cpu_sample() -> CpuSample | None:
    """Now's CPU times (psutil reads /proc/stat on Linux), or None where psutil cannot say.

    Steal counts as busy: on a VM it is time another guest took from us, the same contention.
    """
    import psutil

    try:
        per_cpu = psutil.cpu_times(percpu=True)
        own = psutil.Process().cpu_times()
    except (psutil.Error, OSError):
        return None
    mine = _allowed_cpus(len(per_cpu))
    busy = sum(_busy_s(per_cpu[i]) for i in mine)
    return CpuSample(busy_s=busy, own_s=own.user + own.system, cpus=len(mine))


def _busy_s(times: object) -> float:
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _allowed_cpus(online: int) -> list[int]:
    """Indices of the CPUs our threads may use (the affinity mask), all of them where it is unknown."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed or allowed[-1] >= online:  # offline CPUs shift psutil's list: count them all
        return list(range(online))
    return allowed


def others_cores(before: CpuSample, after: CpuSample, wall_s: float) -> float:
    """How many cores other processes kept busy, on average, between two samples `wall_s` apart.

    Not the load average: that counts runnable tasks, ours included, smoothed over a minute.
    """
    if wall_s <= 0:
        return 0.0
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / wall_s)


def fingerprint(hw: HardwareSpec) -> str:
    """What identifies a machine's speed: CPU, core counts, flags, RAM size, GPUs; never free memory."""
    identity = {
        "cpu": [hw.cpu.name, hw.cpu.cores, hw.cpu.threads, sorted(hw.cpu.flags)],
        "ram_GiB": round(hw.ram_bytes / 2**30),
        "gpus": [[gpu.name, gpu.vendor, round(gpu.memory_bytes / 2**20)] for gpu in hw.gpus],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(fp: str) -> Path:
    """$FITPLAN_CACHE_DIR, else $XDG_CACHE_HOME/fitplan, else ~/.cache/fitplan; probes-<fp>.json."""
    return cache_dir(create=False) / f"probes-{fp}.json"


def load_cached(hw: HardwareSpec) -> MachineProbes | None:
    """The cached probes of this machine, or None when missing, unreadable, corrupt or foreign."""
    fp = fingerprint(hw)
    try:
        with open(cache_path(fp), "rb") as handle:
            data = handle.read(_MAX_CACHE_BYTES + 1)
        if len(data) > _MAX_CACHE_BYTES:
            return None
        probes = MachineProbes.model_validate_json(data)
    except (OSError, ValueError):  # ValidationError is a ValueError; a bad cache is just rebuilt
        return None
    if probes.schema_version != SCHEMA_VERSION or probes.fingerprint != fp:
        return None
    return probes


def write_cache(probes: MachineProbes) -> Path:
    """Write the cache atomically: a reader sees the old file, the new one or none, never half."""
    path = cache_path(probes.fingerprint)
    write_atomic(path, probes.model_dump_json(indent=1))
    return path


def run_probes(
    hw: HardwareSpec, *, model_files: Sequence[str] = (), progress: bool = True,
    timeout_s: float = _TIMEOUT_S, only: list[str] | None = None,
) -> MachineProbes:
    """Run the probes (all by default, or those named in `only`, in that order) and cache the result."""
    tasks = _default_tasks(hw, model_files)
    if only is not None:
        tasks = _select(only, tasks, model_files)
    return _run_and_cache(hw, tasks, base=None, progress=progress, timeout_s=timeout_s)


def probes_or_cached(
    hw: HardwareSpec, *, model_files: Sequence[str] = (), refresh: bool = False, progress: bool = True,
) -> MachineProbes:
    """The cached probes when they cover every default probe and model file, else measure what is missing."""
    cached = None if refresh else load_cached(hw)
    if cached is None:
        return run_probes(hw, model_files=model_files, progress=progress)
    missing = [task for task in _default_tasks(hw, model_files) if not _covered(cached, task)]
    if not missing:
        return cached
    return _run_and_cache(hw, missing, base=cached, progress=progress, timeout_s=_TIMEOUT_S)


def _default_tasks(hw: HardwareSpec, model_files: Iterable[str]) -> list[_Task]:
    tasks = [_Task(name) for name in DEFAULT_PROBES]
    tasks += [_Task("disk", os.path.abspath(path)) for path in model_files]
    # NVML order; the worker sets CUDA_DEVICE_ORDER=PCI_BUS_ID so torch counts the same way
    tasks += [_Task("gpu", str(i)) for i, gpu in enumerate(hw.gpus) if gpu.vendor == "nvidia"]
    return tasks


def _select(only: list[str], tasks: list[_Task], model_files: Sequence[str]) -> list[_Task]:
    unknown = [name for name in only if name not in PROBE_NAMES]
    if unknown:
        raise BadValueError(f"unknown probe {unknown[0]!r} (from only=); use one of {', '.join(PROBE_NAMES)}")
    if "disk" in only and not model_files:
        raise BadValueError("probe 'disk' (from only=) needs model_files to read")
    selected: list[_Task] = []
    for name in only:
        selected += [task for task in tasks if task.name == name] or ([_Task(name)] if name in _TEST_ONLY else [])
    return selected


def _covered(probes: MachineProbes, task: _Task) -> bool:
    """Whether the cache has this task's figures, or the reason they are missing."""
    if task.id in probes.errors:
        return True
    if task.name in _HOST_FIELDS:
        return getattr(probes, _HOST_FIELDS[task.name]) is not None
    if task.name in _MATMUL_KEYS:
        return any(k in probes.matmul_GFLOP_per_s or k in probes.errors for k in _MATMUL_KEYS[task.name])
    if task.name == "disk":
        return task.arg in probes.disk_read_GB_per_s
    if task.name == "gpu":
        index = int(task.arg or 0)
        return index < len(probes.gpus) and bool(probes.gpus[index])
    return False


def _run_and_cache(
    hw: HardwareSpec, tasks: list[_Task], *, base: MachineProbes | None, progress: bool, timeout_s: float,
) -> MachineProbes:
    probes = (base.model_copy(deep=True) if base is not None
              else MachineProbes(fingerprint=fingerprint(hw), created_unix=time.time()))
    probes.created_unix = time.time()
    with _progress_bar(progress, len(tasks)) as step:
        for task in tasks:
            step(task.id)
            _forget(probes, task)
            _apply(probes, task, *_run_worker(task, timeout_s))
    try:
        write_cache(probes)
    except OSError as exc:  # the figures are still good for this run
        probes.errors["cache"] = f"could not write {cache_path(probes.fingerprint)}: {exc}"
    return probes


def _forget(probes: MachineProbes, task: _Task) -> None:
    """Drop a task's old figures and reasons before it runs again."""
    probes.errors.pop(task.id, None)
    if task.name in _HOST_FIELDS:
        setattr(probes, _HOST_FIELDS[task.name], None)
    for key in _MATMUL_KEYS.get(task.name, ()):
        probes.matmul_GFLOP_per_s.pop(key, None)
        probes.errors.pop(key, None)
    if task.name == "disk":
        probes.disk_read_GB_per_s.pop(task.arg or "", None)


def _apply(probes: MachineProbes, task: _Task, output: dict[str, Any] | None, failure: str, wall_s: float) -> None:
    """Put a worker's output where it belongs; a task that failed gets one line in `errors`."""
    if output is None:
        probes.errors[task.id] = failure
        return
    try:
        values = _parse_values(output, wall_s)
    except (ValidationError, TypeError, AttributeError, ValueError) as exc:
        probes.errors[task.id] = f"printed an unusable result: {str(exc).splitlines()[0][:200]}"
        return
    for key, reason in (output.get("errors") or {}).items():
        probes.errors[str(key)] = str(reason)
    if task.name in _HOST_FIELDS:
        setattr(probes, _HOST_FIELDS[task.name], values["value"])
    elif task.name in _MATMUL_KEYS:
        probes.matmul_GFLOP_per_s.update((k, v) for k, v in values.items() if k in _MATMUL_KEYS[task.name])
    elif task.name == "disk":
        probes.disk_read_GB_per_s[task.arg or ""] = values["value"]
    elif task.name == "gpu":
        index = int(task.arg or 0)
        probes.gpus.extend({} for _ in range(index + 1 - len(probes.gpus)))
        probes.gpus[index] = values


def _parse_values(output: dict[str, Any], wall_s: float) -> dict[str, ProbeValue]:
    """Validate the worker's figures; their seconds are scaled to add up to the process's wall time."""
    raw = output["values"] if "values" in output else {"value": output}
    values = {str(key): ProbeValue.model_validate(value) for key, value in raw.items()}
    measured = sum(value.seconds for value in values.values())
    scale = wall_s / measured if measured > 0 else 0.0
    return {key: value.model_copy(update={"seconds": value.seconds * scale}) for key, value in values.items()}


def _run_worker(task: _Task, timeout_s: float) -> tuple[dict[str, Any] | None, str, float]:
    """Run one probe in a fresh interpreter: (parsed JSON or None, why it failed, wall seconds)."""
    command = [sys.executable, "-m", _WORKER, task.name, *([task.arg] if task.arg is not None else [])]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_worker_env(task))
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, f"timed out after {timeout_s:g} s", time.perf_counter() - started
    except BaseException:  # Ctrl-C: leave no probe running behind us
        proc.kill()
        proc.wait()
        raise
    wall_s = time.perf_counter() - started
    if proc.returncode != 0:
        return None, _exit_reason(proc.returncode, err), wall_s
    try:
        output = json.loads(out)
    except ValueError:
        return None, "printed no JSON result", wall_s
    if not isinstance(output, dict):
        return None, "printed no JSON object", wall_s
    return output, "", wall_s


def _exit_reason(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        with suppress(ValueError):
            return f"crashed ({signal.Signals(-returncode).name})"
        return f"crashed (signal {-returncode})"
    lines = stderr.decode(errors="replace").strip().splitlines()
    return f"failed (exit {returncode}): {lines[-1][:200] if lines else 'no message'}"


def _worker_env(task: _Task) -> dict[str, str]:
    """BLAS reads its thread count once at import, so each probe gets it in its environment."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = "1" if task.name.endswith("_1thread") else str(cpus)
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = threads
    env["FITPLAN_PROBE_THREADS"] = str(cpus)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # same GPU order as NVML
    package_root = str(Path(__file__).resolve().parents[2])  # so `-m fitplan...` works uninstalled
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A transient bar on stderr; `step(name)` marks the previous probe done and names the next."""
    if not enabled:
        yield lambda _name: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("probing {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task_id = bar.add_task("", total=total)
        started = [False]

        def step(name: str) -> None:
            bar.update(task_id, description=name, advance=1 if started[0] else 0)
            started[0] = True

        yield step
