"""Choose a plan: the highest-quality setup that fits, GPU first, then a GPU+CPU split, then CPU.

Quality is the perplexity increase of the weight format (formats.toml). A GPU-only plan wins while
its loss stays within the default bound (Q4_K_M's); a model that must be split takes the format
within that bound that leaves the fewest weight bytes on the CPU, since every CPU-resident byte
costs decode time. "Nothing fits" is a result with reasons, never an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec
from fitplan.model_spec import ModelSpec
from fitplan.plan_spec import DeviceMemory, Setup
from fitplan.strategies import runtime_llamacpp, runtime_transformers
from fitplan.strategies.kv_cache import kv_bytes_per_element
from fitplan.strategies.quantization import WeightFormat, all_formats, tensor_bytes, weight_format
from fitplan.units import format_bytes

RUNTIMES = {"llama.cpp": runtime_llamacpp, "transformers": runtime_transformers}
DEFAULT_CONTEXT = 8192
QUALITY_BOUND_FORMAT = "Q4_K_M"  # the default loss bound: about Q4_K_M's on the model


@dataclass(frozen=True)
class Request:
    """What the user asked for: pins are None when free."""

    context: int | None = None
    batch: int = 1
    threads: int | None = None
    runtime: str | None = None
    weights: str | None = None
    kv_cache: str | None = None
    max_vram: int | None = None  # bytes per GPU
    max_ram: int | None = None
    gpu_layers: int | None = None  # pin the blocks on the GPUs (0: CPU only); None: the solver places them


@dataclass
class Candidate:
    setup: Setup
    fmt: WeightFormat
    memory: dict[str, DeviceMemory]
    fits: bool
    layers: int
    reason: str = ""
    speed: Any = None  # a SpeedPrediction, attached by advisor.estimate

    @property
    def placement(self) -> str:
        if self.setup.gpu_layers == 0:
            return "cpu"
        return "gpu" if self.setup.gpu_layers == self.layers else "split"

    @property
    def label(self) -> str:
        where = {"cpu": "CPU", "gpu": "GPU", "split": f"{self.setup.gpu_layers} layers on GPU, rest on CPU"}
        return f"{self.setup.runtime} {self.fmt.name} ({where[self.placement]})"


@dataclass
class Advice:
    chosen: Candidate
    fits: bool
    alternatives: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    context_note: str = ""


def normalize_runtime(name: str) -> str:
    aliases = {"llama.cpp": "llama.cpp", "llamacpp": "llama.cpp", "llama-cpp": "llama.cpp",
               "llama_cpp": "llama.cpp", "transformers": "transformers", "hf": "transformers"}
    runtime = aliases.get(name.strip().lower())
    if runtime is None:
        raise BadValueError(f"unknown runtime {name!r} (--runtime); known: llama.cpp, transformers")
    return runtime


def advise(spec: ModelSpec, hardware: HardwareSpec, request: Request) -> Advice:
    context = request.context or min(spec.max_context, DEFAULT_CONTEXT)
    note = "" if request.context else f"default: min(model maximum {spec.max_context}, {DEFAULT_CONTEXT}); pass --context"
    pinned = weight_format(request.weights) if request.weights else None
    runtime = normalize_runtime(request.runtime) if request.runtime else None
    if pinned and runtime and pinned.runtime != runtime:
        raise BadValueError(f"--weights {pinned.name} runs on {pinned.runtime}, not on --runtime {runtime}")
    formats = [pinned] if pinned else [f for f in all_formats().values() if f.auto]
    formats = [f for f in formats if runtime in (None, f.runtime)]

    candidates = []
    for fmt in formats:
        candidates += _placements(spec, hardware, request, fmt, context)
    if not candidates:
        where = f"{hardware.name} ({'GPU' if hardware.gpus else 'CPU only'})"
        raise BadValueError(f"no plan to weigh: {', '.join(f.name for f in formats) or 'no format'} cannot run on {where}")
    fitting = [c for c in candidates if c.fits]
    best = _best(fitting, spec)
    if best is None:
        best = min(candidates, key=lambda c: _over_by(c, hardware, request))
        rest = [c for c in candidates if c is not best]
        return Advice(best, False, [], rest, note)
    alternatives = sorted((c for c in fitting if c is not best), key=_quality_key)
    rejected = [c for c in candidates if not c.fits]
    return Advice(best, True, alternatives, rejected, note)


def _placements(spec: ModelSpec, hw: HardwareSpec, req: Request, fmt: WeightFormat, context: int) -> list[Candidate]:
    """GPU-only, then the largest GPU+CPU split that fits, then CPU-only, as the format allows."""
    weights = tensor_bytes(spec, fmt)
    gpus = len(hw.gpus) if hw.gpus and req.max_vram != 0 else 0
    if req.gpu_layers is not None:  # a pinned placement: exactly that one
        layers = min(req.gpu_layers, spec.layers) if gpus and "gpu" in fmt.devices else 0
        return [_candidate(spec, hw, req, fmt, weights, context, layers, gpus if layers else 0)]
    out: list[Candidate] = []
    if gpus and "gpu" in fmt.devices:
        full = _candidate(spec, hw, req, fmt, weights, context, spec.layers, gpus)
        out.append(full)
        if not full.fits and "cpu" in fmt.devices:
            split = _largest_split(spec, hw, req, fmt, weights, context, gpus)
            if split:
                out.append(split)
    if "cpu" in fmt.devices:
        out.append(_candidate(spec, hw, req, fmt, weights, context, 0, 0))
    return out


def _largest_split(spec, hw, req, fmt, weights, context, gpus) -> Candidate | None:
    """Binary search for the most blocks on the GPUs that still fits (memory grows with blocks)."""
    low, high, best = 1, spec.layers - 1, None
    while low <= high:
        mid = (low + high) // 2
        c = _candidate(spec, hw, req, fmt, weights, context, mid, gpus)
        if _gpus_fit(c, hw, req):
            best, low = c, mid + 1
        else:
            high = mid - 1
    return best


def _candidate(spec, hw, req, fmt, weights, context, gpu_layers, gpus) -> Candidate:
    threads = req.threads or hw.cpu.cores
    setup = Setup(fmt.runtime, fmt.name, _kv_dtype(req, fmt, hw, gpu_layers), context, req.batch,
                  threads, gpu_layers, gpus if gpu_layers else 0)
    memory = RUNTIMES[fmt.runtime].memory(spec, setup, weights)
    problems = [f"needs {format_bytes(mem.total)} on {dev} > {format_bytes(cap)} available"
                for dev, mem in memory.items() if mem.total > (cap := _capacity(dev, hw, req))]
    return Candidate(setup, fmt, memory, not problems, spec.layers, "; ".join(problems))


def _kv_dtype(req: Request, fmt: WeightFormat, hw: HardwareSpec, gpu_layers: int) -> str:
    if req.kv_cache:
        kv = req.kv_cache.lower()
        kv_bytes_per_element(kv, fmt.runtime)  # raises a clear error for a type the runtime lacks
        return kv
    if fmt.runtime == "llama.cpp":
        return "f16"
    if fmt.name == "fp32":
        return "f32"
    bf16 = gpu_layers == 0 or all(_bf16_gpu(g.compute_capability) for g in hw.gpus)
    return "bf16" if bf16 else "f16"


def _bf16_gpu(capability: str | None) -> bool:
    try:
        return capability is not None and float(capability) >= 8.0
    except ValueError:
        return False


def _capacity(device: str, hw: HardwareSpec, req: Request) -> int:
    if device == "cpu":
        return min(hw.ram_usable_bytes, req.max_ram if req.max_ram is not None else hw.ram_usable_bytes)
    gpu = hw.gpus[int(device[3:])]
    return min(gpu.usable_bytes, req.max_vram if req.max_vram is not None else gpu.usable_bytes)


def _gpus_fit(c: Candidate, hw: HardwareSpec, req: Request) -> bool:
    return all(m.total <= _capacity(d, hw, req) for d, m in c.memory.items() if d != "cpu")


def _over_by(c: Candidate, hw: HardwareSpec, req: Request) -> float:
    """How far a candidate overshoots, relative to capacity: the nearest miss becomes the plan shown."""
    return max(m.total / max(1, _capacity(d, hw, req)) for d, m in c.memory.items())


def _loss(c: Candidate) -> float:
    return c.fmt.ppl_increase if c.fmt.ppl_increase is not None else float("inf")


def _quality_key(c: Candidate) -> tuple[float, int]:
    return _loss(c), sum(m.total for m in c.memory.values())


def _best(fitting: list[Candidate], spec: ModelSpec) -> Candidate | None:
    if not fitting:
        return None
    bound = weight_format(QUALITY_BOUND_FORMAT).ppl_increase or 0.0
    within = [c for c in fitting if _loss(c) <= bound]
    for placement in ("gpu", "split", "cpu"):
        group = [c for c in within if c.placement == placement]
        if group and placement == "split":
            return min(group, key=lambda c: (c.memory["cpu"].weights, _loss(c)))
        if group:
            return min(group, key=_quality_key)
    order = {"gpu": 0, "split": 1, "cpu": 2}
    return min(fitting, key=lambda c: (_loss(c), order[c.placement]))
