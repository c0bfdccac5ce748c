"""A format's quality prior for one model: its published loss on Llama-3-8B, scaled for the model's family
and size by the rule fitted on the published tables (data/quality_rule.toml, bench/quality_fit.py).

Losses are weighed on the anchor's scale (relative perplexity increase x Llama-3-8B's F16 perplexity): a
Llama-3-8B figure is its published one, and a measured ratio from `fitplan quality` converts to the same
scale, so priors, measurements and --max-ppl-increase compare in one unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec


@dataclass(frozen=True)
class QualityRule:
    anchor_model: str
    anchor_parameters: int
    anchor_ppl: float
    anchor_architecture: str
    anchor_vocab_size: int
    other_families: float
    size_exponent: float
    smallest_parameters: int
    largest_parameters: int


@lru_cache(maxsize=1)
def quality_rule() -> QualityRule:
    return QualityRule(**load_table("fitplan.strategies.data", "quality_rule.toml"))


def anchor_family(spec: ModelSpec) -> bool:
    """Llama 3 and its fine-tunes: the anchor's architecture with its tokenizer."""
    rule = quality_rule()
    return spec.architecture == rule.anchor_architecture and spec.vocab_size == rule.anchor_vocab_size


def model_factor(spec: ModelSpec) -> float:
    """How much of the anchor's relative loss a format costs this model."""
    rule = quality_rule()
    size = min(max(spec.parameters, rule.smallest_parameters), rule.largest_parameters)
    family = 1.0 if anchor_family(spec) else rule.other_families
    return family * (size / rule.anchor_parameters) ** -rule.size_exponent


def factor_note(spec: ModelSpec, factor: float) -> str:
    """Why the prior differs from the anchor's figure, for the plan's quality source."""
    family = "Llama 3 family" if anchor_family(spec) else "another family than Llama 3"
    return f"x{factor:.2f} for {spec.parameters / 1e9:.2f}B parameters, {family} (quality_rule.toml)"


def on_anchor_scale(ppl: float, reference_ppl: float) -> float:
    """A measured perplexity against its reference's, as a loss on the anchor's scale."""
    return (ppl / reference_ppl - 1.0) * quality_rule().anchor_ppl
