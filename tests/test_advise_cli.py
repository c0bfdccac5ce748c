"""advise end to end: the JSON contract, plan files, and answers on named profiles."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT.parent / "shared" / "tools" / "check_advise_contract.py"
ADVISE = Path(sys.executable).with_name("advise")


def advise(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(ADVISE), *args], capture_output=True, text=True, timeout=120, env=env)


def advise_json(*args: str) -> dict:
    run = advise(*args, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not CONTRACT.is_file(), reason="../shared/tools/check_advise_contract.py is not beside this checkout")
def test_advise_json_contract() -> None:
    """The shared contract checker accepts every field name and type advise --json promises."""
    run = subprocess.run([sys.executable, str(CONTRACT), str(ADVISE)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "advise contract: ok" in run.stdout


def test_memory_breakdown_sums_to_total() -> None:
    """Every device's total is the sum of its parts, in whole bytes; no GPU device on a CPU profile."""
    doc = advise_json("llama-3.1-8b", "--hardware", "gha-ubuntu-4core")
    assert set(doc["predicted"]["memory"]) == {"cpu"}
    for parts in doc["predicted"]["memory"].values():
        assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


def test_gpu_plan_on_a_card_that_holds_the_model() -> None:
    """An 8B model at 8K on a 12 GB card runs with every layer on the GPU."""
    doc = advise_json("llama-3.1-8b", "--hardware", "rtx-3060-12gb", "--context", "8192")
    assert doc["fits"] and doc["plan"]["gpu_layers"] == doc["model"]["layers"] == 32
    assert doc["predicted"]["memory"]["gpu0"]["total"] <= 12_884_901_888


def test_large_model_splits_between_gpu_and_cpu() -> None:
    """Llama-3.1-70B on one 24 GB card with 64 GB RAM: some layers on the GPU, the rest on the CPU."""
    doc = advise_json("llama-3.1-70b", "--hardware", "rtx-4090-24gb")
    assert doc["fits"] and 0 < doc["plan"]["gpu_layers"] < 80
    assert doc["predicted"]["memory"]["cpu"]["weights"] > 10e9


def test_two_gpus_share_the_layers() -> None:
    """On 2x RTX 4090 the 70B model's blocks are spread over gpu0 and gpu1."""
    doc = advise_json("llama-3.1-70b", "--hardware", "2xrtx-4090-24gb")
    memory = doc["predicted"]["memory"]
    assert memory["gpu0"]["weights"] > 15e9 and memory["gpu1"]["weights"] > 15e9


def test_nothing_fits_is_an_answer() -> None:
    """Llama-3.1-405B on a 16 GB laptop: exit 0, fits false, and a reason for every candidate."""
    doc = advise_json("llama-3.1-405b", "--hardware", "laptop-cpu-16gb")
    assert doc["fits"] is False and doc["rejected"]
    assert all(r["reason"] for r in doc["rejected"])


def test_zero_vram_budget_means_cpu() -> None:
    """--max-vram 0GB is valid and keeps every layer off the GPU."""
    doc = advise_json("smollm2-135m", "--hardware", "rtx-4090-24gb", "--max-vram", "0GB")
    assert doc["plan"]["gpu_layers"] == 0 and set(doc["predicted"]["memory"]) == {"cpu"}


def test_cpu_plan_uses_physical_cores() -> None:
    """A CPU plan defaults to as many threads as the profile has physical cores."""
    doc = advise_json("smollm2-135m", "--hardware", "laptop-cpu-16gb")
    assert doc["plan"]["threads"] == 8


def test_pins_are_honoured(smollm2_gguf: str) -> None:
    """--runtime/--weights/--context/--kv-cache pin the plan."""
    doc = advise_json("llama-3.1-8b", "--hardware", "rtx-4090-24gb", "--runtime", "llama.cpp",
                      "--weights", "q4_k_m", "--context", "4096", "--kv-cache", "q8_0")
    assert (doc["plan"]["runtime"], doc["plan"]["weights"], doc["plan"]["context"], doc["plan"]["kv_cache"]) == \
        ("llama.cpp", "Q4_K_M", 4096, "q8_0")


def test_real_gguf_on_this_machine(smollm2_gguf: str) -> None:
    """The real SmolLM2 file on this machine: a CPU plan whose weights are the file's tensor bytes."""
    doc = advise_json(smollm2_gguf, "--weights", "Q4_1", "--context", "2048")
    assert doc["fits"] and doc["model"]["parameters"] == 134_515_008
    assert doc["predicted"]["memory"]["cpu"]["weights"] == 96_576_768


def test_plan_file_is_written_and_never_overwritten(tmp_path: Path) -> None:
    """-o writes the plan file of the --json answer (its chosen plan), and refuses to replace an existing file."""
    target = tmp_path / "plan.json"
    run = advise("smollm2-135m", "--hardware", "gha-ubuntu-4core", "-o", str(target), "--json")
    assert run.returncode == 0, run.stderr
    answer, written = json.loads(run.stdout), target.read_text()
    plan = json.loads(written)
    assert plan["kind"] == "fitplan-plan" and plan["predicted"] == answer["predicted"]
    assert {k: plan["plan"][k] for k in answer["plan"]} == answer["plan"]
    again = advise("smollm2-135m", "--hardware", "gha-ubuntu-4core", "-o", str(target))
    assert again.returncode == 2 and "exists" in again.stderr
    assert target.read_text() == written


def test_table_output_names_the_default_context() -> None:
    """The table says which context it assumed when none was given."""
    run = advise("llama-3.1-8b", "--hardware", "rtx-4090-24gb")
    assert run.returncode == 0
    assert "context 8192" in run.stdout and "default" in run.stdout


def test_profile_command_prints_named_and_detected_profiles() -> None:
    """`fitplan profile NAME` shows the card; plain `fitplan profile` detects this machine."""
    fitplan = str(ADVISE.with_name("fitplan"))
    named = subprocess.run([fitplan, "profile", "rtx-4090-24gb"], capture_output=True, text=True, timeout=60)
    assert named.returncode == 0 and "NVIDIA GeForce RTX 4090" in named.stdout
    detected = subprocess.run([fitplan, "profile", "--json"], capture_output=True, text=True, timeout=60)
    assert detected.returncode == 0 and json.loads(detected.stdout)["detected"] is True


def test_plot_draws_a_png(tmp_path: Path) -> None:
    """--plot writes a PNG of the Pareto front and the memory per device; other endings are refused."""
    target = tmp_path / "plan.png"
    run = advise("llama-3.1-8b", "--hardware", "rtx-3060-12gb", "--plot", str(target))
    assert run.returncode == 0, run.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = advise("llama-3.1-8b", "--hardware", "rtx-3060-12gb", "--plot", str(tmp_path / "plan.jpg"))
    assert bad.returncode == 2 and ".png or .svg" in bad.stderr


def test_prune_reports_its_cost_and_no_gain() -> None:
    """--prune shows that dense kernels gain nothing and the measured perplexity cost; bad patterns exit 2."""
    doc = advise_json("smollm2-135m", "--hardware", "gha-ubuntu-4core", "--prune", "unstructured:0.5")
    pruning = doc["plan"]["pruning"]
    assert pruning["memory"].startswith("none") and pruning["quality"]["perplexity_ratio"] == 30.6
    bad = advise("smollm2-135m", "--hardware", "gha-ubuntu-4core", "--prune", "3:4")
    assert bad.returncode == 2 and "--prune" in bad.stderr
