"""Strategies as registered through the hooks: their requirements on named profiles, how the solver
uses them (excluded formats, FlashAttention-2, 2:4 sparse kernels) and third-party plugins."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.solver import Request, advise
from fitplan.errors import BadValueError
from fitplan.profiles.named import load_profile
from fitplan.strategies.quantization import tensor_bytes, weight_format
from fitplan.strategies.registry import option, strategies

FITPLAN = Path(sys.executable).with_name("fitplan")


def test_every_builtin_strategy_is_registered_with_options() -> None:
    """The eight techniques of the design are registered, each option with a requirement and how it runs."""
    found = strategies()
    assert set(found) == {"quantization", "offload", "pruning", "attention", "speculative", "kv_cache",
                          "batching", "runtime"}
    for strategy in found.values():
        assert strategy.options(), strategy.name
        assert all(o.execute for o in strategy.options()), strategy.name
    assert {"Q4_K_M", "nf4", "gptq-4bit-g128", "awq-4bit-g128", "bf16"} <= {o.name for o in found["quantization"].options()}


@pytest.mark.parametrize(("strategy", "name", "profile", "why"), [
    ("attention", "flash_attention_2", "t4-16gb", r"compute capability >= 8.0 \(Tesla T4: 7.5\)"),
    ("attention", "flash_attention_2", "a100-80gb", None),
    ("quantization", "nf4", "apple-m2-max-32gb", "needs an NVIDIA GPU"),
    ("quantization", "nf4", "gha-ubuntu-4core", "needs a GPU"),
    ("quantization", "nf4", "rtx-3060-12gb", None),
    ("pruning", "2:4 sparse kernels", "rtx-3060-12gb", None),  # Ampere: compute capability 8.6
    ("runtime", "vllm", "apple-m2-max-32gb", "needs an NVIDIA GPU"),
])
def test_gpu_requirements_on_named_profiles(strategy: str, name: str, profile: str, why: str | None) -> None:
    """Requirements read the profile's GPUs: FlashAttention-2 and 2:4 kernels need cc >= 8.0, bitsandbytes NVIDIA."""
    import re

    unmet = option(strategy, name).requirement.unmet(load_profile(profile), "gpu")
    assert (unmet is None) if why is None else re.search(why, unmet or ""), unmet


def test_formats_a_machine_cannot_run_are_excluded_with_the_reason() -> None:
    """On a CPU-only runner bitsandbytes is not weighed unpinned (no GPU; its CPU speed is not modelled),
    and the answer says why; a pinned nf4 on an Apple machine runs on its CPU; GPTQ without a GPU is refused."""
    advice = advise(catalog_spec("llama-3.1-8b"), load_profile("gha-ubuntu-4core"), Request())
    assert {name: why.split(";")[0] for name, why in advice.excluded} == {"bnb-int8": "GPU: needs a GPU",
                                                                          "nf4": "GPU: needs a GPU"}
    assert all("only when pinned" in why for _, why in advice.excluded)
    apple = advise(catalog_spec("llama-3.1-8b"), load_profile("apple-m2-max-32gb"), Request(weights="nf4")).chosen
    assert apple.placement == "cpu"  # bitsandbytes' CUDA kernels cannot use the Apple GPU; its CPU backend can run
    with pytest.raises(BadValueError, match=r"--weights gptq-4bit-g128 cannot run on gha-ubuntu-4core: needs a GPU$"):
        advise(catalog_spec("llama-3.1-8b"), load_profile("gha-ubuntu-4core"), Request(weights="gptq-4bit-g128"))


def test_flash_attention_2_follows_its_requirement() -> None:
    """transformers --flash-attn: FlashAttention-2 on an A100; refused on a T4 (Turing) with the reason."""
    spec = catalog_spec("llama-3.1-8b")
    chosen = advise(spec, load_profile("a100-80gb"), Request(runtime="transformers", weights="bf16", flash_attn=True)).chosen
    assert chosen.setup.flash_attn and chosen.placement == "gpu"
    with pytest.raises(BadValueError, match="flash_attention_2, which needs compute capability >= 8.0"):
        advise(spec, load_profile("t4-16gb"), Request(runtime="transformers", flash_attn=True))


def test_two_four_sparse_kernels_shrink_block_weights_where_they_run() -> None:
    """--prune 2:4 with bf16 on an A100: every block linear weight at 0.5625 of its bytes (torch's
    semi-structured layout), the rest dense; on a T4 (cc 7.5) the plan stays dense and says why."""
    spec = catalog_spec("llama-3.1-8b")
    dense = tensor_bytes(spec, weight_format("bf16"))
    expected = sum(int(b * 0.5625) if t.role == "block" and t.is_matrix else b for t, b in dense)
    chosen = advise(spec, load_profile("a100-80gb"), Request(weights="bf16", prune="2:4")).chosen
    assert chosen.setup.sparse_kernels and chosen.setup.prune == "2:4"
    assert chosen.memory["gpu0"].weights == expected < 0.65 * sum(b for _, b in dense)
    t4 = advise(spec, load_profile("t4-16gb"), Request(weights="bf16", prune="2:4")).chosen
    assert not t4.setup.sparse_kernels
    assert sum(m.weights for m in t4.memory.values()) == sum(b for _, b in dense)
    with pytest.raises(BadValueError, match="--prune 2:4 runs on transformers only"):
        advise(spec, load_profile("a100-80gb"), Request(runtime="llama.cpp", prune="2:4"))


def test_sparse_layout_ratio_is_torchs_own() -> None:
    """The 0.5625 in pruning.toml is what torch's CUTLASS conversion (it runs on the CPU) produces."""
    torch = pytest.importorskip("torch")
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass

    from fitplan.datafiles import load_table

    ratios = load_table("fitplan.strategies.data", "pruning.toml")["2:4 sparse kernels"]["bytes_ratio"]
    mask = torch.tensor([0, 0, 1, 1], dtype=torch.bool).tile((128, 64))
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        weight = (torch.randn(128, 256) + 3).to(dtype) * mask
        values, meta = sparse_semi_structured_from_dense_cutlass(weight)
        stored = values.numel() * values.element_size() + meta.numel() * meta.element_size()
        assert stored / (weight.numel() * weight.element_size()) == ratios[name]


def test_advise_prune_json_says_whether_kernels_run() -> None:
    """advise --prune 2:4 --json: sparse_kernels true on an A100 with bf16; false with the reason on a T4."""
    def pruning(profile: str) -> dict:
        run = subprocess.run([str(FITPLAN), "advise", "llama-3.1-8b", "--hardware", profile, "--weights", "bf16",
                              "--prune", "2:4", "--json"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)["plan"]["pruning"]

    assert pruning("a100-80gb")["sparse_kernels"] is True
    t4 = pruning("t4-16gb")
    assert t4["sparse_kernels"] is False and "compute capability" in t4["no_sparse_kernels_because"]


def _plugin_env(tmp_path: Path, body: str) -> dict[str, str]:
    """A plugin package found through a `fitplan` entry point, on PYTHONPATH (no pip needed)."""
    (tmp_path / "demo_fitplan_plugin.py").write_text(textwrap.dedent(body))
    info = tmp_path / "demo_fitplan_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-fitplan-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fitplan]\ndemo = demo_fitplan_plugin\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path), "FITPLAN_CACHE_DIR": str(tmp_path / "cache")}


PLUGIN = """
    from fitplan.strategies.hookspecs import hookimpl
    from fitplan.strategies.strategy import Option, Requirement, TableStrategy

    def _options():
        return [Option("demo-cache", "zstd-kv", Requirement(devices=("cpu",)), {}, "set DEMO_KV=zstd")]

    @hookimpl
    def fitplan_register_strategies(register):
        register(TableStrategy("demo-cache", "a third-party strategy", _options))
"""


def test_a_third_party_plugin_registers_a_strategy(tmp_path: Path) -> None:
    """A package with a `fitplan` entry point adds its strategy beside the built-ins; the scan is cached."""
    env = _plugin_env(tmp_path, PLUGIN)
    for _ in range(2):  # the second run reads the cached scan
        run = subprocess.run([str(FITPLAN), "strategies", "--json"], capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
        rows = json.loads(run.stdout)
        assert {"strategy": "demo-cache", "option": "zstd-kv"}.items() <= rows[-1].items()
        assert any(r["option"] == "Q4_K_M" for r in rows)
    assert len(list((tmp_path / "cache" / "plugins").glob("*.json"))) == 1


def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path) -> None:
    """A plugin that fails to import stops with one line naming the plugin, exit 2, no traceback."""
    env = _plugin_env(tmp_path, "raise ImportError('needs libdemo.so')\n")
    run = subprocess.run([str(FITPLAN), "strategies"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == ("fitplan: error: fitplan plugin 'demo' (demo_fitplan_plugin) failed to load: "
                                  "ImportError: needs libdemo.so")


def test_advise_imports_no_pluggy_without_plugins(tmp_path: Path) -> None:
    """With no plugin installed the built-in hooks are called directly: advise never imports pluggy."""
    code = textwrap.dedent("""
        import sys
        from fitplan.advisor.cli.commands import main
        try:
            main(['advise', 'smollm2-135m', '--hardware', 'gha-ubuntu-4core', '--json'])
        finally:
            print('pluggy' in sys.modules, file=sys.stderr)
    """)
    env = {**os.environ, "FITPLAN_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert run.stderr.strip().splitlines()[-1] == "False", run.stderr


def test_pruning_is_refused_on_quantized_weights() -> None:
    """Pruning zeroes dense weights: pinned with a quantized transformers format (bitsandbytes, dynamic int8)
    it is one line, and unpinned it plans only the dense formats."""
    spec = catalog_spec("llama-3.2-1b")
    for weights in ("nf4", "int8-dynamic"):
        with pytest.raises(BadValueError, match=f"zeroes fp32/bf16/fp16 weights; {weights} quantizes them"):
            advise(spec, load_profile("laptop-cpu-16gb"), Request(weights=weights, prune="unstructured:0.5"))
    chosen = advise(spec, load_profile("laptop-cpu-16gb"), Request(prune="unstructured:0.5")).chosen
    assert chosen.fmt.family == "dense"
