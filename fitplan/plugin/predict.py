"""The predicted form of a budget: fitplan's plan for MODEL + pins on the target hardware.

Fast and offline: catalog names or local files only, nothing downloaded; each (model, hardware,
pins) is solved once per session. A VRAM budget places every layer on the GPU unless offload is
pinned: a budget that offloading could always meet would gate nothing. Without a weights pin the
model is weighed as shipped (its native format).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fitplan.errors import BadValueError
from fitplan.plugin.budgets import Budget
from fitplan.units import format_bytes


@dataclass(frozen=True)
class Prediction:
    value: float
    detail: str  # the parts behind the figure, for the failure line
    hardware: str


@lru_cache(maxsize=None)
def hardware(name: str) -> Any:
    if name == "auto":
        from fitplan.profiles.detect import detect

        return detect()
    from fitplan.profiles.named import load_profile

    return load_profile(name, source="fitplan hardware")


@lru_cache(maxsize=None)
def _spec(model: str) -> Any:
    from fitplan.advisor.catalog import catalog_spec
    from fitplan.advisor.resolve import resolve_model

    if catalog_spec(model) is None and not os.path.exists(model):
        raise BadValueError(f"model={model!r}: predicted budgets take a catalog name or a local file or folder "
                            "(nothing is downloaded in tests); 'fitplan models' lists the catalog")
    return resolve_model(model)


@lru_cache(maxsize=None)
def _plan(model: str, hardware_name: str, pins: tuple[tuple[str, Any], ...], all_on_gpu: bool) -> Any:
    from fitplan.advisor.solver import Request, advise, normalize_runtime
    from fitplan.strategies.quantization import weight_format

    spec, hw = _spec(model), hardware(hardware_name)
    p = dict(pins)
    runtime = normalize_runtime(p["runtime"]) if "runtime" in p else None
    weights = p.get("weights") or _native_format(spec, runtime)
    gpu_layers = _count(p, "gpu_layers", minimum=0)
    if gpu_layers is None and all_on_gpu and not p.get("offload"):
        gpu_layers = spec.layers
    request = Request(
        context=_count(p, "context"), batch=_count(p, "batch") or 1, threads=_count(p, "threads"),
        runtime=runtime, weights=weight_format(weights, source="weights=", runtime=runtime).name,
        kv_cache=p.get("kv_cache"), gpu_layers=gpu_layers,
    )
    probes, calibration = speed_context(hw)
    return spec, hw, advise(spec, hw, request, probes=probes, calibration=calibration)


def speed_context(hw: Any) -> tuple[Any, Any]:
    from fitplan.advisor.estimate import machine_context

    return machine_context(hw)


def _count(pins: dict[str, Any], key: str, minimum: int = 1) -> int | None:
    value = pins.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadValueError(f"{key}={value!r} must be a whole number >= {minimum}")
    return value


def _native_format(spec: Any, runtime: str | None) -> str:
    if spec.source == "gguf" and runtime in (None, "llama.cpp"):
        return spec.native_dtype
    return spec.native_dtype if spec.native_dtype in ("fp32", "bf16", "fp16") else "bf16"


def predict(budget: Budget, default_hardware: str | None) -> Prediction:
    """The predicted figure a budget is held against, with the parts that make it up."""
    hw_name = budget.hardware or default_hardware or "auto"
    assert budget.model is not None
    spec, hw, advice = _plan(budget.model, hw_name, budget.pins, budget.kind == "fits_vram")
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
