"""The plan fitplan predicts for a model and pins on a target hardware: what budgets are held
against, in the pytest plugin's predicted form and in `fitplan check`.

Fast and offline: catalog names or local files only, nothing downloaded; each (model, hardware,
pins) is solved once per process. A VRAM budget places every layer on the GPU unless offload is
pinned: a budget that offloading could always meet would gate nothing. Without a weights pin the
model is weighed as shipped (its native format).
"""
from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec

if TYPE_CHECKING:
    from fitplan.advisor.planner.calibration import Calibration
    from fitplan.model_spec import ModelSpec
    from fitplan.profiles.probes import MachineProbes


@cache
def hardware(name: str) -> HardwareSpec:
    from fitplan.profiles.named import hardware as by_name

    return by_name(name, source="fitplan hardware")


@cache
def model_spec(model: str, allow_hub: bool = False) -> Any:
    """A catalog name or a local file or folder; a hub id only where the caller allows the network
    (`fitplan check`: config and safetensors headers, cached; never in tests' predicted budgets)."""
    from fitplan.advisor.models.catalog import catalog_spec
    from fitplan.advisor.models.resolve import resolve_model

    if not allow_hub and catalog_spec(model) is None and not os.path.exists(model):
        raise BadValueError(f"model={model!r}: predicted budgets take a catalog name or a local file or folder "
                            "(nothing is downloaded for a budget); 'fitplan models' lists the catalog")
    return resolve_model(model)


@cache
def predicted_plan(model: str, hardware_name: str, pins: tuple[tuple[str, Any], ...], all_on_gpu: bool,
                   allow_hub: bool = False) -> Any:
    """(spec, hardware, advice) for MODEL with `pins` on the named hardware."""
    from fitplan.advisor.planner.solver import Request, advise
    from fitplan.strategies.registry import normalize_runtime, weight_format
    from fitplan.units import parse_reserve

    spec, hw = model_spec(model, allow_hub), hardware(hardware_name)
    p = dict(pins)
    runtime = normalize_runtime(p["runtime"]) if "runtime" in p else None
    weights = p.get("weights") or native_format(spec, runtime)
    gpu_layers = _count(p, "gpu_layers", minimum=0)
    if gpu_layers is None and all_on_gpu and not p.get("offload"):
        gpu_layers = spec.layers
    request = Request(
        context=_count(p, "context"), batch=_count(p, "batch") or 1, threads=_count(p, "threads"),
        runtime=runtime, weights=weight_format(weights, source="weights=", runtime=runtime).name,
        kv_cache=p.get("kv_cache"), gpu_layers=gpu_layers,
        reserve=parse_reserve(p["reserve"], source="reserve=") if "reserve" in p else None,
    )
    probes, calibration = speed_context(hw)
    return spec, hw, advise(spec, hw, request, probes=probes, calibration=calibration)


def with_reserve(pins: tuple[tuple[str, Any], ...], reserve: str | None) -> tuple[tuple[str, Any], ...]:
    """`pins` with a default reserve (--reserve, --fitplan-reserve) where they set none of their own."""
    if reserve is None or "reserve" in dict(pins):
        return pins
    return tuple(sorted((*pins, ("reserve", reserve))))


def speed_context(hw: HardwareSpec) -> tuple[MachineProbes | None, Calibration | None]:
    from fitplan.advisor.planner.estimate import machine_context

    return machine_context(hw)


def _count(pins: dict[str, Any], key: str, minimum: int = 1) -> int | None:
    value = pins.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadValueError(f"{key}={value!r} must be a whole number >= {minimum}")
    return value


def native_format(spec: ModelSpec, runtime: str | None) -> str:
    if spec.source == "gguf" and runtime in (None, "llama.cpp"):
        return spec.native_dtype
    return spec.native_dtype if spec.native_dtype in ("fp32", "bf16", "fp16") else "bf16"
