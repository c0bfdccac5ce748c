"""Which machine? One model's best plan on several profiles side by side (`advise --compare`), and every
named profile ranked against a requirement (`fitplan hardware --for`).

`--compare` runs the whole solver on each profile. `hardware --for` answers for every profile in a few
seconds, so it weighs llama.cpp only (the runtime that runs on every backend a profile names: CUDA,
ROCm, Metal, Vulkan, SYCL and the CPU) at the GGUF ladder Q8_0 ... Q2_K, the fastest format within
the quality bound chosen, as `advise` chooses; `advise MODEL --hardware NAME` weighs every runtime.

Ranking: the profiles that meet the requirement first, the smallest machine (its GPU memory, or RAM
where it has no GPU) first, then by price; then the ones that fit but miss it, fastest first; then
the ones it does not fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fitplan.advisor.planner.solver import Request, advise, device_capacity, fits_with, plan_loss_of
from fitplan.errors import FitplanError

if TYPE_CHECKING:
    from fitplan.advisor.planner.candidates import Advice, Candidate
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.model_spec import ModelSpec

RUNTIME = "llama.cpp"
LADDER = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")  # best quality first


@dataclass
class MachineRow:
    """One machine's answer, in the few figures a buyer compares."""

    hardware: str
    fits: bool
    meets: bool  # fits, within the quality bound, and as fast as asked
    size_bytes: int  # GPU memory (the unified working set), or RAM without a GPU: "the smallest" ranks by it
    format: str | None = None
    placement: str = ""
    context: int = 0
    max_context: int | None = None  # the longest context this plan's format and placement hold
    decode_tokens_per_s: float | None = None
    prefill_tokens_per_s: float | None = None
    ppl_increase: float | None = None
    headroom_bytes: int | None = None  # the least memory left on a device the plan uses
    limit: str = ""  # what bounds it: the device decode waits on, or why it does not fit or meet
    backends: list[str] = field(default_factory=list)
    price_usd: float | None = None
    price_date: str = ""
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def machine_size(hw: HardwareSpec) -> int:
    return sum(g.memory_bytes for g in hw.gpus) if hw.gpus else hw.ram_bytes


def summary(spec: ModelSpec, hw: HardwareSpec, advice: Advice, request: Request) -> MachineRow:
    """The figures of `advice` a side-by-side table shows."""
    c = advice.chosen
    row = MachineRow(hw.name, advice.fits, advice.fits and not c.reason, machine_size(hw),
                     backends=sorted({g.backend for g in hw.gpus}), price_usd=hw.price_usd, price_date=hw.price_date)
    row.format, row.placement, row.context = c.fmt.name, _placement(c, hw), c.setup.context
    row.ppl_increase = plan_loss_of(c) if c.fmt.ppl_increase is not None else None
    if c.speed is not None:
        row.decode_tokens_per_s, row.prefill_tokens_per_s = c.speed.decode_tokens_per_s, c.speed.prefill_tokens_per_s
        unknown = _no_flop_rate(c, hw)
        if unknown:  # the roofline would fall back to an assumed rate: no figure beats a made-up one
            row.prefill_tokens_per_s = None
            row.notes.append(f"prefill not predicted: the profile gives no tensor FLOP/s for {unknown}")
    if not advice.fits:
        row.reason = row.limit = c.reason or "does not fit"
        return row
    row.max_context = largest_context(spec, hw, request, c)
    row.headroom_bytes = min(device_capacity(d, hw, request) - m.total for d, m in c.memory.items()
                             if d != "disk" and m.total)
    row.limit = c.reason or _bound(c, hw)
    row.reason = c.reason
    return row


def _no_flop_rate(c: Candidate, hw: HardwareSpec) -> str:
    """The GPU holding layers of the plan whose profile gives no rate its prompt matmuls are timed by
    (speed_terms.kernel_tflops: FP16, or half the INT8 rate on NVIDIA), if any."""
    from fitplan.strategies.speed_terms import kernel_tflops

    for i, gpu in enumerate(hw.gpus):
        if f"gpu{i}" in c.memory and c.memory[f"gpu{i}"].weights and kernel_tflops(gpu) is None:
            return gpu.name
    return ""


def largest_context(spec: ModelSpec, hw: HardwareSpec, request: Request, c: Candidate) -> int:
    """The longest context (tokens per sequence) at which the plan, unchanged otherwise, still fits."""
    low, high = c.setup.context, spec.max_context
    if fits_with(spec, hw, request, c, context=high):
        return high
    while high - low > max(1, low // 64):  # to within 1.5%: a context is a round number anyway
        mid = (low + high) // 2
        if fits_with(spec, hw, request, c, context=mid):
            low = mid
        else:
            high = mid
    return low


def _bound(c: Candidate, hw: HardwareSpec) -> str:
    speed = c.speed
    device = speed.decode_bound_by if speed is not None else ""
    if device.startswith("gpu"):
        gpu = hw.gpus[int(device[3:])]
        return f"decode: {device} ({gpu.name}) memory bandwidth"
    if device == "cpu":
        on_cpu = c.layers - c.setup.gpu_layers
        return f"decode: host memory bandwidth ({on_cpu} of {c.layers} layers on the CPU)" if hw.gpus and on_cpu \
            else "decode: host memory bandwidth"
    return f"decode: {device}" if device else ""


def _placement(c: Candidate, hw: HardwareSpec) -> str:
    """survey's few words for the placement, with the GPU count and how the layers split over unequal cards."""
    from fitplan.advisor.planner.survey import placement_words

    s = c.setup
    where = f"{s.gpus} GPUs" if c.placement == "gpu" and s.gpus > 1 else placement_words(c, c.layers)
    if s.tensor_split:
        where += f" {c.gpu_shares} by {c.split_by}"
    return where


def compare(spec: ModelSpec, machines: list[HardwareSpec], request: Request) -> list[tuple[HardwareSpec, Advice]]:
    """The full advice on each machine, in the order given."""
    return [(hw, advise(spec, hw, request)) for hw in machines]


def rank_profiles(spec: ModelSpec, machines: list[HardwareSpec], *, context: int | None = None,
                  min_tokens_per_s: float | None = None, max_ppl_increase: float | None = None) -> list[MachineRow]:
    """Every machine against the requirement, ranked (the module docstring says how)."""
    rows = [_ladder_row(spec, hw, context, min_tokens_per_s, max_ppl_increase) for hw in machines]

    def rank(r: MachineRow) -> tuple[Any, ...]:
        if r.meets:
            return (0, r.size_bytes, r.price_usd or float("inf"), r.hardware)
        if r.fits:
            return (1, -(r.decode_tokens_per_s or 0.0), r.hardware)
        return (2, -r.size_bytes, r.hardware)
    return sorted(rows, key=rank)


def cheapest(rows: list[MachineRow]) -> MachineRow | None:
    priced = [r for r in rows if r.meets and r.price_usd is not None]
    return min(priced, key=lambda r: (r.price_usd, r.size_bytes)) if priced else None


def _ladder_row(spec: ModelSpec, hw: HardwareSpec, context: int | None, rate: float | None,
                bound: float | None) -> MachineRow:
    """The smallest ladder format within the bound: decode reads every weight byte, so where it fits it
    is the fastest format within the bound (larger ones hold less on the GPUs). Where it does not fit,
    the largest format beyond the bound that does, named as such; else its miss, which says by how much."""
    from fitplan.advisor.planner.solver import default_bound, scaled_prior
    from fitplan.strategies.registry import weight_format

    limit = bound if bound is not None else default_bound(spec)
    within = [n for n in LADDER if (scaled_prior(weight_format(n), spec).ppl_increase or 0.0) <= limit] or [LADDER[0]]
    beyond = [n for n in LADDER if n not in within]
    last: tuple[Advice, Request] | None = None
    for name in [within[-1], *beyond]:
        request = Request(context=context, runtime=RUNTIME, weights=name, min_tokens_per_s=rate)
        try:
            advice = advise(spec, hw, request)
        except FitplanError:  # a format this machine cannot run: the next one
            continue
        if advice.fits:
            row = summary(spec, hw, advice, request)
            loss = plan_loss_of(advice.chosen)
            if loss > limit:
                row.meets = False
                row.reason = row.limit = f"fits only at {name} (perplexity +{loss:.3f} > the bound {limit:.3f})"
            return row
        last = last or (advice, request)
    if last is None:
        return MachineRow(hw.name, False, False, machine_size(hw), reason="no GGUF format runs here",
                          limit="no GGUF format runs here")
    return summary(spec, hw, *last)
