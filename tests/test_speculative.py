"""Speculative decoding in plans: the Leviathan et al. formula, the draft's memory, the guards."""
from __future__ import annotations

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.solver import Request, advise
from fitplan.errors import BadValueError
from fitplan.profiles.named import load_profile
from fitplan.strategies.speculative import speedup, tokens_per_step


def test_leviathan_formula() -> None:
    """a = 0.72, g = 4: 2.51 tokens per step; with a draft costing 1/6 of the target, ~1.5x
    (Leviathan et al. 2023, eq. 1 and the speed-up of section 3.2)."""
    assert tokens_per_step(0.72, 4) == pytest.approx((1 - 0.72**5) / 0.28)
    assert speedup(0.72, 4, 1 / 6) == pytest.approx(tokens_per_step(0.72, 4) / (4 / 6 + 1))
    assert speedup(0.34, 4, 0.5) < 1  # a poor acceptance makes speculation a loss


def plan(**request):
    return advise(catalog_spec("llama-3.1-8b"), load_profile("rtx-4090-24gb"), Request(weights="Q4_K_M", **request))


def test_draft_memory_has_its_own_keys() -> None:
    """The draft's bytes appear as draft_weights / draft_kv_cache and in total; weights stays the target's."""
    plain, drafted = plan().chosen, plan(draft="llama-3.2-1b").chosen
    gpu, base = drafted.memory["gpu0"], plain.memory["gpu0"]
    assert gpu.weights == base.weights and gpu.kv_cache == base.kv_cache
    assert gpu.draft_weights > 0.5e9 and gpu.draft_kv_cache > 0
    assert gpu.total == base.total + gpu.draft_weights + gpu.draft_kv_cache


def test_draft_speeds_up_decode_with_the_stated_default() -> None:
    """Llama-3.2-1B drafting for Llama-3.1-8B at the stated a = 0.72: faster decode, marked as such."""
    plain, drafted = plan().chosen, plan(draft="llama-3.2-1b").chosen
    assert drafted.speculation["used"] and drafted.speculation["acceptance_source"].startswith("stated default")
    assert drafted.speed.decode_tokens_per_s == pytest.approx(plain.speed.decode_tokens_per_s
                                                              * drafted.speculation["speedup"], rel=1e-3)


def test_a_losing_draft_is_not_used() -> None:
    """At acceptance 0.1 the draft costs more than it gives: reported, and decode stays plain."""
    plain, drafted = plan().chosen, plan(draft="llama-3.2-1b", acceptance=0.1).chosen
    assert drafted.speculation["used"] is False and drafted.speculation["speedup"] < 1
    assert drafted.speed.decode_tokens_per_s == pytest.approx(plain.speed.decode_tokens_per_s)


@pytest.mark.parametrize("request_kwargs,message", [
    ({"draft": "smollm2-135m"}, "cannot share tokens"),
    ({"draft": "llama-3.1-70b"}, "not smaller"),
    ({"draft": "prompt-lookup"}, "pass --acceptance"),
])
def test_bad_drafts_are_refused(request_kwargs: dict, message: str) -> None:
    """Another tokenizer, a bigger draft, or prompt lookup without a measured acceptance."""
    with pytest.raises(BadValueError, match=message):
        plan(**request_kwargs)


def test_acceptance_probe_on_lower_precision_copies(smollm2_gguf: str, tmp_path, monkeypatch, capsys) -> None:
    """The probe measures how often a copy picks the Q4_1 target's greedy token (a Q8_0 copy nearly
    always), and advise --probe --draft uses the measured rate of a smaller (Q2_K) copy, saying so."""
    import ctypes
    import json

    llama_cpp = pytest.importorskip("llama_cpp")
    from fitplan.advisor.cli.commands import advise_main
    from fitplan.advisor.planner.acceptance import measure_acceptance

    def copy(file_type: str):
        path = tmp_path / f"draft-{file_type}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}"), True
        assert llama_cpp.llama_model_quantize(smollm2_gguf.encode(), str(path).encode(), ctypes.byref(params)) == 0
        return str(path)

    found = measure_acceptance(smollm2_gguf, copy("Q8_0"), gen_tokens=64)
    assert found["positions"] == 64 and found["acceptance"] > 0.9

    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("fitplan.profiles.probes.DEFAULT_PROBES", ("host_read_1thread",))
    with pytest.raises(SystemExit):
        advise_main([smollm2_gguf, "--draft", copy("Q2_K"), "--probe", "--threads", "1", "--json"])
    out, err = capsys.readouterr()
    assert out, err
    speculative = json.loads(out)["plan"]["speculative"]
    assert speculative["acceptance_source"].startswith("measured") and 0 < speculative["acceptance"] < 1
