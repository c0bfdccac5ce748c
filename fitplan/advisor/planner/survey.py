"""What can I run here? Every catalog model on one machine: its best llama.cpp plan, or why none fits.

A full `advise` weighs every runtime x format x placement (~0.2-1 s a model); a survey of the whole
catalog weighs llama.cpp (the runtime that runs every catalog architecture from one GGUF, on GPUs, the
CPU or both) at three formats, in this order: Q4_K_M (the default quality bound); Q8_0 where Q4_K_M
sits on the GPUs whole (near-lossless at full GPU speed); Q2_K where Q4_K_M does not fit at all.
`advise MODEL` then weighs the rest for the model picked.

Ranking: models that fit and meet --min-tokens-per-s first, the largest (most parameters) first;
then those that fit but are slower; then those that do not fit, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fitplan.advisor.planner.solver import Request, advise
from fitplan.errors import FitplanError

if TYPE_CHECKING:
    from fitplan.advisor.planner.candidates import Advice, Candidate
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.model_spec import ModelSpec

RUNTIME = "llama.cpp"
FIRST, HIGHER, LOWER = "Q4_K_M", "Q8_0", "Q2_K"


@dataclass
class SurveyRow:
    name: str
    family: str
    parameters: int
    active_parameters: int
    fits: bool
    meets_rate: bool
    format: str | None = None
    placement: str = ""
    gpu_layers: int = 0
    layers: int = 0
    decode_tokens_per_s: float | None = None
    prefill_tokens_per_s: float | None = None
    memory_bytes: dict[str, int] | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def survey(hw: HardwareSpec, *, context: int | None = None, min_tokens_per_s: float | None = None,
           family: str | None = None) -> list[SurveyRow]:
    """Every catalog model (of `family`, if given) on `hw`, ranked (see the module docstring)."""
    from fitplan.advisor.models.catalog import all_entries, entry_spec

    rows = []
    for entry in all_entries():
        if family and entry.get("family", "").lower() != family.lower():
            continue
        spec = entry_spec(entry)
        rows.append(_row(spec, entry.get("family", ""), hw, context, min_tokens_per_s))
    return sorted(rows, key=lambda r: (not r.fits, not r.meets_rate, -r.parameters, r.name))


def _row(spec: ModelSpec, family: str, hw: HardwareSpec, context: int | None, rate: float | None) -> SurveyRow:
    base = SurveyRow(spec.name, family, spec.parameters, spec.active_parameters, False, False, layers=spec.layers)
    try:
        advice = _advise(spec, hw, context, FIRST)
        if advice.fits and _whole_on_gpus(advice, spec, hw):
            higher = _advise(spec, hw, context, HIGHER)
            if higher.fits and _whole_on_gpus(higher, spec, hw) and _meets(higher, rate):
                advice = higher
        elif not advice.fits:
            lower = _advise(spec, hw, context, LOWER)
            advice = lower if lower.fits else advice
    except FitplanError as exc:
        base.reason = str(exc)
        return base
    c = advice.chosen
    base.format, base.gpu_layers = c.fmt.name, c.setup.gpu_layers
    base.memory_bytes = {device: m.total for device, m in c.memory.items()}
    if c.speed is not None:
        base.decode_tokens_per_s, base.prefill_tokens_per_s = c.speed.decode_tokens_per_s, c.speed.prefill_tokens_per_s
    base.placement = placement_words(c, spec.layers)
    base.fits = advice.fits
    base.meets_rate = advice.fits and _meets(advice, rate)
    if not advice.fits:
        base.reason = c.reason or "does not fit"
    elif not base.meets_rate:
        base.reason = f"decode {base.decode_tokens_per_s:.1f} tok/s is below --min-tokens-per-s {rate:g}"
    return base


def _advise(spec: ModelSpec, hw: HardwareSpec, context: int | None, fmt: str) -> Advice:
    return advise(spec, hw, Request(context=context, runtime=RUNTIME, weights=fmt))


def _whole_on_gpus(advice: Advice, spec: ModelSpec, hw: HardwareSpec) -> bool:
    return bool(hw.gpus) and advice.chosen.placement == "gpu"


def _meets(advice: Advice, rate: float | None) -> bool:
    speed = advice.chosen.speed
    return rate is None or (speed is not None and speed.decode_tokens_per_s >= rate)


def placement_words(c: Candidate, layers: int) -> str:
    """Where the blocks go, in a few words (Candidate.placement's kinds)."""
    kind, s = c.placement, c.setup
    return {"split": f"GPU+CPU {s.gpu_layers}/{layers}", "experts-cpu": f"GPU, CPU experts {s.cpu_moe_layers}/{layers}",
            "exact": "GPU+CPU tensors", "cpu": "CPU", "gpu": "GPU", "disk": f"GPU+CPU+disk {s.disk_layers}"}[kind]


LOW_BITS = ("Q3_", "Q2_", "IQ3", "IQ2", "IQ1", "TQ")  # the formats where a smaller sibling usually wins


def smaller_sibling(spec: ModelSpec, hw: HardwareSpec, advice: Advice, request: Request) -> dict[str, Any] | None:
    """The largest smaller catalog sibling (same family) that runs at Q8_0 on `hw`, where the asked model
    runs only at 3 bits or below, or not at all: picking the distilled sibling at high precision often
    beats squeezing the big one (distillation's practical form). Both quality priors are named."""
    from fitplan.advisor.models.catalog import all_entries, catalog_entry, entry_spec

    chosen = advice.chosen
    low = not advice.fits or chosen.fmt.name.upper().startswith(LOW_BITS)
    entry = catalog_entry(spec.name) if spec.source == "catalog" else None
    if not low or entry is None or not entry.get("family"):
        return None
    siblings = [e for e in all_entries() if e.get("family") == entry["family"] and e["name"] != entry["name"]]
    for sibling in sorted((entry_spec(e) for e in siblings), key=lambda s: -s.parameters):
        if sibling.parameters >= spec.parameters:
            continue
        try:
            found = advise(sibling, hw, replace(request, runtime=RUNTIME, weights=HIGHER, draft=None, min_tokens_per_s=None))
        except FitplanError:
            continue
        if found.fits:
            c = found.chosen
            return {"name": sibling.name, "parameters": sibling.parameters, "weights": c.fmt.name,
                    "ppl_increase": c.fmt.ppl_increase, "quality_source": c.fmt.quality_source,
                    "decode_tokens_per_s": round(c.speed.decode_tokens_per_s, 3) if c.speed else None,
                    "instead_of": {"name": spec.name, "weights": chosen.fmt.name if advice.fits else None,
                                   "ppl_increase": chosen.fmt.ppl_increase if advice.fits else None}}
    return None
