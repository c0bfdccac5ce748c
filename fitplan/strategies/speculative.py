"""Speculative decoding: a draft proposes g tokens, the target checks them in one step.

Leviathan et al. 2023 (arXiv:2211.17192): with acceptance rate a, draft length g and draft/target
cost ratio c, a step yields (1 - a^(g+1)) / (1 - a) tokens on average and decoding speeds up by
(1 - a^(g+1)) / ((1 - a)(g c + 1)). Prompt lookup (n-gram drafting from the prompt) has c ~ 0 and
no draft model. Greedy outputs equal plain greedy decoding; only speed and memory change.
"""
from __future__ import annotations

from dataclasses import dataclass

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import ModelSpec
from fitplan.strategies.strategy import TableStrategy, table_options

PROMPT_LOOKUP = "prompt-lookup"


@dataclass(frozen=True)
class Speculation:
    draft: str  # a model name, or "prompt-lookup"
    acceptance: float
    acceptance_source: str
    draft_tokens: int


def defaults() -> dict[str, float]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["speculative"]


def tokens_per_step(acceptance: float, draft_tokens: int) -> float:
    if acceptance >= 1:
        return draft_tokens + 1.0
    return (1 - acceptance ** (draft_tokens + 1)) / (1 - acceptance)


def speedup(acceptance: float, draft_tokens: int, cost_ratio: float) -> float:
    """Expected decode speed-up over plain decoding (below 1: speculation costs more than it gives)."""
    return tokens_per_step(acceptance, draft_tokens) / (draft_tokens * cost_ratio + 1)


def check_pair(target: ModelSpec, draft: ModelSpec) -> None:
    """A draft must share the target's tokenizer (same vocabulary size) and be smaller: fewer
    parameters, or the same model in fewer bytes (a lower-precision copy)."""
    if draft.vocab_size != target.vocab_size:
        raise BadValueError(f"draft {draft.name} has a vocabulary of {draft.vocab_size}, the target "
                            f"{target.name} {target.vocab_size}: they cannot share tokens")
    smaller_copy = draft.parameters == target.parameters and (draft.stored_bytes or 0) < (target.stored_bytes or 0)
    if draft.parameters > target.parameters or (draft.parameters == target.parameters and not smaller_copy):
        raise BadValueError(f"draft {draft.name} is not smaller than the target {target.name}")


def parse_acceptance(value: float | None, source: str | None = None) -> tuple[float, str]:
    if value is not None and source:
        return value, source
    if value is None:
        return float(defaults()["default_acceptance"]), "stated default (runtimes.toml [speculative]; measure yours)"
    if not 0 <= value < 1:
        raise BadValueError(f"bad --acceptance {value!r}: a rate in [0, 1)")
    return value, "given"


STRATEGY = TableStrategy("speculative", "speculative decoding: a draft model or prompt lookup (Leviathan et al. 2023)",
                         lambda: table_options("speculative", "speculative"))
