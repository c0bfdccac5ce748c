"""Serving capacity: how many sessions a plan serves at once, at each context, and at what rate.

llama.cpp (`--parallel N`, fitplan's plans): one unified KV cache of N x context cells (llama-server's
n_ctx is the total; each slot gets its share), the compute buffers and the N output rows sized for it,
all by the runtime's own cost model: the most sessions at each context is the largest N whose plan still
fits. Aggregate decode at 1, 4, 16 and 64 sessions comes from the batched speed model (one step serves
every session; a routed expert is read once for all the tokens that pick it).

vLLM (an NVIDIA or AMD card it scales over): it reserves gpu_memory_utilization of each GPU and fills
what the weights, the profiling forward and the CUDA context leave with paged KV blocks; sessions at a
context = the pool's tokens / context, what vLLM logs as "Maximum concurrency for N tokens per request".
Tensor parallel over the host's GPUs (a power of two), bf16 weights, KV heads split across the ranks.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fitplan.advisor.planner.solver import device_capacity, fits_with, resized
from fitplan.plan_spec import MAX_BATCH

if TYPE_CHECKING:
    from fitplan.advisor.planner.calibration import Calibration
    from fitplan.advisor.planner.candidates import Candidate, Request
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.model_spec import ModelSpec
    from fitplan.profiles.probes import MachineProbes

SESSIONS = (1, 4, 16, 64)
CONTEXTS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
VLLM_BLOCK_TOKENS = 16  # vLLM's default KV block size (CacheConfig block_size)


def capacity(spec: ModelSpec, hw: HardwareSpec, request: Request, c: Candidate, *,
             probes: MachineProbes | None = None, calibration: Calibration | None = None) -> dict[str, Any]:
    """Sessions per context and aggregate decode for the chosen plan; vLLM's paged pool where it applies."""
    contexts = sorted({x for x in CONTEXTS if x <= spec.max_context} | {c.setup.context})
    rows = [{"context": x, "sessions": most_sessions(spec, hw, request, c, x)} for x in contexts]
    fit_here = next(r["sessions"] for r in rows if r["context"] == c.setup.context)
    out: dict[str, Any] = {
        "runtime": c.setup.runtime, "weights": c.fmt.name, "kv_cache": c.setup.kv_cache,
        "how": _how(c), "contexts": rows,
        "aggregate": aggregate(spec, hw, c, fit_here, probes=probes, calibration=calibration),
    }
    pool = vllm_pool(spec, hw, c.setup.context)
    if pool is not None:
        tokens, tp = pool
        out["vllm"] = {"tensor_parallel_size": tp, "weights": "bf16", "kv_tokens": tokens,
                       "contexts": [{"context": x, "sessions": tokens // x} for x in contexts]}
    return out


def _how(c: Candidate) -> str:
    if c.setup.runtime == "llama.cpp":
        return "llama.cpp --parallel N: one unified KV cache of N x context cells"
    return f"{c.setup.runtime}: N sequences in one batch, each with its own KV cache of the context"


def most_sessions(spec: ModelSpec, hw: HardwareSpec, request: Request, c: Candidate, context: int) -> int:
    """The largest number of sessions of `context` tokens the plan holds (0: not even one). Memory grows
    with the sessions about linearly (KV cells, output rows), so the count the first two sizes extrapolate
    to is checked and stepped from, not searched for."""
    one, two = (resized(spec, hw, request, c, context=context, batch=n) for n in (1, 2))
    if not one.fits:
        return 0
    if not two.fits:
        return 1
    devices = [d for d in one.memory if d != "disk"]
    estimates = [(device_capacity(d, hw, request) - one.memory[d].total) / growth for d in devices
                 if (growth := two.memory[d].total - one.memory[d].total) > 0]
    growth = sum(two.memory[d].total - one.memory[d].total for d in devices)
    if hw.unified and growth > 0:  # the one pool bounds the sum of the shares too
        estimates.append((device_capacity("cpu", hw, request) - sum(one.memory[d].total for d in devices)) / growth)
    n = max(2, min(MAX_BATCH, 1 + int(min(estimates)))) if estimates else MAX_BATCH
    while n > 2 and not fits_with(spec, hw, request, c, context=context, batch=n):
        n -= 1
    while n < MAX_BATCH and fits_with(spec, hw, request, c, context=context, batch=n + 1):
        n += 1
    return n


def aggregate(spec: ModelSpec, hw: HardwareSpec, c: Candidate, most: int, *, probes: MachineProbes | None,
              calibration: Calibration | None) -> list[dict[str, Any]]:
    """Decode tokens/s summed over 1, 4, 16, 64 sessions at the plan's context (those that fit)."""
    from fitplan.advisor.planner.estimate import candidate_speed

    out: list[dict[str, Any]] = []
    for n in SESSIONS:
        if n > most:
            out.append({"sessions": n, "fits": False})
            continue
        speed = candidate_speed(spec, replace(c, setup=c.setup.with_(batch=n)), hw, probes, calibration)
        out.append({"sessions": n, "fits": True, "tokens_per_s": round(speed.batch_tokens_per_s, 2),
                    "per_session_tokens_per_s": round(speed.batch_tokens_per_s / n, 2)})
    return out


def vllm_pool(spec: ModelSpec, hw: HardwareSpec, context: int) -> tuple[int, int] | None:
    """(KV tokens vLLM's paged pool holds, tensor-parallel size) on the host's GPUs, or None where vLLM does
    not serve it: no NVIDIA/AMD discrete card, unlike cards, or bf16 weights that leave no room."""
    from fitplan.strategies.quantization import tensor_bytes
    from fitplan.strategies.registry import weight_format
    from fitplan.strategies.runtimes.transformers.cost import constants
    from fitplan.strategies.runtimes.vllm.cost import per_gpu_bytes, reserved_bytes

    gpus = hw.gpus
    if not gpus or hw.unified or any(g.backend not in ("CUDA", "ROCm") or g != gpus[0] for g in gpus):
        return None
    tp = 1 << (len(gpus).bit_length() - 1)
    weights = tensor_bytes(spec, weight_format("bf16"))
    fixed = per_gpu_bytes(spec, weights, 0, tp, 1, constants()["gpu_context_bytes"])  # all but the KV cache
    per_block = per_gpu_bytes(spec, weights, VLLM_BLOCK_TOKENS, tp, 1, constants()["gpu_context_bytes"]) - fixed
    room = reserved_bytes(gpus[0]) - fixed
    if room <= 0 or per_block <= 0:
        return None
    return int(room // per_block * VLLM_BLOCK_TOKENS), tp
