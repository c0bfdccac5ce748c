"""Weight pruning (unstructured magnitude at a ratio, or 2:4): its effects where fitplan runs models.

Memory and speed change only where a kernel exploits the zeros; fitplan's runtimes use dense
kernels, so a pruned plan is as large and as fast as the dense one, and only its quality changes
(measured here, data/pruning.toml). The solver never proposes pruning; `--prune` pins it and the
plan says what it costs.
"""
from __future__ import annotations

from typing import Any

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError


def parse_prune(text: str) -> tuple[str, float]:
    """"2:4" or "unstructured:0.5" -> (pattern, ratio of weights zeroed)."""
    value = text.strip().lower()
    if value == "2:4":
        return "2:4", 0.5
    kind, _, ratio = value.partition(":")
    try:
        share = float(ratio)
    except ValueError:
        share = -1.0
    if kind != "unstructured" or not 0 < share < 1:
        raise BadValueError(f"bad --prune {text!r}: expected 2:4 or unstructured:RATIO with 0 < RATIO < 1, e.g. unstructured:0.5")
    return "unstructured", share


def effects(pattern: str, ratio: float) -> dict[str, Any]:
    row = load_table("fitplan.strategies.data", "pruning.toml")[pattern]
    quality: dict[str, Any] = {"source": "measured on SmolLM2-135M, magnitude pruning, no retraining (data/pruning.toml)"}
    if pattern == "2:4":
        quality["perplexity_ratio"] = row["measured_ratio"]
    elif abs(ratio - 0.5) < 1e-9:
        quality["perplexity_ratio"] = row["measured_ratio_50"]
    else:
        quality["perplexity_ratio"] = None
        quality["note"] = "measured at 50% only; other ratios are not measured"
    return {"pattern": pattern, "ratio": ratio, "memory": row["memory"], "speed": row["speed"], "quality": quality}
