"""Runtime efficiency factors fitted to a short real run on this machine, cached per machine.

A runtime probe runs the model itself (16 prompt + 16 generated tokens by default) and compares
with the speed model at efficiency 1: since every predicted time scales with 1/efficiency, the
ratio measured / predicted is the efficiency. Keyed by runtime and device kind ("cpu" or "gpu").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from fitplan.atomic_file import write_atomic
from fitplan.cachedir import cache_dir
from fitplan.errors import RunFailedError

if TYPE_CHECKING:
    from fitplan.advisor.planner.speed import SpeedPrediction
    from fitplan.model_spec import ModelSpec
    from fitplan.plan_spec import Setup


class CalibrationEntry(BaseModel):
    decode: float
    prefill: float
    model: str
    weights: str
    threads: int
    measured_decode_tokens_per_s: float
    measured_prefill_tokens_per_s: float
    created_unix: float


class Calibration(BaseModel):
    schema_version: int = 1
    fingerprint: str
    entries: dict[str, CalibrationEntry] = {}


def key(runtime: str, gpu_layers: int) -> str:
    return f"{runtime}/{'gpu' if gpu_layers else 'cpu'}"


def _path(fingerprint: str) -> Path:
    return cache_dir() / f"calibration-{fingerprint}.json"


def load_calibration(fingerprint: str) -> Calibration:
    """The cached calibration, or an empty one when missing or unreadable (never an error)."""
    try:
        data = Calibration.model_validate_json(_path(fingerprint).read_text(encoding="utf-8"))
        if data.fingerprint == fingerprint and data.schema_version == 1:
            return data
    except (OSError, ValidationError, ValueError):
        pass
    return Calibration(fingerprint=fingerprint)


def save_entry(fingerprint: str, entry_key: str, entry: CalibrationEntry) -> None:
    calibration = load_calibration(fingerprint)
    calibration.entries[entry_key] = entry
    write_atomic(_path(fingerprint), calibration.model_dump_json(indent=2))


def fit_entry(spec: ModelSpec, setup: Setup, predicted_at_one: SpeedPrediction, measured: dict[str, Any]) -> CalibrationEntry:
    """Efficiencies from a run: measured rate / rate predicted at efficiency 1."""
    summary = summarize_runs(measured["runs"])
    if "decode_tokens_per_s" not in summary or "prefill_tokens_per_s" not in summary:
        raise RunFailedError("the runtime probe's run generated no tokens to time")
    decode = summary["decode_tokens_per_s"]["median"]
    prefill = summary["prefill_tokens_per_s"]["median"]
    return CalibrationEntry(
        decode=decode / predicted_at_one.decode_tokens_per_s, prefill=prefill / predicted_at_one.prefill_tokens_per_s,
        model=spec.name, weights=setup.weights, threads=setup.threads,
        measured_decode_tokens_per_s=decode, measured_prefill_tokens_per_s=prefill, created_unix=time.time(),
    )


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each speed figure over the repeats (the machine is noisy)."""
    import statistics

    figures = {
        "prefill_tokens_per_s": [r["prompt_tokens"] / r["prefill_s"] for r in runs],
        "decode_tokens_per_s": [(r["generated"] - 1) / r["decode_s"] for r in runs if r["generated"] > 1],
        "ttft_s": [r["ttft_s"] for r in runs],
    }
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in figures.items() if v}
