"""The predicted form of a budget: fitplan's plan for MODEL + pins on the target hardware
(advisor/budgets/predicted.py solves it, the same way `fitplan check` does)."""
from __future__ import annotations

from dataclasses import dataclass

from fitplan.advisor.budgets.predicted import predicted_plan, with_reserve
from fitplan.plugin.budgets import Budget
from fitplan.units import format_bytes


@dataclass(frozen=True)
class Prediction:
    value: float
    detail: str  # the parts behind the figure, for the failure line
    hardware: str


def predict(budget: Budget, default_hardware: str | None, default_reserve: str | None = None) -> Prediction:
    """The predicted figure a budget is held against, with the parts that make it up; the reserve its
    plan leaves free on each GPU is the marker's reserve=, else `default_reserve`, else the default."""
    hw_name = budget.hardware or default_hardware or "auto"
    assert budget.model is not None
    pins = with_reserve(budget.pins, default_reserve)
    spec, hw, advice = predicted_plan(budget.model, hw_name, pins, budget.kind == "fits_vram")
    chosen, label = advice.chosen, hw.name
    if budget.kind == "min_tokens_per_s":
        return Prediction(chosen.speed.decode_tokens_per_s,
                          f"{chosen.setup.runtime} {chosen.setup.weights}, {chosen.speed.provenance}", label)
    if budget.kind == "fits_vram":
        gpus = {d: m for d, m in chosen.memory.items() if d.startswith("gpu")}
        if not gpus:
            return Prediction(0.0, "no GPU in this plan", label)
        device, memory = max(gpus.items(), key=lambda kv: kv[1].total)
    else:
        device, memory = "cpu", chosen.memory["cpu"]
    parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in memory.as_dict().items() if k != "total" and v)
    return Prediction(float(memory.total), f"{device}: {parts}", label)
