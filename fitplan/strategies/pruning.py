"""Weight pruning (unstructured magnitude at a ratio, or 2:4): what it changes where plans run.

Memory and speed change only where a kernel exploits the zeros. Dense kernels (llama.cpp, the
CPU, fp32 or quantized weights) store and multiply the zeros, so only quality changes (measured
here, data/pruning.toml). The one kernel path: 2:4 on an NVIDIA GPU of compute capability >= 8.0
with fp16/bf16 weights, where torch's semi-structured tensors hold block linear weights in 0.5625
of their bytes. The solver never proposes pruning; `--prune` pins it and the plan says what it costs.
"""
from __future__ import annotations

from typing import Any

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec
from fitplan.plan_spec import WeightBytes
from fitplan.strategies.strategy import Option, TableStrategy, option_of, table_options

SPARSE_KERNELS = "2:4 sparse kernels"


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


def sparse_kernel_unmet(prune: str, weights: str, hardware: HardwareSpec, on_gpu: bool) -> str | None:
    """Why a pruned plan gets no sparse kernel (so no memory gain), or None when it does."""
    if prune != "2:4":
        return "only 2:4 has sparse kernels; unstructured zeros stay in dense tensors"
    ratios = _table()[SPARSE_KERNELS]["bytes_ratio"]
    if weights not in ratios:
        return f"sparse kernels take {' / '.join(ratios)} weights, not {weights}"
    unmet = option_of(STRATEGY, SPARSE_KERNELS).requirement.unmet(hardware, "gpu", "transformers")
    if unmet is None and not on_gpu:
        return "the plan keeps blocks on the CPU, where no sparse kernel runs"
    return unmet


def sparse_weight_bytes(weights: WeightBytes, fmt_name: str) -> tuple[Any, ...]:
    """Block linear weights in torch's semi-structured layout (values + metadata); the rest as is."""
    ratio = _table()[SPARSE_KERNELS]["bytes_ratio"][fmt_name]
    return tuple((t, int(b * ratio) if t.role == "block" and t.is_matrix else b) for t, b in weights)


def effects(pattern: str, ratio: float, kernel_unmet: str | None = "not planned") -> dict[str, Any]:
    table = _table()
    row = table[pattern]
    quality: dict[str, Any] = {"source": "measured on SmolLM2-135M, magnitude pruning, no retraining (data/pruning.toml)"}
    if pattern == "2:4":
        quality["perplexity_ratio"] = row["measured_ratio"]
    elif abs(ratio - 0.5) < 1e-9:
        quality["perplexity_ratio"] = row["measured_ratio_50"]
    else:
        quality["perplexity_ratio"] = None
        quality["note"] = "measured at 50% only; other ratios are not measured"
    memory, speed = row["memory"], row["speed"]
    if kernel_unmet is None:
        memory, speed = table[SPARSE_KERNELS]["memory"], table[SPARSE_KERNELS]["speed"]
    out = {"pattern": pattern, "ratio": ratio, "memory": memory, "speed": speed, "quality": quality,
           "sparse_kernels": kernel_unmet is None}
    if kernel_unmet is not None:
        out["no_sparse_kernels_because"] = kernel_unmet
    return out


def _table() -> dict[str, Any]:
    return load_table("fitplan.strategies.data", "pruning.toml")


def _option_effects(name: str) -> dict[str, Any]:
    row = _table()[name]
    return {"memory": row["memory"], "speed": row["speed"]}


def _options() -> list[Option]:
    return table_options("pruning", "pruning", _option_effects)


STRATEGY = TableStrategy("pruning", "2:4 and unstructured magnitude pruning: quality measured, memory only with sparse kernels",
                         _options)
