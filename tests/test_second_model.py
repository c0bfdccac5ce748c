"""A second real model, of another architecture, that no constant was tuned on: Gemma-3-270M Q4_K_M
(sliding-window and global layers, a 262144-token vocabulary, tied head) through the real
llama-cpp-python. Memory is held to 10% of the measured process peak with prompts that fill the
context; speed is compared in bench/accuracy.py (docs/accuracy.md), never asserted here."""
from __future__ import annotations

import pytest
from test_verify import FITPLAN, rows, run_json

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("context", [1024, 2048])
def test_gemma3_memory_at_a_full_context(gemma3_gguf: str, context: int, tmp_path, monkeypatch) -> None:
    """The process peak with a prompt that fills the context: full-size sliding-window cache (what
    llama-cpp-python allocates), the repacked Q4_K matrices, the vocabulary's tables."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))
    doc = run_json(FITPLAN, "verify", gemma3_gguf, "--threads", "1", "--repeat", "1", "--context", str(context),
                   "--prompt-tokens", str(context - 24), "--gen-tokens", "4")
    assert doc["plan"]["swa_full"] is True
    assert 0.9 <= rows(doc)["peak memory cpu (process RSS)"]["ratio"] <= 1.1


def test_a_windowed_cache_is_smaller_and_still_fits_the_measurement(gemma3_gguf: str, tmp_path, monkeypatch) -> None:
    """--swa-full off keeps only the window on Gemma 3's sliding layers (llama-server's default)."""
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))
    full = run_json(FITPLAN, "advise", gemma3_gguf, "--hardware", "laptop-cpu-16gb", "--context", "8192")
    windowed = run_json(FITPLAN, "advise", gemma3_gguf, "--hardware", "laptop-cpu-16gb", "--context", "8192",
                        "--swa-full", "off")
    kv = lambda doc: doc["predicted"]["memory"]["cpu"]["kv_cache"]  # noqa: E731
    assert windowed["plan"]["swa_full"] is False and kv(windowed) < kv(full) / 3
