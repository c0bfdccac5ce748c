"""advise's answer as a JSON document: the chosen plan, the alternatives, the Pareto front, the rejected
and excluded candidates (the CLI's table, advisor/cli/report.py, renders the same document)."""
from __future__ import annotations

import time
from typing import Any

from fitplan.advisor.planner.calibration import Calibration, calibration_note, key
from fitplan.advisor.planner.candidates import Advice, Candidate
from fitplan.advisor.planner.solver import plan_loss_of
from fitplan.hardware_spec import HardwareSpec
from fitplan.model_spec import ModelSpec

SCHEMA_VERSION = 1


def plan_dict(c: Candidate, context_note: str = "", spec: ModelSpec | None = None) -> dict[str, Any]:
    s = c.setup
    plan = {"runtime": s.runtime, "weights": s.weights, "kv_cache": s.kv_cache, "context": s.context,
            "batch": s.batch, "threads": s.threads, "gpu_layers": s.gpu_layers, "gpus": s.gpus,
            "cpu_moe_layers": s.cpu_moe_layers, "flash_attn": s.flash_attn, "placement": c.placement}
    if s.runtime == "llama.cpp":
        plan["swa_full"], plan["op_offload"] = s.swa_full, s.op_offload
    if s.tensor_split:
        plan["tensor_split"] = list(s.tensor_split)
    if s.layer_map:
        from fitplan.advisor.planner.placement import overrides

        plan["layer_map"], plan["expert_map"] = list(s.layer_map), list(s.expert_map)
        plan["tensor_overrides"] = overrides(spec, s) if spec is not None else []
    if s.prune:
        plan["prune"], plan["sparse_kernels"] = s.prune, s.sparse_kernels
    if s.disk_layers:
        plan["disk_layers"] = s.disk_layers
    if c.speculation:
        plan["speculative"] = c.speculation
    if context_note:
        plan["context_note"] = context_note
    if spec is not None:
        from fitplan.strategies.weights_source import weights_source

        weight_bytes = sum(m.weights for m in c.memory.values())
        plan["weights_source"] = weights_source(spec, c.fmt, weight_bytes)
    return plan


def quality_dict(c: Candidate) -> dict[str, Any]:
    own = c.fmt.ppl_increase
    kld = {"kld_mean": c.fmt.kld_mean} if c.fmt.kld_mean is not None else {}
    if own is None or not c.source_loss or not c.converted:
        return {"ppl_increase": own, "source": c.fmt.quality_source, **kld}
    return {"ppl_increase": plan_loss_of(c),
            "source": f"{c.fmt.quality_source}, plus the source file's own {c.source_loss:g} (it carries over)", **kld}


def qat_advice(spec: ModelSpec, c: Candidate) -> dict[str, Any]:
    """Quantization-aware training is advice only: where the catalog names a QAT checkpoint of the model,
    say so, and at 4 bits prefer it to a 4-bit format written from the 16-bit weights (it was trained to
    lose less at 4 bits; fitplan has no figure of how much less, so the plan itself is unchanged)."""
    if spec.source not in ("catalog", "hub"):
        return {}
    from fitplan.advisor.models.catalog import catalog_entry

    entry = catalog_entry(spec.location if spec.source == "catalog" else spec.hub_id or "") or {}
    repos = list(entry.get("qat_hub_ids", ()))
    if not repos:
        return {}
    four_bit = c.fmt.bits == 4 or c.fmt.family == "bnb4" or c.fmt.name.upper().startswith(("Q4_", "IQ4_"))
    advice = (f"prefer {repos[0]}: this model trained for 4 bits (quantization-aware), in place of {c.fmt.name} "
              "written from the 16-bit weights" if four_bit else
              f"at 4 bits, prefer {repos[0]} (trained for 4 bits, quantization-aware) to a 4-bit format written "
              "from the 16-bit weights")
    return {"qat": {"hub_ids": repos, "prefer": four_bit, "advice": advice}}


def predicted_dict(c: Candidate, calibration: Calibration | None = None, now: float | None = None) -> dict[str, Any]:
    """Memory per device, and speed where it was computed, each with its provenance (a calibrated
    speed also with the calibration's age and spread: a reader weighs an old or noisy one less)."""
    out: dict[str, Any] = {"memory": {d: m.as_dict() for d, m in c.memory.items()}}
    if c.setup.tensor_split:
        out["gpu_split"] = {"by": c.split_by, "layers": c.gpu_layer_counts}
    provenance: dict[str, Any] = {"memory": "estimated: exact weight bytes, formula KV cache and buffers, "
                                            "runtime constants from runtimes.toml"}
    if c.speed is not None:
        out.update(c.speed.as_dict())
        provenance["speed"] = c.speed.provenance
        provenance["speed_basis"] = c.speed.basis
        note = _calibration_note(c, calibration, time.time() if now is None else now)
        if note is not None:
            provenance["calibration"] = note
    out["provenance"] = provenance
    return out


def _calibration_note(c: Candidate, calibration: Calibration | None, now: float) -> dict[str, Any] | None:
    if calibration is None or c.speed is None or c.speed.provenance != "calibrated":
        return None
    entry_key = key(c.setup.runtime, c.setup.gpu_layers)
    entry = calibration.entries.get(entry_key)
    return None if entry is None else calibration_note(entry_key, entry, now)


def candidate_dict(c: Candidate, spec: ModelSpec | None = None, calibration: Calibration | None = None
                   ) -> dict[str, Any]:
    return {
        "fits": c.fits, "plan": plan_dict(c, spec=spec),
        "predicted": predicted_dict(c, calibration),
        "quality": quality_dict(c),
        "why": c.reason or "fits",
    }


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The plans no other plan beats on all of speed, quality and memory (largest device total)."""
    def point(c: Candidate) -> tuple[float, float, int]:
        loss = plan_loss_of(c)
        return (-c.timed().decode_tokens_per_s, loss, max(m.total for m in c.memory.values()))

    points = [(c, point(c)) for c in candidates if c.speed is not None]
    front = [c for c, p in points
             if not any(q != p and all(a <= b for a, b in zip(q, p)) for _, q in points)]
    return sorted(front, key=lambda c: point(c))


def advice_document(spec: ModelSpec, hw: HardwareSpec, advice: Advice, *, top: int | None = None,
                    calibration: Calibration | None = None) -> dict[str, Any]:
    """The whole answer; `calibration` (the one the speeds used) adds its age and spread to them."""
    chosen = advice.chosen
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": spec.name, "source": spec.source, "location": spec.location, "hub_id": spec.hub_id,
            "architecture": spec.architecture, "parameters": spec.parameters,
            "active_parameters": spec.active_parameters, "layers": spec.layers,
            "hidden_size": spec.hidden_size, "heads": spec.heads, "kv_heads": spec.kv_heads,
            "head_dim": spec.head_dim, "experts": spec.experts, "experts_per_token": spec.experts_per_token,
            "max_context": spec.max_context, "native_dtype": spec.native_dtype,
            "stored_weight_bytes": spec.stored_bytes,
            "layer_caches": _cache_kinds(spec), "counted": spec.counted_parts or None,
            "notes": list(spec.notes),
        },
        "hardware": {
            "name": hw.name, "detected": hw.detected,
            # reserve: what every plan leaves free on that GPU; a plan may use usable_bytes - reserve
            "gpus": [{"name": g.name, "backend": g.backend, "memory_bytes": g.memory_bytes,
                      "usable_bytes": g.usable_bytes, "reserve": advice.gpu_reserve_bytes,
                      "unified_memory": g.unified_memory} for g in hw.gpus],
            "cpu": {"name": hw.cpu.name, "cores": hw.cpu.cores, "threads": hw.cpu.threads},
            "ram_bytes": hw.ram_bytes, "ram_usable_bytes": hw.ram_usable_bytes,
        },
        "fits": advice.fits,
        "plan": plan_dict(chosen, advice.context_note, spec),
        "predicted": predicted_dict(chosen, calibration),
        "quality": {**quality_dict(chosen), **qat_advice(spec, chosen)},
        "why": chosen.reason or "fits",
        "alternatives": [candidate_dict(c, spec, calibration) for c in advice.alternatives[:top]],
        "pareto": [candidate_dict(c, spec, calibration)
                   for c in pareto_front([advice.chosen, *advice.alternatives] if advice.fits else [])],
        "rejected": [{"candidate": c.label, "reason": c.reason} for c in advice.rejected],
        "excluded": [{"weights": name, "reason": why} for name, why in advice.excluded],
        "scale_out": advice.scale_out.as_dict() if advice.scale_out else None,
    }


def _cache_kinds(spec: ModelSpec) -> dict[str, int]:
    """How many layers cache what: {"full": 12, "recurrent": 36} for Qwen3-Next; a layer reading an
    earlier layer's cache counts as "shared" (Gemma 3n)."""
    kinds: dict[str, int] = {}
    for cache in spec.caches:
        kind = "shared" if cache.shared else cache.kind
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds
