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

from dataclasses import dataclass, replace
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
    growth = Growth.of(spec, hw, request, c)
    rows = [{"context": x, "sessions": most_sessions(spec, hw, request, c, x, growth)} for x in contexts]
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


@dataclass(frozen=True)
class Growth:
    """Memory per device as `fixed + per_session * n + per_cell * n * context`: what the KV cells, the
    output rows and the buffers sized by them add, fitted on three sizings of the plan. It only guesses
    where to start; `most_sessions` checks each count against the exact cost model."""

    fixed: dict[str, float]
    per_session: dict[str, float]
    per_cell: dict[str, float]
    room: dict[str, int]  # what the plan may use on each device (the pool, under "pool", on unified memory)

    @staticmethod
    def of(spec: ModelSpec, hw: HardwareSpec, request: Request, c: Candidate) -> Growth:
        x = c.setup.context
        base, more, longer = (resized(spec, hw, request, c, context=ctx, batch=n).memory
                              for ctx, n in ((x, 1), (x, 2), (2 * x, 1)))
        devices = [d for d in base if d != "disk"]
        room = {d: device_capacity(d, hw, request) for d in devices}
        per_cell = {d: (longer[d].total - base[d].total) / x for d in devices}
        per_session = {d: more[d].total - base[d].total - per_cell[d] * x for d in devices}
        fixed = {d: base[d].total - per_session[d] - per_cell[d] * x for d in devices}
        if hw.unified:  # the one pool bounds the sum of the shares too
            for part in (fixed, per_session, per_cell):
                part["pool"] = sum(part[d] for d in devices)
            room["pool"] = device_capacity("cpu", hw, request)
        return Growth(fixed, per_session, per_cell, room)

    def sessions(self, context: int) -> int:
        """The count the fit gives at `context` (MAX_BATCH where nothing grows)."""
        counts = [(self.room[d] - self.fixed[d]) / step for d in self.room
                  if (step := self.per_session[d] + self.per_cell[d] * context) > 0]
        return max(0, min(MAX_BATCH, int(min(counts)))) if counts else MAX_BATCH


def most_sessions(spec: ModelSpec, hw: HardwareSpec, request: Request, c: Candidate, context: int,
                  growth: Growth | None = None) -> int:
    """The largest number of sessions of `context` tokens the plan holds (0: not even one). Memory grows
    with the sessions about linearly (KV cells, output rows), so the count the fit gives is checked and
    stepped from, not searched for: two sizings where the fit is exact."""
    growth = growth or Growth.of(spec, hw, request, c)
    n = growth.sessions(context)
    if n == 0 or fits_with(spec, hw, request, c, context=context, batch=n):
        while n < MAX_BATCH and fits_with(spec, hw, request, c, context=context, batch=n + 1):
            n += 1
        return n
    while n > 1:
        n -= 1
        if fits_with(spec, hw, request, c, context=context, batch=n):
            return n
    return 0


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
