"""Budgets read from markers and defaults: what is limited, to how much, and in which form.

Measured form (no `model=`): the budget applies to what the test does. Predicted form (`model=`):
it applies to fitplan's prediction for that model and pins on the target hardware.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fitplan.advisor.budgets.vocabulary import MARKERS, PIN_FIELDS
from fitplan.errors import BadValueError
from fitplan.units import parse_duration, parse_rate, parse_size

KINDS = tuple(MARKERS)
MARKER_HELP = {
    "fits_vram": "fits_vram(size, *, model=None, hardware=None, **pins): peak GPU memory of the test, or of "
                 "MODEL's predicted plan on HARDWARE, within SIZE (e.g. '12GB'; GB = 10^9, GiB = 2^30)",
    "fits_ram": "fits_ram(size, *, model=None, hardware=None, **pins): peak resident memory growth of the test "
                "(native code and child processes included), or of MODEL's predicted plan, within SIZE",
    "max_latency": "max_latency(duration, *, percentile=50): the test's time (fitplan_timer samples, else its "
                   "call phase) within DURATION (e.g. '200ms')",
    "min_tokens_per_s": "min_tokens_per_s(rate, *, model=None, hardware=None, **pins): tokens/s recorded by "
                        "fitplan_model / fitplan_meter, or MODEL's predicted decode rate, at least RATE",
}


@dataclass(frozen=True)
class Budget:
    kind: str
    limit: float  # bytes, seconds or tokens/s
    limit_text: str
    origin: str  # "marker" or the option/ini key that set a default
    model: str | None = None
    hardware: str | None = None
    pins: tuple[tuple[str, Any], ...] = ()
    percentile: float = 50.0

    @property
    def predicted(self) -> bool:
        return self.model is not None


def parse_marker(kind: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], test: str) -> Budget:
    """A Budget from one marker; a bad value names the marker and the test and quotes the value."""
    where = f"@pytest.mark.{kind} on {test}"
    if len(args) != 1:
        raise BadValueError(f"{where}: takes exactly one limit, got {len(args)} positional values")
    limit_text = args[0]
    extra = dict(kwargs)
    model, hardware = extra.pop("model", None), extra.pop("hardware", None)
    percentile = 50.0
    if kind == "max_latency":
        percentile = extra.pop("percentile", 50)
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
            raise BadValueError(f"{where}: percentile={percentile!r} must be a number in (0, 100]")
        given = sorted({*extra, *(["model"] if model is not None else []), *(["hardware"] if hardware is not None else [])})
        if given:
            raise BadValueError(f"{where}: takes only percentile=, not {given[0]}=")
    unknown = sorted(set(extra) - set(PIN_FIELDS))
    if unknown:
        raise BadValueError(f"{where}: unknown argument {unknown[0]}=; pins are {', '.join(PIN_FIELDS)}")
    if extra and model is None:
        raise BadValueError(f"{where}: pins ({', '.join(sorted(extra))}) need model=")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise BadValueError(f"{where}: model={model!r} must be a catalog name or a local path")
    if hardware is not None and (not isinstance(hardware, str) or not hardware.strip()):
        raise BadValueError(f"{where}: hardware={hardware!r} must be a profile name, Nx<name> or a .toml path")
    if extra:
        from fitplan.advisor.budgets.budget_file import check_pins

        check_pins(extra, where)
    return Budget(kind, parse_limit(kind, limit_text, where), str(limit_text), "marker", model, hardware,
                  tuple(sorted(extra.items())), float(percentile))


def parse_limit(kind: str, value: object, where: str) -> float:
    if kind in ("fits_vram", "fits_ram"):
        return float(parse_size(value, source=where))
    if kind == "max_latency":
        return parse_duration(value, source=where)
    return parse_rate(value, source=where)
