"""Runtime efficiency factors fitted to a short real run on this machine, cached per machine.

A runtime probe runs the model itself, several times (verify_command.calibrate_runtime), and
compares with the speed model at efficiency 1: since every predicted time scales with 1/efficiency,
the ratio measured / predicted is the efficiency. Keyed by runtime and device kind ("cpu" or "gpu").

Only a probe of a quiet machine is cached (issue 13, item 6: one run beside a busy core cached
2.2 tok/s for a 96 tok/s model, and every later figure was 0.14x the truth): each figure is the
median of its best runs, and `refusal` turns a probe away when those runs spread too far or other
processes used the CPUs meanwhile. docs/speed.md gives the limits and why.
"""
from __future__ import annotations

from dataclasses import dataclass
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

# 2: every entry says how it was judged (runs, spread, other processes' CPU use). A schema-1 file is
# ignored: it was one unjudged run, possibly of a busy machine, and `advise --probe` measures again.
SCHEMA_VERSION = 2
KEEP_BEST = 3  # the runs each figure is taken from: the fastest, least disturbed


@dataclass(frozen=True)
class ProbeLimits:
    """When a runtime probe is trusted enough to cache (docs/speed.md: the numbers and why)."""

    spread: float = 0.15  # (best - worst) / best of the kept runs, decode or prefill
    others_share: float = 0.15  # other processes' CPU time, as a share of the CPUs we may use
    min_runs: int = 2  # a spread needs two


class CalibrationEntry(BaseModel):
    decode: float
    prefill: float
    model: str
    weights: str
    threads: int
    measured_decode_tokens_per_s: float  # median of the best runs
    measured_prefill_tokens_per_s: float
    created_unix: float
    runs: int  # runs measured
    kept: int  # best runs each figure is taken from
    decode_spread: float  # (best - worst) / best of the kept runs
    prefill_spread: float
    others_cores: float | None  # other processes' mean CPU use during the runs; None where unreadable
    cpus: int | None  # the CPUs that share was measured on
    probe_s: float  # the runtime probe's wall time

    @property
    def spread(self) -> float:
        return max(self.decode_spread, self.prefill_spread)


class Calibration(BaseModel):
    schema_version: int = SCHEMA_VERSION
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
        if data.fingerprint == fingerprint and data.schema_version == SCHEMA_VERSION:
            return data
    except (OSError, ValidationError, ValueError):
        pass
    return Calibration(fingerprint=fingerprint)


def save_entry(fingerprint: str, entry_key: str, entry: CalibrationEntry) -> None:
    calibration = load_calibration(fingerprint)
    calibration.entries[entry_key] = entry
    write_atomic(_path(fingerprint), calibration.model_dump_json(indent=2))


def fit_entry(spec: ModelSpec, setup: Setup, predicted_at_one: SpeedPrediction, measured: dict[str, Any], *,
              probe_s: float, created_unix: float) -> CalibrationEntry:
    """Efficiencies from the probe's runs: the best runs' median rate / rate predicted at efficiency 1."""
    best = best_runs(measured["runs"])
    if "decode_tokens_per_s" not in best or "prefill_tokens_per_s" not in best:
        raise RunFailedError("the runtime probe's run generated no tokens to time")
    decode, prefill = best["decode_tokens_per_s"], best["prefill_tokens_per_s"]
    cpu = measured.get("cpu") or {}
    return CalibrationEntry(
        decode=decode.median / predicted_at_one.decode_tokens_per_s,
        prefill=prefill.median / predicted_at_one.prefill_tokens_per_s,
        model=spec.name, weights=setup.weights, threads=setup.threads,
        measured_decode_tokens_per_s=decode.median, measured_prefill_tokens_per_s=prefill.median,
        created_unix=created_unix, runs=len(measured["runs"]), kept=decode.kept,
        decode_spread=decode.spread, prefill_spread=prefill.spread,
        others_cores=cpu.get("others_cores"), cpus=cpu.get("cpus"), probe_s=probe_s,
    )


@dataclass(frozen=True)
class BestOf:
    """A rate's best runs: their median, and how far apart they are."""

    median: float
    spread: float  # (best - worst) / best, over the kept runs
    kept: int


def best_of(rates: list[float], keep: int = KEEP_BEST) -> BestOf:
    """The `keep` highest rates: contention only ever slows a run, so the fastest are the least disturbed."""
    import statistics  # not at import: advise's cold start loads this module

    best = sorted(rates, reverse=True)[:keep]
    return BestOf(statistics.median(best), (best[0] - best[-1]) / best[0], len(best))


def best_runs(runs: list[dict[str, Any]], keep: int = KEEP_BEST) -> dict[str, BestOf]:
    """Decode and prefill rates of the runs, each taken from its own best `keep` runs."""
    rates = _rates(runs)
    return {k: best_of(v, keep) for k, v in rates.items() if k != "ttft_s" and v}


def refusal(entry: CalibrationEntry, limits: ProbeLimits = ProbeLimits()) -> str | None:
    """Why this probe must not be cached (one line, each failed limit named), or None to cache it."""
    reasons = []
    if entry.runs < limits.min_runs:
        reasons.append(f"only {entry.runs} run in {entry.probe_s:.0f} s (a spread needs {limits.min_runs})")
    elif entry.spread > limits.spread:
        reasons.append(f"runs spread {entry.spread:.0%} (limit {limits.spread:.0%})")
    if entry.others_cores is not None and entry.cpus and entry.others_cores > limits.others_share * entry.cpus:
        reasons.append(f"other processes used {entry.others_cores:.1f} of {entry.cpus} cores "
                       f"(limit {limits.others_share * entry.cpus:.1f})")
    return " and ".join(reasons) or None


def age_text(seconds: float) -> str:
    """'3 days old', '5 hours old', '1 minute old': what a reader weighs a calibration by."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count = int(seconds // size)
        if count >= 1:
            return f"{count} {unit}{'s' if count > 1 else ''} old"
    return "under a minute old"


def calibration_note(entry_key: str, entry: CalibrationEntry, now: float) -> dict[str, Any]:
    """What a calibrated figure rests on, for advise's JSON provenance and its table."""
    age_s = max(0.0, now - entry.created_unix)
    return {
        "key": entry_key, "model": entry.model, "created_unix": entry.created_unix, "age_s": round(age_s),
        "spread": round(entry.spread, 4), "runs": entry.runs, "kept": entry.kept,
        "others_cores": None if entry.others_cores is None else round(entry.others_cores, 2), "cpus": entry.cpus,
        "summary": f"this machine, {age_text(age_s)}, spread {entry.spread:.0%}",
    }


def _rates(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {
        "prefill_tokens_per_s": [r["prompt_tokens"] / r["prefill_s"] for r in runs],
        "decode_tokens_per_s": [(r["generated"] - 1) / r["decode_s"] for r in runs if r["generated"] > 1],
        "ttft_s": [r["ttft_s"] for r in runs],
    }


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each speed figure over the repeats (the machine is noisy)."""
    import statistics

    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in _rates(runs).items() if v}
