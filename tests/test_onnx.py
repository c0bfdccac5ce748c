"""ONNX Runtime plans on the real SmolLM2 GGUF: exported once with optimum, run by onnxruntime.

optimum-onnx needs transformers < 4.58, so these run in their own environment (.ci/run makes
.venv-onnx with `pip install -e '.[dev,torch,onnx]'`); in the main environment they are skipped and
the executor's one-line refusal is tested instead.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fitplan

FITPLAN = Path(sys.executable).with_name("fitplan")
PROMPT = "The capital of France is"
HAS_ONNX = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("optimum") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnxruntime/optimum-onnx live in their own environment "
                                                   "(.venv-onnx: pip install -e '.[dev,torch,onnx]')")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FITPLAN), *args], capture_output=True, text=True, timeout=900, env=os.environ.copy())


def plan_for(gguf: str, folder: Path, name: str, *pins: str) -> Path:
    path = folder / name
    run = cli("advise", gguf, "--context", "1024", "--threads", "1", *pins, "-o", str(path))
    assert run.returncode == 0, run.stderr
    return path


def test_onnx_plan_is_pinned_only_and_sized(smollm2_gguf: str, module_cache: Path) -> None:
    """advise --runtime onnxruntime: the fp32 export's bytes on the CPU, weights exported locally."""
    doc = json.loads(plan_for(smollm2_gguf, module_cache, "onnx.json", "--runtime", "onnxruntime").read_text())
    plan = doc["plan"]
    assert (plan["runtime"], plan["weights"], plan["kv_cache"]) == ("onnxruntime", "onnx-fp32", "f32")
    assert plan["weights_source"]["kind"] == "exported locally"
    assert doc["predicted"]["memory"]["cpu"]["weights"] == 134_515_008 * 4


@pytest.mark.skipif(HAS_ONNX, reason="checks the refusal where onnxruntime is absent")
def test_run_says_in_one_line_that_onnxruntime_is_missing(smollm2_gguf: str, module_cache: Path) -> None:
    """Without onnxruntime/optimum-onnx, `fitplan run` on an ONNX plan says how to install them, exit 2."""
    run = cli("run", str(plan_for(smollm2_gguf, module_cache, "onnx-missing.json", "--runtime", "onnxruntime")),
              "--prompt", PROMPT)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "needs transformers < 4.58" in run.stderr and "fitplan[torch,onnx]" in run.stderr


@needs_onnx
def test_onnx_runtime_matches_transformers_greedy_and_its_export(smollm2_gguf: str, module_cache: Path,
                                                                 tmp_path: Path) -> None:
    """The optimum export run by onnxruntime gives the fp32 transformers plan's greedy text, and the
    exported Python snippet prints the same."""
    onnx = plan_for(smollm2_gguf, module_cache, "onnx-run.json", "--runtime", "onnxruntime")
    torch_plan = plan_for(smollm2_gguf, module_cache, "fp32.json", "--runtime", "transformers", "--weights", "fp32")
    with fitplan.load(str(onnx)) as handle:
        text = handle.generate(PROMPT, max_tokens=16)
        assert handle.metering["generated_tokens"] == 16 or text
    with fitplan.load(str(torch_plan)) as reference:
        assert text == reference.generate(PROMPT, max_tokens=16)
    run = cli("run", str(onnx), "--prompt", PROMPT, "--max-tokens", "16")
    assert run.returncode == 0 and run.stdout.strip() == text.strip(), run.stderr
    snippet = tmp_path / "plan.py"
    snippet.write_text(cli("export", str(onnx), "--to", "python", "--max-tokens", "16").stdout)
    exported = subprocess.run([sys.executable, str(snippet), PROMPT], capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == text.strip()


def test_onnx_int8_plan_is_sized_from_its_quantized_graph(smollm2_gguf: str, module_cache: Path) -> None:
    """onnx-int8: every matrix int8 (the embedding's Gather uint8) with a scale and zero point per output
    channel, and, SmolLM2's head being the tied embedding, an fp32 copy of it that the head reads."""
    doc = json.loads(plan_for(smollm2_gguf, module_cache, "onnx-int8.json", "--runtime", "onnxruntime",
                              "--weights", "onnx-int8").read_text())
    assert (doc["plan"]["weights"], doc["plan"]["kv_cache"]) == ("onnx-int8", "f32")
    assert "quantize_dynamic" in doc["plan"]["weights_source"]["how"]
    block_matrices = 30 * (576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3)
    rows = 30 * (576 * 2 + 192 * 2 + 1536 * 2 + 576)  # output channels of those matrices
    embed, norms = 49152 * 576, 30 * 2 * 576 + 576
    # the embedding's 49,152 rows are counted with 12 bytes each too, 0.6 MB over ORT's one scale for a Gather
    assert doc["predicted"]["memory"]["cpu"]["weights"] == \
        block_matrices + rows * 12 + embed + 49152 * 12 + norms * 4 + embed * 4


@needs_onnx
def test_onnx_int8_runs_its_quantized_export(smollm2_gguf: str, module_cache: Path, tmp_path: Path) -> None:
    """The int8 copy is written once beside the export (MatMulInteger in place of MatMul), runs through
    `fitplan run` and its exported Python alike, and a second load reuses it."""
    import onnx

    from fitplan.advisor.plans.plan_file import load_plan, run_target
    from fitplan.strategies.runtimes.onnx.session import plan_export

    plan = plan_for(smollm2_gguf, module_cache, "onnx-int8-run.json", "--runtime", "onnxruntime", "--weights", "onnx-int8")
    _, graph = plan_export(run_target(load_plan(str(plan))))
    assert graph.name.endswith("-int8")
    ops = {node.op_type for node in onnx.load(str(graph / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    made = (graph / "model.onnx").stat().st_mtime_ns
    run = cli("run", str(plan), "--prompt", PROMPT, "--max-tokens", "12")
    assert run.returncode == 0 and len(run.stdout.strip()) > 5, run.stderr
    assert (graph / "model.onnx").stat().st_mtime_ns == made
    snippet = tmp_path / "plan.py"
    snippet.write_text(cli("export", str(plan), "--to", "python", "--max-tokens", "12").stdout)
    exported = subprocess.run([sys.executable, str(snippet), PROMPT], capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == run.stdout.strip()
