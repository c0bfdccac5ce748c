"""Choose a plan among runtime x weight format x placement, by an objective, under constraints.

Quality is the perplexity increase of the weight format: its published figure on Llama-3-8B
(formats.toml) scaled for the model's family and size (strategies/quality_prior.py), or what `fitplan
quality` measured on the model; speed comes from the speed
model (advisor/planner/speed.py) with this machine's probes and calibration where it is the target.
Objectives: `balanced` (default): the fastest plan whose loss stays within a bound (Q4_K_M's, or
--max-ppl-increase); `quality`: the least loss; `speed`: the fastest; `throughput`: the most
tokens/s summed over the batch. Constraints (--min-tokens-per-s, --max-ttft, --max-ppl-increase)
filter first. "Nothing fits" is a result with reasons, never an exception.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fitplan.advisor.planner.candidates import Advice, Candidate, Request
from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec
from fitplan.model_spec import ModelSpec
from fitplan.plan_spec import DeviceMemory, Setup, gpu_name
from fitplan.strategies.offload import default_gpu_reserve_bytes
from fitplan.strategies.pruning import parse_prune, sparse_kernel_unmet, sparse_weight_bytes
from fitplan.strategies.quality_prior import factor_note, model_factor
from fitplan.strategies.quantization import WeightFormat, tensor_bytes
from fitplan.strategies.registry import (
    check_kv_cache,
    cost_model,
    normalize_runtime,
    option,
    weight_format,
    weight_formats,
)
from fitplan.strategies.runtimes.contract import DISK, EXACT, EXPERTS_CPU, KV_FALLBACK, PRUNE, SPLIT, UNEVEN
from fitplan.units import format_bytes

if TYPE_CHECKING:
    from fitplan.advisor.planner.calibration import Calibration
    from fitplan.profiles.probes import MachineProbes
    from fitplan.strategies.runtimes.vllm.cost import ScaleOut

__all__ = ["Advice", "Candidate", "Request", "advise", "gpu_reserve_bytes", "plan_loss", "plan_loss_of"]

DEFAULT_CONTEXT = 8192
QUALITY_BOUND_FORMAT = "Q4_K_M"  # the default loss bound: about Q4_K_M's on the model
OBJECTIVES = ("balanced", "quality", "speed", "throughput")


def advise(spec: ModelSpec, hardware: HardwareSpec, request: Request, *, probes: MachineProbes | None = None,
           calibration: Calibration | None = None) -> Advice:
    """Size, time and rank every candidate; the best that fits, or the nearest miss with reasons."""
    from fitplan.advisor.planner import speculation
    from fitplan.advisor.planner.estimate import candidate_speed

    if request.objective not in OBJECTIVES:
        raise BadValueError(f"unknown objective {request.objective!r} (--objective); known: {', '.join(OBJECTIVES)}")
    context = request.context or min(spec.max_context, DEFAULT_CONTEXT)
    note = "" if request.context else f"default: min(model maximum {spec.max_context}, {DEFAULT_CONTEXT}); pass --context"
    pinned, formats, excluded = _formats(spec, request, hardware)
    candidates = []
    for fmt in formats:
        candidates += _placements(spec, hardware, request, fmt, context)
    if not candidates:
        where = f"{hardware.name} ({'GPU' if hardware.gpus else 'CPU only'})"
        raise BadValueError(f"no plan to weigh: {', '.join(f.name for f in formats) or 'no format'} cannot run on {where}")
    drafting = speculation.drafting(spec, request)
    for c in candidates:
        if drafting:
            speculation.add_draft_memory(c, spec, drafting, lambda d: device_capacity(d, hardware, request))
        if c.fits:
            c.speed = candidate_speed(spec, c, hardware, probes, calibration)
            if drafting:
                speculation.speculate(c, spec, drafting, hardware, probes, calibration)
    candidates = _without_slower_exact(candidates)
    fitting = [c for c in candidates if c.fits and not _breaks_constraints(c, request)]
    best = _best(fitting, request, default_bound(spec))
    if best is None:
        best = min(candidates, key=lambda c: (not c.fits, _over_by(c, hardware, request)))
        best.speed = best.speed or candidate_speed(spec, best, hardware, probes, calibration)
        if best.fits:
            best.reason = _breaks_constraints(best, request)
        advice = Advice(best, False, [], [c for c in candidates if c is not best], note, excluded=excluded,
                        gpu_reserve_bytes=gpu_reserve_bytes(request))
        advice.scale_out = _scale_out(spec, hardware, pinned, context) if not best.fits else None
        return advice
    alternatives = sorted((c for c in fitting if c is not best), key=lambda c: _rank(c, request))
    rejected = [c for c in candidates if c not in fitting]
    return Advice(best, True, alternatives, rejected, note, excluded=excluded,
                  gpu_reserve_bytes=gpu_reserve_bytes(request))


def _formats(spec: ModelSpec, request: Request, hw: HardwareSpec
             ) -> tuple[WeightFormat | None, list[WeightFormat], list[tuple[str, str]]]:
    """(the pinned format, the formats to weigh, the formats this machine cannot run and why):
    auto ones and the files' own, of the pinned runtime, narrowed by the pinned strategies."""
    runtime = normalize_runtime(request.runtime) if request.runtime else None
    pinned = weight_format(request.weights, runtime=runtime) if request.weights else None
    if pinned and runtime and pinned.runtime != runtime:
        raise BadValueError(f"--weights {pinned.name} runs on {pinned.runtime}, not on --runtime {runtime}")
    known = weight_formats()
    formats = [pinned] if pinned else [f for f in known.values() if f.auto or _is_files_format(spec, f)]
    formats = [f for f in formats if runtime in (None, f.runtime)]
    if not formats and runtime:  # a runtime with pin-only formats (onnxruntime): its formats, all of them
        formats = [f for f in known.values() if f.runtime == runtime]
    if request.kv_cache and not pinned:  # a pinned KV type narrows the runtimes (q8_0 is llama.cpp's)
        offered = [f for f in formats if _offers_kv(request.kv_cache, f.runtime)]
        formats = offered or formats  # none offer it: the error names the type and the runtimes
    formats = _narrow_by_pins(formats, request, hw)
    excluded = [(f.name, why) for f in formats if (why := _format_unmet(f, hw, pinned=pinned is not None))]
    if pinned and excluded:
        raise BadValueError(f"--weights {pinned.name} cannot run on {hw.name}: {excluded[0][1]}")
    weighed = [_measured(scaled_prior(f, spec), spec, request) for f in formats if f.name not in dict(excluded)]
    return (_measured(scaled_prior(pinned, spec), spec, request) if pinned else None), weighed, excluded


def scaled_prior(fmt: WeightFormat, spec: ModelSpec) -> WeightFormat:
    """The format's published loss on Llama-3-8B scaled for this model's family and size (quality_prior)."""
    factor = model_factor(spec)
    if fmt.ppl_increase is None or not fmt.ppl_increase or factor == 1.0:
        return fmt
    return replace(fmt, ppl_increase=fmt.ppl_increase * factor,
                   quality_source=f"{fmt.quality_source}: +{fmt.ppl_increase:g} on Llama-3-8B, {factor_note(spec, factor)}")


def _measured(fmt: WeightFormat, spec: ModelSpec, request: Request) -> WeightFormat:
    """The format with this model's measured loss in place of the prior, where fitplan quality measured it
    (the files' own format keeps its prior: what was measured is that format written again from them)."""
    measured = (request.measured or {}).get(fmt.name)
    if measured is None or _is_files_format(spec, fmt):
        return fmt
    return replace(fmt, ppl_increase=measured.ppl_increase, kld_mean=measured.kld_mean, quality_source=measured.source)


def _narrow_by_pins(formats: list[WeightFormat], req: Request, hw: HardwareSpec) -> list[WeightFormat]:
    """Only the runtimes that offload to disk or prune take those pins; a pinned runtime's flash
    attention must run on this machine (FlashAttention-2 on transformers needs its GPU)."""
    if req.disk_layers:
        formats = [f for f in formats if DISK in cost_model(f.runtime).features and f.family == "dense"]
        if not formats:
            raise BadValueError("--disk-layers runs on transformers with fp32/bf16/fp16 weights (accelerate's disk offload)")
    if req.prune:
        formats = [f for f in formats if PRUNE in cost_model(f.runtime).features]
        if not formats:
            raise BadValueError(f"--prune {req.prune} "
                                f"{option('pruning', 'unstructured').requirement.unmet(hw, 'cpu', 'llama.cpp')}")
        quantized = [f.name for f in formats if f.family != "dense"]  # no dense weight left in them to zero
        formats = [f for f in formats if f.family == "dense"]
        if not formats:
            raise BadValueError(f"--prune {req.prune} zeroes fp32/bf16/fp16 weights; {', '.join(quantized)} "
                                "quantizes them")
    if req.flash_attn and req.runtime:
        why = cost_model(normalize_runtime(req.runtime)).flash_attn_unmet(hw)
        if why:
            raise BadValueError(why)
    return formats


def _format_unmet(fmt: WeightFormat, hw: HardwareSpec, *, pinned: bool = True) -> str:
    """'' when some device of `hw` can run `fmt` (and may be proposed there), else why none can."""
    on_gpu, on_cpu = _device_unmet(fmt, hw, "gpu"), _device_unmet(fmt, hw, "cpu", pinned=pinned)
    if on_gpu is None or on_cpu is None:
        return ""
    return on_gpu if "cpu" not in fmt.devices else f"GPU: {on_gpu}; CPU: {on_cpu}"


def _device_unmet(fmt: WeightFormat, hw: HardwareSpec, device: str, *, pinned: bool = True) -> str | None:
    if device in fmt.pinned_only_on and not pinned:
        return f"used on the {device.upper()} only when pinned (--weights {fmt.name}): its {device.upper()} speed is not modelled"
    return option("quantization", fmt.name).requirement.unmet(hw, device, fmt.runtime)


def _offers_kv(kv: str, runtime: str) -> bool:
    return kv.lower() in cost_model(runtime).kv_cache_types


def _scale_out(spec: ModelSpec, hw: HardwareSpec, pinned: WeightFormat | None, context: int) -> ScaleOut | None:
    """A multi-GPU vLLM plan on this machine's GPU kind (an H100 where it has none, or one vLLM does not
    scale out: Metal, SYCL, Vulkan, unified memory), in bf16 unless the user pinned a transformers-side
    GPU format."""
    from fitplan.profiles.named import load_profile
    from fitplan.strategies.runtimes.transformers.cost import constants
    from fitplan.strategies.runtimes.vllm.cost import scale_out

    scalable = hw.gpus and hw.gpus[0].backend in ("CUDA", "ROCm") and not hw.unified
    gpu = hw.gpus[0] if scalable else load_profile("h100-80gb").gpus[0]
    fmt = pinned if pinned is not None and pinned.runtime == "transformers" and "gpu" in pinned.devices \
        else weight_format("bf16")  # a CPU-only format (int8-dynamic) scales out as bf16
    return scale_out(spec, tensor_bytes(spec, fmt), fmt.name, context, gpu, constants()["gpu_context_bytes"])


def _breaks_constraints(c: Candidate, req: Request) -> str:
    """Why a fitting candidate misses the user's speed/quality constraints ('' when it meets them)."""
    why = []
    if req.max_ppl_increase is not None and plan_loss_of(c) > req.max_ppl_increase:
        why.append(f"perplexity +{plan_loss_of(c):.3f} > --max-ppl-increase {req.max_ppl_increase:g}")
    if req.max_kld is not None:
        if c.fmt.kld_mean is None:
            why.append(f"no measured KL divergence for {c.fmt.name} (--max-kld: run fitplan quality, or advise --probe-quality)")
        elif c.fmt.kld_mean > req.max_kld:
            why.append(f"KL divergence {c.fmt.kld_mean:.4f} > --max-kld {req.max_kld:g}")
    speed = c.speed
    assert speed is not None, "only candidates with a speed are judged"
    if req.min_tokens_per_s is not None and speed.decode_tokens_per_s < req.min_tokens_per_s:
        why.append(f"decode {speed.decode_tokens_per_s:.1f} tok/s < --min-tokens-per-s {req.min_tokens_per_s:g}")
    if req.max_ttft_s is not None and speed.ttft_s > req.max_ttft_s:
        why.append(f"TTFT {speed.ttft_s:.2f} s > --max-ttft {req.max_ttft_s:g} s")
    if why and c.fits:
        c.reason = "; ".join(why)
    return "; ".join(why)


def _placements(spec: ModelSpec, hw: HardwareSpec, req: Request, fmt: WeightFormat, context: int) -> list[Candidate]:
    """GPU-only, then the largest GPU+CPU split that fits, then CPU-only, as the format allows."""
    weights = tensor_bytes(spec, fmt)
    features = cost_model(fmt.runtime).features
    gpus = len(hw.gpus) if hw.gpus and req.max_vram != 0 and _device_unmet(fmt, hw, "gpu") is None else 0
    on_cpu = _device_unmet(fmt, hw, "cpu", pinned=req.weights is not None) is None
    top = _most_gpu_layers(spec, req)
    if req.gpu_layers is not None:  # a pinned placement: exactly that one
        layers = min(req.gpu_layers, top) if gpus else 0
        return [_candidate(spec, hw, req, fmt, weights, context, layers, gpus if layers else 0)]
    out: list[Candidate] = []
    if gpus:
        full = _candidate(spec, hw, req, fmt, weights, context, top, gpus)
        out.append(full)
        faster = _speed_split(spec, hw, req, fmt, weights, full) if full.fits else None
        if faster:
            out.append(faster)
        if not full.fits and KV_FALLBACK in features and req.kv_cache is None and req.flash_attn is not False:
            # a smaller KV cache (llama.cpp's q8_0, measured lossless: kv_dtypes.toml) may keep every layer on the GPU
            smaller_kv = replace(req, kv_cache=cost_model(fmt.runtime).smaller_kv_cache)
            smaller = _candidate(spec, hw, smaller_kv, fmt, weights, context, spec.layers, gpus)
            if smaller.fits:
                out.append(smaller)
        if not full.fits and on_cpu:
            split = _largest_split(spec, hw, req, fmt, weights, context, gpus, top) if SPLIT in features else None
            if split:
                out.append(split)
            if spec.is_moe and EXPERTS_CPU in features:
                experts = _fewest_cpu_expert_layers(spec, hw, req, fmt, weights, context, gpus)
                if experts:
                    out.append(experts)
            if EXACT in features:
                exact = _milp_candidate(spec, hw, req, fmt, weights, full.setup)
                if exact:
                    out.append(exact)
    if on_cpu and not (hw.unified and any(c.fits for c in out)):
        # unified memory (Apple, DGX Spark, Strix Halo): the CPU reads the same pool as the GPU, through
        # fewer and narrower ports than the one bandwidth figure the profile gives both, so a CPU-only plan
        # is weighed only where no plan using the GPU fits
        out.append(_candidate(spec, hw, req, fmt, weights, context, 0, 0))
    return out


def _without_slower_exact(candidates: list[Candidate]) -> list[Candidate]:
    """The MILP places blocks by bytes per token; the speed model also counts each device switch and
    per-layer kernel costs, so an exact map can time slower than the contiguous split of the same
    format. Such a map is dominated (it needs -ot rules too): it is not offered."""
    def decode(c: Candidate) -> float:
        return c.speed.decode_tokens_per_s if c.speed else 0.0

    best_plain: dict[str, float] = {}
    for c in candidates:
        if c.fits and c.placement != "exact":
            best_plain[c.fmt.name] = max(best_plain.get(c.fmt.name, 0.0), decode(c))
    return [c for c in candidates
            if not (c.placement == "exact" and c.fits and decode(c) < best_plain.get(c.fmt.name, 0.0))]


def _most_gpu_layers(spec: ModelSpec, req: Request) -> int:
    """Blocks a GPU may hold: all of them, less the last `--disk-layers` a pin keeps on disk (honoured
    exactly, or refused: never quietly fewer)."""
    disk = req.disk_layers or 0
    if disk > spec.layers:
        raise BadValueError(f"bad --disk-layers {disk}: {spec.name} has {spec.layers} blocks")
    if req.gpu_layers is not None and disk and req.gpu_layers > spec.layers - disk:
        raise BadValueError(f"{req.gpu_layers} GPU layers and {disk} disk layers exceed the {spec.layers} blocks "
                            f"of {spec.name}")
    return spec.layers - disk


def _largest_split(spec, hw, req, fmt, weights, context, gpus, top) -> Candidate | None:
    """Binary search for the most blocks on the GPUs that still fits (memory grows with blocks)."""
    low, high, best = 1, top - 1, None
    while low <= high:
        mid = (low + high) // 2
        c = _candidate(spec, hw, req, fmt, weights, context, mid, gpus)
        if _gpus_fit(c, hw, req):
            best, low = c, mid + 1
        else:
            high = mid - 1
    return best


def _milp_candidate(spec, hw, req, fmt, weights, base: Setup) -> Candidate | None:
    """The exact placement (advisor/planner/placement.py); kept only when it fits once sized exactly.
    None for a dense model of alike blocks: the split (-ngl N) is its placement (uniform_blocks)."""
    from fitplan.advisor.planner.placement import device_bandwidth, milp_setup, uniform_blocks

    if uniform_blocks(spec, base.context * base.batch, base.kv_cache):
        return None
    setup = milp_setup(spec, base, weights, lambda d: device_capacity(d, hw, req), device_bandwidth(hw, base.threads))
    if setup is None or setup.gpu_layers == 0:
        return None
    return _sized(spec, hw, req, fmt, weights, setup)


def _fewest_cpu_expert_layers(spec, hw, req, fmt, weights, context, gpus) -> Candidate | None:
    """MoE: every block on the GPUs, with the routed experts of the fewest first blocks on the CPU
    (llama.cpp --n-cpu-moe): attention, shared weights and the KV cache keep the GPU's speed."""
    low, high, best = 1, spec.layers, None
    while low <= high:
        mid = (low + high) // 2
        c = _candidate(spec, hw, req, fmt, weights, context, spec.layers, gpus, cpu_moe_layers=mid)
        if _gpus_fit(c, hw, req):
            best, high = c, mid - 1
        else:
            low = mid + 1
    return best


def _memory_split(hw: HardwareSpec, req: Request, gpus: int) -> tuple[float, ...]:
    """llama.cpp's default shares, each GPU's memory (its room here: less the reserve, within --max-vram),
    in MiB; () for alike cards, whose shares are equal."""
    room = [device_capacity(gpu_name(i), hw, req) // 2**20 for i in range(gpus)]
    return () if len(set(room)) <= 1 else tuple(float(max(1, r)) for r in room)


def _speed_split(spec, hw, req, fmt, weights, full: Candidate) -> Candidate | None:
    """Unequal GPUs holding every layer: the split that fills the faster cards first. Decode runs the
    layers card after card, so each layer moved from a slower card to a faster one that still has room
    takes less time, down to leaving a slow card empty (share 0: one device hop fewer). None when the
    cards' bandwidths are alike or no layer can move."""
    from fitplan.advisor.planner.placement import device_bandwidth
    from fitplan.strategies.runtimes.llamacpp.cost import layer_counts

    s = full.setup
    if UNEVEN not in cost_model(fmt.runtime).features or s.gpus < 2 or full.placement != "gpu":
        return None
    bandwidth = device_bandwidth(hw, s.threads)
    speed = [bandwidth(gpu_name(i)) for i in range(s.gpus)]
    if len(set(speed)) == 1:
        return None
    counts = layer_counts(spec.layers, s.gpu_layers, s.tensor_split or (1.0,) * s.gpus)
    order = sorted(range(s.gpus), key=lambda i: -speed[i])
    best = None
    while True:  # one layer at a time, the fastest card first, from the slowest that has one
        moves = ((f, w) for f in order for w in reversed(order) if speed[w] < speed[f] and counts[w])
        for fast, slow in moves:
            trial = [*counts]
            trial[fast], trial[slow] = trial[fast] + 1, trial[slow] - 1
            c = _candidate(spec, hw, req, fmt, weights, s.context, s.gpu_layers, s.gpus, split=tuple(map(float, trial)))
            if c.fits and layer_counts(spec.layers, s.gpu_layers, c.setup.tensor_split) == trial:
                best, counts = c, trial
                break
        else:
            return best


def _candidate(spec, hw, req, fmt, weights, context, gpu_layers, gpus, cpu_moe_layers: int = 0,
               split: tuple[float, ...] | None = None) -> Candidate:
    threads = req.threads or hw.cpu.cores
    runtime = cost_model(fmt.runtime)
    by_speed = split is not None
    if split is None:
        split = _memory_split(hw, req, gpus) if UNEVEN in runtime.features and gpus > 1 and gpu_layers else ()
    kv = check_kv_cache(req.kv_cache, fmt.runtime) if req.kv_cache else runtime.default_kv_cache(fmt, hw, gpu_layers)
    all_on_gpu = gpu_layers == spec.layers and gpus > 0
    sparse = bool(req.prune) and sparse_kernel_unmet(req.prune, fmt.name, hw, all_on_gpu) is None
    disk = (req.disk_layers or 0) if DISK in runtime.features else 0
    assert gpu_layers + disk <= spec.layers, (gpu_layers, disk)  # _most_gpu_layers bounds the GPU's share
    # the solver's own values, bounded where they entered: constructed without a second validation (the plan
    # file validates a Setup it reads or writes)
    setup = Setup.model_construct(
        runtime=fmt.runtime, weights=fmt.name, kv_cache=kv, context=context, batch=req.batch, threads=threads,
        gpu_layers=gpu_layers, gpus=gpus if gpu_layers else 0, tensor_split=split, cpu_moe_layers=cpu_moe_layers,
        flash_attn=runtime.flash_attn(req.flash_attn, kv, hw, all_on_gpu), prune=_prune_label(req.prune),
        swa_full=True if req.swa_full is None else req.swa_full,
        op_offload=True if req.op_offload is None else req.op_offload,
        sparse_kernels=sparse, disk_layers=disk)
    c = _sized(spec, hw, req, fmt, sparse_weight_bytes(weights, fmt.name) if sparse else weights, setup)
    c.split_by = "speed" if by_speed else "memory" if split else ""
    return c


def _prune_label(prune: str | None) -> str:
    if not prune:
        return ""
    pattern, ratio = parse_prune(prune)
    return pattern if pattern == "2:4" else f"{pattern}:{ratio:g}"


def _sized(spec, hw, req, fmt, weights, setup: Setup) -> Candidate:
    """A candidate with its exact memory per device and, where a device overflows, why."""
    memory = cost_model(fmt.runtime).memory(spec, setup, weights)
    problems = [f"needs {format_bytes(mem.total)} on {dev} > {format_bytes(cap)} available{_reserve_note(dev, hw, req)}"
                for dev, mem in memory.items() if mem.total > (cap := device_capacity(dev, hw, req))]
    if hw.unified and not problems:
        problems += _pool_overflow(memory, hw, req)
    source_loss, converted = _source(spec, fmt)
    return Candidate(setup, fmt, memory, not problems, spec.layers, "; ".join(problems), source_loss=source_loss,
                     converted=converted)


def _pool_overflow(memory: dict[str, DeviceMemory], hw: HardwareSpec, req: Request) -> list[str]:
    """Unified memory: the GPUs' and the CPU's shares come out of one pool, the host's RAM, so each may
    fit on its own (the GPU within its working set) and the two together still not."""
    shared = [d for d in memory if d == "cpu" or (d.startswith("gpu") and hw.gpus[int(d[3:])].unified_memory)]
    used, pool = sum(memory[d].total for d in shared), device_capacity("cpu", hw, req)
    if used <= pool:
        return []
    return [f"needs {format_bytes(used)} on {' + '.join(shared)} > {format_bytes(pool)} of unified memory"]


def _reserve_note(device: str, hw: HardwareSpec, req: Request) -> str:
    """Why a GPU offers less than its free memory, where the reserve is what bounds it."""
    reserve = gpu_reserve_bytes(req) if device.startswith("gpu") else 0
    if not reserve or (req.max_vram is not None and req.max_vram <= device_capacity(device, hw, req)):
        return ""
    return f" (with {format_bytes(reserve)} kept free)"


def _is_files_format(spec: ModelSpec, fmt: WeightFormat) -> bool:
    """The format the model's own files hold: always a candidate, auto-chosen or not."""
    if spec.source == "gguf":
        return fmt.family == "gguf" and fmt.name == spec.native_dtype
    return spec.source == "folder" and fmt.family == "dense" and fmt.name == spec.native_dtype


def _source(spec: ModelSpec, fmt: WeightFormat) -> tuple[float, bool]:
    """(the loss the files already carry, whether this format means converting them)."""
    carried = 0.0
    if spec.source == "gguf":
        try:
            carried = (weight_format(spec.native_dtype).ppl_increase or 0.0) * model_factor(spec)
        except BadValueError:  # a file type without a published figure
            pass
    return carried, not _is_files_format(spec, fmt)


def gpu_reserve_bytes(req: Request) -> int:
    """What every plan leaves free on each GPU: the request's reserve, else the default."""
    return req.reserve if req.reserve is not None else default_gpu_reserve_bytes()


def resized(spec: ModelSpec, hw: HardwareSpec, req: Request, c: Candidate, *, context: int,
            batch: int | None = None) -> Candidate:
    """Candidate `c` with `context` tokens a sequence (and `batch` sequences), sized again: whether it fits
    on every device and in one pool (unified memory); the draft's memory, where it has one, is not counted."""
    weights = tensor_bytes(spec, c.fmt)
    if c.setup.sparse_kernels:
        weights = sparse_weight_bytes(weights, c.fmt.name)
    setup = c.setup.with_(context=context, batch=c.setup.batch if batch is None else batch)
    return _sized(spec, hw, req, c.fmt, weights, setup)


def fits_with(spec: ModelSpec, hw: HardwareSpec, req: Request, c: Candidate, *, context: int,
              batch: int | None = None) -> bool:
    return resized(spec, hw, req, c, context=context, batch=batch).fits


def device_capacity(device: str, hw: HardwareSpec, req: Request) -> int:
    """What a plan may use on `device` ("gpu0", "cpu", "disk"): a GPU's free memory (or whole card) less
    the reserve, within --max-vram."""
    if device == "disk":
        return hw.disk_free_bytes if hw.disk_free_bytes is not None else 2**62
    if device == "cpu":
        return min(hw.ram_usable_bytes, req.max_ram if req.max_ram is not None else hw.ram_usable_bytes)
    usable = max(0, hw.gpus[int(device[3:])].usable_bytes - gpu_reserve_bytes(req))
    return min(usable, req.max_vram) if req.max_vram is not None else usable


def _gpus_fit(c: Candidate, hw: HardwareSpec, req: Request) -> bool:
    return all(m.total <= device_capacity(d, hw, req) for d, m in c.memory.items() if d not in ("cpu", "disk"))


def _over_by(c: Candidate, hw: HardwareSpec, req: Request) -> float:
    """How far a candidate overshoots, relative to capacity: the nearest miss becomes the plan shown."""
    return max(m.total / max(1, device_capacity(d, hw, req)) for d, m in c.memory.items())


def plan_loss_of(c: Candidate) -> float:
    """The plan's perplexity increase: requantizing a quantized file adds its format's loss to the
    file's own (errors compound; a first-order estimate), and dequantizing keeps the file's."""
    return plan_loss(c.fmt.ppl_increase, c.source_loss if c.converted else 0.0)


def plan_loss(own: float | None, carried: float) -> float:
    return (own if own is not None else float("inf")) + carried


def _rank(c: Candidate, req: Request) -> tuple[float, ...]:
    """Sort key of the objective: smaller is better."""
    speed = c.speed
    assert speed is not None, "fitting candidates are timed"
    if req.objective == "quality":
        return (plan_loss_of(c), -speed.decode_tokens_per_s, c.converted)
    if req.objective == "throughput":
        return (-speed.batch_tokens_per_s, plan_loss_of(c), c.converted)
    return (-speed.decode_tokens_per_s, plan_loss_of(c), c.converted)


def default_bound(spec: ModelSpec) -> float:
    """The balanced objective's loss bound: what Q4_K_M is expected to cost this model."""
    return (weight_format(QUALITY_BOUND_FORMAT).ppl_increase or 0.0) * model_factor(spec)


def _best(fitting: list[Candidate], req: Request, default_bound: float) -> Candidate | None:
    if not fitting:
        return None
    if req.objective == "balanced":
        bound = req.max_ppl_increase if req.max_ppl_increase is not None else default_bound
        within = [c for c in fitting if plan_loss_of(c) <= bound]
        if within:
            return min(within, key=lambda c: _rank(c, req))
        return min(fitting, key=lambda c: (plan_loss_of(c), -c.timed().decode_tokens_per_s, c.converted))
    return min(fitting, key=lambda c: _rank(c, req))
