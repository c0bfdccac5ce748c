"""Quality priors: the published tables (data/quality_priors.toml), the size rule fitted on them
(data/quality_rule.toml, bench/quality_fit.py) and how the solver applies it."""
from __future__ import annotations

import math
from importlib.resources import files

import pytest
import tomllib
from conftest import bench_module

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.solver import Request, advise
from fitplan.profiles.named import load_profile
from fitplan.strategies.quality_prior import model_factor, quality_rule

METRICS = {"ppl", "ppl_delta", "kld"}


def _tables() -> list[dict]:
    return tomllib.loads(files("fitplan.strategies.data").joinpath("quality_priors.toml").read_text("utf-8"))["table"]


def test_every_published_table_names_its_source_and_shows_a_value_there() -> None:
    """Each table: a model, a family, a size, a metric, a source and a verbatim excerpt holding at least one
    of its values as written (TOML drops trailing zeros: 34.20 is stored 34.2)."""
    tables = _tables()
    assert len(tables) >= 30 and len({t["family"] for t in tables}) >= 6
    for t in tables:
        assert t["metric"] in METRICS and t["source"] and t["quoted"] and t["parameters_b"] > 0, t["model"]
        assert t["values"] and all(isinstance(v, float | int) for v in t["values"].values()), t["model"]
        assert any(f"{abs(v)}" in t["quoted"] or f"{abs(v):.2f}" in t["quoted"] for v in t["values"].values()), t["model"]
        if t["metric"] == "ppl":
            assert all(v > 1 for v in t["values"].values()), t["model"]


def test_the_stored_rule_is_what_the_train_split_fits() -> None:
    """quality_rule.toml holds the fit of bench/quality_fit.py on the train families (no hand edits), and
    on the held-out families the rule beats Llama-3-8B's table used for every model."""
    fit = bench_module("quality_fit")
    rows = fit.tables()
    known = fit.anchor(rows)
    c, b = fit.fit(fit.points(rows, fit.TRAIN, known), known)
    rule = quality_rule()
    assert (round(c, 4), round(b, 4)) == (rule.other_families, rule.size_exponent)
    assert not set(fit.TRAIN) & set(fit.HELD_OUT)
    held = fit.points(rows, fit.HELD_OUT, known)
    assert len(held) >= 25

    def median_error(c_value: float, b_value: float) -> float:
        return sorted(abs(e) for e in fit.errors(held, known, c_value, b_value))[len(held) // 2]

    assert math.exp(median_error(c, b)) < 1.5 < math.exp(median_error(1.0, 0.0))


def test_the_factor_by_family_and_size() -> None:
    """Llama 3 models keep the anchor's figures at its size; another family loses x0.415 of them; size
    scales by the fitted exponent within the tables' 0.5B-72B and is held at the ends outside."""
    rule = quality_rule()
    assert model_factor(catalog_spec("llama-3.1-8b")) == pytest.approx(1.0, abs=1e-9)
    qwen = catalog_spec("qwen2.5-7b")
    assert model_factor(qwen) == pytest.approx(rule.other_families * (qwen.parameters / rule.anchor_parameters)
                                               ** -rule.size_exponent)
    small, large = catalog_spec("llama-3.2-1b"), catalog_spec("llama-3.1-70b")
    assert model_factor(small) > 1.0 > model_factor(large)
    assert model_factor(catalog_spec("llama-3.1-405b")) == pytest.approx((72e9 / rule.anchor_parameters) ** -rule.size_exponent)


def test_the_plan_says_where_its_quality_figure_comes_from() -> None:
    """A Llama 3 8B plan shows the published figure; another family's shows the scaled one and the rule; the
    default bound moves with the model, so the balanced answer of each stays a format no worse than Q4_K_M."""
    hw = load_profile("rtx-4090-24gb")
    llama = advise(catalog_spec("llama-3.1-8b"), hw, Request(weights="Q4_K_M")).chosen.fmt
    assert llama.ppl_increase == pytest.approx(0.175) and "quality_rule" not in llama.quality_source
    qwen_spec = catalog_spec("qwen2.5-7b")
    qwen = advise(qwen_spec, hw, Request(weights="Q4_K_M")).chosen.fmt
    assert qwen.ppl_increase == pytest.approx(0.175 * model_factor(qwen_spec))
    assert "+0.175 on Llama-3-8B" in qwen.quality_source and "another family than Llama 3" in qwen.quality_source
    for spec in (catalog_spec("llama-3.1-8b"), qwen_spec):
        chosen = advise(spec, hw, Request()).chosen
        assert chosen.fmt.ppl_increase <= 0.175 * model_factor(spec) + 1e-9, (spec.name, chosen.fmt.name)


def test_a_qat_checkpoint_in_the_catalog_is_advised_at_4_bits() -> None:
    """Gemma 3's catalog entries name Google's QAT checkpoints: a 4-bit plan prefers them, a higher precision
    mentions them; a model without one gets no such field."""
    from fitplan.advisor.planner.document import advice_document

    hw = load_profile("rtx-4090-24gb")

    def quality(name: str, weights: str) -> dict:
        spec = catalog_spec(name)
        return advice_document(spec, hw, advise(spec, hw, Request(weights=weights)))["quality"]

    four = quality("gemma-3-4b", "Q4_K_M")["qat"]
    assert four["prefer"] and four["hub_ids"] == ["google/gemma-3-4b-it-qat-q4_0-gguf"] and "in place of Q4_K_M" in four["advice"]
    eight = quality("gemma-3-4b", "Q8_0")["qat"]
    assert not eight["prefer"] and eight["advice"].startswith("at 4 bits, prefer")
    assert "qat" not in quality("llama-3.1-8b", "Q4_K_M")
