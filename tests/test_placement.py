"""Placements as llama.cpp lays them out: a dense model of alike blocks is split contiguously
(`-ngl N`), and the MILP's maps, kept for MoE experts and uneven layers, are contiguous wherever
alike units allow (advisor/planner/placement.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.placement import _contiguous, uniform_blocks
from fitplan.advisor.planner.solver import Request, advise
from fitplan.profiles.named import load_profile

BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=120, env=env)


def planned_command(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """advise's plan for `args` and the llama-server command `fitplan export` makes of it."""
    plan = tmp_path / "plan.json"
    done = run("advise", *args, "--json", "-o", str(plan))
    assert done.returncode == 0, done.stderr
    exported = run("fitplan", "export", str(plan), "--to", "llama-server")
    assert exported.returncode == 0, exported.stderr
    return json.loads(done.stdout), exported.stdout


@pytest.mark.parametrize("args", [
    ("llama-3.1-70b", "--weights", "Q4_K_M", "--hardware", "rtx-4090-24gb"),
    ("llama-3.1-8b", "--weights", "Q4_K_M", "--hardware", "rtx-3060-12gb", "--context", "131072"),
], ids=["70b-on-4090", "8b-128k-on-3060"])
def test_a_dense_split_reads_as_ngl(tmp_path: Path, args: tuple[str, ...]) -> None:
    """70B on a 4090 and 8B at 128K on a 3060 used to get scattered maps (blk\\.(13|14|16|...)\\.=CPU);
    their blocks are alike, so the plan is the contiguous split and the command a plain -ngl N."""
    doc, command = planned_command(tmp_path, *args)
    assert doc["plan"]["placement"] == "split" and "tensor_overrides" not in doc["plan"]
    assert re.search(r"--n-gpu-layers \d+ ", command) and "--override-tensor" not in command, command


def test_a_moe_plan_keeps_its_expert_map() -> None:
    """Mixtral-8x7B on a 4090: the MILP still places routed experts one layer at a time, with
    --override-tensor rules for the experts only (every block stays on the GPU)."""
    from fitplan.advisor.planner.placement import overrides

    spec = catalog_spec("mixtral-8x7b-v0.1")
    advice = advise(spec, load_profile("rtx-4090-24gb"), Request(weights="Q4_K_M"))
    exact = next(c for c in (advice.chosen, *advice.alternatives) if c.placement == "exact")
    assert "cpu" in exact.setup.expert_map and "cpu" not in exact.setup.layer_map
    rules = overrides(spec, exact.setup)
    assert rules and all(rule.endswith(r"\.ffn_.*_exps\.=CPU") for rule in rules)


@pytest.mark.parametrize(("model", "alike"), [
    ("llama-3.1-70b", True), ("llama-3.1-8b", True), ("qwen2.5-7b", True),
    ("gemma-2-9b", False),  # sliding-window layers alternate with global ones: their KV caches differ
    ("mixtral-8x7b-v0.1", False),  # routed experts: the MILP places them
])
def test_uniform_blocks(model: str, alike: bool) -> None:
    """Dense models of one block shape and one KV size are uniform; SWA/global mixes and MoE are not."""
    assert uniform_blocks(catalog_spec(model), 8192, "f16") is alike


def test_alike_units_are_laid_out_cpu_first() -> None:
    """Among alike units (same kind and bytes) the CPU takes the first layers, then gpu0, then gpu1: each
    device keeps as many units of each kind as the solution gave it, so speed and fit are unchanged."""
    units = [("block", layer, 100 if layer % 3 else 120, 100.0 if layer % 3 else 120.0) for layer in range(9)]
    gpu0, gpu1, cpu = 0, 1, 2
    scattered = [gpu0, cpu, gpu1, cpu, gpu0, gpu1, gpu1, cpu, cpu]
    laid_out = _contiguous(units, scattered, 3)
    for cls in (100, 120):
        members = [u for u in range(9) if units[u][2] == cls]
        assert sorted(laid_out[u] for u in members) == sorted(scattered[u] for u in members)
    small = [laid_out[u] for u in range(9) if units[u][2] == 100]
    big = [laid_out[u] for u in range(9) if units[u][2] == 120]
    assert small == [cpu, cpu, cpu, gpu0, gpu1, gpu1] and big == [cpu, gpu0, gpu1]


def test_op_offload_off_is_exported_as_no_op_offload(tmp_path: Path) -> None:
    (tmp_path / "off").mkdir(), (tmp_path / "on").mkdir()
    doc, command = planned_command(tmp_path / "off", "llama-3.1-70b", "--weights", "Q4_K_M", "--hardware",
                                   "rtx-4090-24gb", "--op-offload", "off")
    assert doc["plan"]["op_offload"] is False and "--no-op-offload" in command
    doc, command = planned_command(tmp_path / "on", "llama-3.1-70b", "--weights", "Q4_K_M", "--hardware", "rtx-4090-24gb")
    assert doc["plan"]["op_offload"] is True and "--no-op-offload" not in command
