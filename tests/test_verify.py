"""`fitplan verify` and `advise --probe` on the real SmolLM2 model, through the real runtimes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fitplan.advisor.plans.verify as verify_module
import fitplan.advisor.plans.verify_command as verify_command
import fitplan.profiles.probes as probes_module
from fitplan.advisor.cli.commands import advise_main
from fitplan.advisor.planner.calibration import ProbeLimits

FITPLAN = str(Path(sys.executable).with_name("fitplan"))
ADVISE = str(Path(sys.executable).with_name("advise"))


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private fitplan cache (probes, calibration, conversions) for one test."""
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))
    return tmp_path


def run_json(*args: str) -> dict:
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rows(doc: dict) -> dict[str, dict]:
    return {row["metric"]: row for row in doc["comparison"]}


def test_verify_llamacpp_memory_and_speed(smollm2_gguf: str, cache: Path) -> None:
    """llama.cpp run: memory within 10% of the process peak, positive measured speeds, same tokens each run."""
    pytest.importorskip("llama_cpp")
    doc = run_json(FITPLAN, "verify", smollm2_gguf, "--threads", "1", "--repeat", "2", "--prompt-tokens", "64",
                   "--gen-tokens", "8")
    table = rows(doc)
    assert 0.9 <= table["peak memory cpu (process RSS)"]["ratio"] <= 1.1
    assert table["decode_tokens_per_s"]["measured"] > 0 and table["prefill_tokens_per_s"]["measured"] > 0
    first = [run["first_tokens"] for run in doc["measured"]["runs"]]
    assert first[0] == first[1] and len(first[0]) == 8
    assert doc["predicted"]["provenance"]["speed"] == "estimated"  # nothing calibrated in a fresh cache


@pytest.mark.slow
def test_verify_transformers_from_the_gguf(smollm2_gguf: str, cache: Path) -> None:
    """transformers fp32 loaded from the GGUF (converted once, cached): memory within 10%."""
    pytest.importorskip("transformers")
    doc = run_json(FITPLAN, "verify", smollm2_gguf, "--runtime", "transformers", "--threads", "1", "--repeat", "1",
                   "--prompt-tokens", "32", "--gen-tokens", "4")
    assert doc["plan"]["weights"] == "fp32"
    assert 0.9 <= rows(doc)["peak memory cpu (process RSS)"]["ratio"] <= 1.1
    assert list(cache.glob("converted/*/model.safetensors"))


def test_verify_a_plan_file(smollm2_gguf: str, cache: Path, tmp_path: Path) -> None:
    """A plan written by `advise -o` runs as planned (runtime, weights, context, threads from the file)."""
    pytest.importorskip("llama_cpp")
    plan = tmp_path / "plan.json"
    run_json(ADVISE, smollm2_gguf, "--weights", "Q4_1", "--context", "1024", "--threads", "1", "-o", str(plan))
    doc = run_json(FITPLAN, "verify", str(plan), "--repeat", "1", "--prompt-tokens", "16", "--gen-tokens", "4")
    assert (doc["plan"]["weights"], doc["plan"]["context"], doc["plan"]["threads"]) == ("Q4_1", 1024, 1)


def test_verify_needs_local_weights(cache: Path) -> None:
    """A catalog model has no weights to run: one line, exit 2."""
    done = subprocess.run([FITPLAN, "verify", "llama-3.1-8b"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "local weights" in done.stderr


def test_calibration_makes_figures_calibrated(smollm2_gguf: str, cache: Path, capsys, monkeypatch) -> None:
    """advise --probe runs the micro-probes and the runtime probe; verify then reports calibrated speed.
    (The contention rule is test_calibration.py's: here any spread and load pass, CI shares its machine.)"""
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(probes_module, "DEFAULT_PROBES", ("host_read_1thread", "host_read_all", "fp32_1thread",
                                                          "fp32_all"))
    monkeypatch.setattr(verify_command, "PROBE_LIMITS", ProbeLimits(spread=float("inf"), others_share=float("inf")))
    with pytest.raises(SystemExit) as exit_info:
        advise_main([smollm2_gguf, "--weights", "Q4_1", "--threads", "1", "--probe", "--json"])
    assert exit_info.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["predicted"]["provenance"]["speed"] == "calibrated"
    assert doc["predicted"]["provenance"]["speed_basis"] == "cpu: probe"
    note = doc["predicted"]["provenance"]["calibration"]  # the real worker repeated and read the CPU times
    assert note["runs"] >= 2 and note["kept"] >= 2 and note["others_cores"] is not None
    assert list(cache.glob("calibration-*.json")) and list(cache.glob("probes-*.json"))


def test_crashing_probes_are_reported_and_advise_still_answers(smollm2_gguf: str, cache: Path, capsys,
                                                               monkeypatch) -> None:
    """A micro-probe that aborts and a runtime probe that crashes are reported; advise answers anyway."""
    monkeypatch.setattr(probes_module, "DEFAULT_PROBES", ("host_copy_1thread", "crash"))
    monkeypatch.setattr(verify_module, "WORKER", [sys.executable, "-c", "import os; os.abort()"])
    with pytest.raises(SystemExit) as exit_info:
        advise_main([smollm2_gguf, "--weights", "Q4_1", "--probe", "--json"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0
    doc = json.loads(out)
    assert doc["fits"] and doc["predicted"]["provenance"]["speed"] == "estimated"
    assert "runtime probe failed" in err
    cached = json.loads(next(cache.glob("probes-*.json")).read_text())
    assert "crash" in cached["errors"] and cached["host_copy_GB_per_s_1thread"]["value"] > 0


def test_verify_refuses_a_placement_it_cannot_run(smollm2_gguf: str, tmp_path: Path) -> None:
    """A plan placing experts or tensors by overrides is refused in one line, not run as something else."""
    plan = tmp_path / "plan.json"
    made = subprocess.run([FITPLAN, "advise", smollm2_gguf, "--context", "512", "-o", str(plan)], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    doc = json.loads(plan.read_text())
    doc["plan"].update(placement="exact", gpu_layers=30, gpus=1, layer_map=["gpu0"] * 30)
    plan.write_text(json.dumps(doc))
    done = subprocess.run([FITPLAN, "verify", str(plan)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "placement" in done.stderr
