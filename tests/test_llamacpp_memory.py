"""The llama.cpp memory prediction against the real runtime on the real SmolLM2 GGUF.

The measured figure is the whole process's peak RSS (VmHWM): Python, llama-cpp-python, the
memory-mapped weights, KV cache and compute buffers. The prediction is the plan's `cpu` total.
One set of constants (strategies/data/runtimes.toml, measured on a short prompt) serves all
three contexts; nothing is refitted per case.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fitplan.advisor.models.model_files import gguf_spec
from fitplan.plan_spec import Setup
from fitplan.strategies.quantization import tensor_bytes, weight_format
from fitplan.strategies.runtimes.llamacpp import cost as runtime_llamacpp

pytest.importorskip("llama_cpp", reason="needs the llamacpp extra (pip install -e '.[llamacpp]')")
SCRIPT = Path(__file__).with_name("llamacpp_peak.py")


def predicted_cpu_bytes(path: str, n_ctx: int, flash_attn: bool) -> int:
    spec = gguf_spec(path)
    setup = Setup(runtime="llama.cpp", weights="Q4_1", kv_cache="f16", context=n_ctx, batch=1, threads=1, gpu_layers=0,
                  flash_attn=flash_attn)
    return runtime_llamacpp.memory(spec, setup, tensor_bytes(spec, weight_format("Q4_1")))["cpu"].total


@pytest.mark.slow
@pytest.mark.parametrize("n_ctx,flash_attn", [(512, False), (2048, False), (8192, False), (2048, True)])
def test_predicted_memory_within_10_percent(smollm2_gguf: str, n_ctx: int, flash_attn: bool) -> None:
    """Predicted peak memory is within 10% of llama-cpp-python's measured peak RSS."""
    run = subprocess.run([sys.executable, str(SCRIPT), smollm2_gguf, str(n_ctx), "1" if flash_attn else "0"],
                         capture_output=True, text=True, timeout=600, check=True)
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["generated"] > 0
    ratio = predicted_cpu_bytes(smollm2_gguf, n_ctx, flash_attn) / measured["peak_rss_bytes"]
    print(f"n_ctx {n_ctx}, flash_attn {flash_attn}: predicted/measured = {ratio:.3f}")
    assert 0.9 <= ratio <= 1.1, f"n_ctx {n_ctx}: predicted/measured = {ratio:.3f}"
