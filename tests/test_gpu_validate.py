"""bench/gpu_validate.py's logic, on this CPU: the GPU run itself happens only where a GPU is lent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bench_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_validate():
    return bench_module("gpu_validate")


def test_the_random_models_tokenizer_gives_ids_whatever_class_transformers_picks(gpu_validate, tmp_path) -> None:
    """transformers 5 loads a qwen2 folder with Qwen2Tokenizer, which ignored the word-level tokenizer
    once written here (an empty prompt, then a crash in the embedding)."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    gpu_validate._write_tokenizer(tmp_path, 151936)
    ids = AutoTokenizer.from_pretrained(tmp_path)("The quick brown fox.", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("The quick brown fox.") and max(ids) < 256


def test_the_per_token_overhead_is_the_intercept_of_decode_time_against_bytes(gpu_validate) -> None:
    from fitplan.advisor.models.catalog import catalog_spec
    from fitplan.profiles.named import load_profile
    from fitplan.strategies.quantization import tensor_bytes, weight_format

    hw = load_profile("h100-80gb")
    cases = []
    for name in ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b"):
        spec = catalog_spec(name)
        read = sum(n for t, n in tensor_bytes(spec, weight_format("bf16")) if t.role != "embed" or spec.tied_embeddings)
        seconds = 0.012 + read / 2.0e12  # 12 ms a step, 2 TB/s
        cases.append({"case": name, "model": {"location": None},
                      "comparison": [{"metric": "decode_tokens_per_s", "measured": 1 / seconds}]})
    out = gpu_validate.per_token_overhead(cases, hw)
    assert out["overhead_ms"] == pytest.approx(12.0, abs=1e-3)
    assert out["effective_GB_per_s"] == pytest.approx(2000.0, rel=1e-3)
    assert out["share_of_spec_bandwidth"] == pytest.approx(2000.0 / hw.gpus[0].memory_bandwidth_GB_per_s, abs=1e-3)
