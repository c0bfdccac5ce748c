"""Speculative decoding in a plan: the draft's memory beside the target, and its speed-up.

Only when --draft asks for it; the formula and the guards live in strategies/speculative.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fitplan.advisor.planner.candidates import Candidate, Request
from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec
from fitplan.model_spec import ModelSpec
from fitplan.strategies.quantization import WeightFormat, tensor_bytes
from fitplan.strategies.registry import cost_model, weight_format
from fitplan.units import format_bytes

if TYPE_CHECKING:
    from fitplan.advisor.planner.calibration import Calibration
    from fitplan.profiles.probes import MachineProbes


def drafting(spec: ModelSpec, req: Request) -> tuple[Any, ModelSpec | None] | None:
    """(Speculation, the draft's spec or None for prompt lookup), when --draft asks for it."""
    if not req.draft:
        return None
    from fitplan.strategies import speculative

    tokens = req.draft_tokens or int(speculative.defaults()["default_draft_tokens"])
    if req.draft == speculative.PROMPT_LOOKUP:
        if req.acceptance is None:
            raise BadValueError("prompt-lookup acceptance depends on how much the output repeats the prompt: "
                                "pass --acceptance (measured on your workload)")
        return speculative.Speculation(req.draft, req.acceptance, "given", tokens), None
    from fitplan.advisor.models.resolve import resolve_model

    draft = resolve_model(req.draft)
    speculative.check_pair(spec, draft)
    acceptance, source = speculative.parse_acceptance(req.acceptance, req.acceptance_source)
    return speculative.Speculation(draft.name, acceptance, source, tokens), draft


def add_draft_memory(c: Candidate, spec: ModelSpec, drafting: tuple[Any, ModelSpec | None],
                     capacity: Callable[[str], int]) -> None:
    """The draft lives beside the target's last block, in the target's format where it applies."""
    _, draft = drafting
    if draft is None:
        return
    from fitplan.strategies.kv_cache import layer_kv_bytes

    runtime = cost_model(c.setup.runtime)
    device = runtime.layer_device(spec, c.setup, spec.layers - 1)
    fmt = _draft_format(c, draft)
    memory = c.memory[device]
    memory.draft_weights = sum(b for _, b in tensor_bytes(draft, fmt))
    memory.draft_kv_cache = sum(layer_kv_bytes(draft, i, c.setup.context, c.setup.kv_cache, c.setup.runtime,
                                               c.setup.batch) for i in range(draft.layers))
    if memory.total > capacity(device):
        c.fits = False
        c.reason = f"needs {format_bytes(memory.total)} on {device} with the draft > {format_bytes(capacity(device))} available"


def _draft_format(c: Candidate, draft: ModelSpec) -> WeightFormat:
    """A local GGUF draft runs as its file is; any other draft in the target's format where that applies."""
    if draft.source == "gguf" and c.setup.runtime == "llama.cpp":
        try:
            return weight_format(draft.native_dtype, runtime="llama.cpp")
        except BadValueError:
            pass
    return c.fmt if c.fmt.family in ("gguf", "dense", "bnb8", "bnb4") else weight_format("bf16")


def speculate(c: Candidate, spec: ModelSpec, drafting: tuple[Any, ModelSpec | None], hw: HardwareSpec,
               probes: MachineProbes | None, calibration: Calibration | None) -> None:
    """Decode and TTFT with the draft; a draft that would slow the plan is reported, not used."""
    from fitplan.advisor.planner.estimate import candidate_speed
    from fitplan.strategies import speculative

    spec_info, draft = drafting
    cost, draft_prefill_s = 0.0, 0.0
    if draft is not None:
        on_gpu = cost_model(c.setup.runtime).layer_device(spec, c.setup, spec.layers - 1) != "cpu"  # beside the last block
        draft_setup = c.setup.with_(gpu_layers=draft.layers if on_gpu else 0, layer_map=(), expert_map=(),
                                    cpu_moe_layers=0, weights=_draft_format(c, draft).name)
        draft_candidate = Candidate(draft_setup, _draft_format(c, draft), {}, True, draft.layers)
        draft_speed = candidate_speed(draft, draft_candidate, hw, probes, calibration)
        assert c.speed is not None, "a fitting candidate is timed before its draft"
        cost = c.speed.decode_tokens_per_s / draft_speed.decode_tokens_per_s
        draft_prefill_s = draft_speed.ttft_s - 1 / draft_speed.decode_tokens_per_s
    gain = speculative.speedup(spec_info.acceptance, spec_info.draft_tokens, cost)
    c.speculation = {"draft": spec_info.draft, "acceptance": spec_info.acceptance,
                     "acceptance_source": spec_info.acceptance_source, "draft_tokens": spec_info.draft_tokens,
                     "cost_ratio": round(cost, 4), "speedup": round(gain, 3), "used": gain > 1}
    if gain <= 1:  # not used: the plan carries no draft
        for memory in c.memory.values():
            memory.draft_weights = memory.draft_kv_cache = 0
    if gain > 1 and c.speed is not None:
        speed = c.speed
        c.speed = replace(speed, decode_tokens_per_s=speed.decode_tokens_per_s * gain,
                       ttft_s=speed.ttft_s + draft_prefill_s,
                       basis=f"{speed.basis}; speculative x{gain:.2f} at acceptance {spec_info.acceptance:g}")
