"""A third-party runtime, installed through the `fitplan` entry point, is planned for and run like a
built-in one: it appears in `fitplan strategies`, `advise --runtime toy` chooses it, `fitplan run`
executes the plan and `fitplan export` writes it out (strategies/runtimes/contract.py).

The toy package is written into a folder on PYTHONPATH with its dist-info (no pip needed). Its cost
model sizes fp32 weights and an f32 KV cache on the CPU; its session reads the GGUF header with
fitplan's own reader and streams words built from it, so a plan that never reached the toy could
not produce them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TOY = '''
    from fitplan.plan_spec import DeviceMemory, RunTarget
    from fitplan.strategies.hookspecs import hookimpl
    from fitplan.strategies.kv_cache import element_bytes, kv_widths
    from fitplan.strategies.runtimes.contract import ServeCommand


    class ToyCost:
        name = "toy"
        aliases = ("toy-runtime",)
        kv_cache_types = ("f32",)
        features = frozenset()
        preallocates_kv = True
        smaller_kv_cache = ""
        formats = {"toy-f32": {"family": "dense", "devices": ["cpu"], "auto": True, "ppl_increase": 0.0,
                               "quality_source": "the toy keeps fp32 weights", "bytes_per_weight": 4}}
        strategy_row = {"devices": ["cpu"], "execute": "toy_fitplan_runtime (a test package)", "source": "tests"}

        def constants(self):
            return {"overhead_bytes": 1_000_000}

        def layer_device(self, spec, setup, layer):
            return "cpu"

        def place(self, spec, setup, weights):
            return {"cpu": list(weights)}

        def memory(self, spec, setup, weights, prompt_tokens=None):
            k, v = kv_widths(spec, self.name)
            kv = int((k + v) * element_bytes(setup.kv_cache) * setup.context * setup.batch * spec.layers)
            return {"cpu": DeviceMemory(weights=sum(b for _, b in weights), kv_cache=kv,
                                        overhead=self.constants()["overhead_bytes"])}

        def default_kv_cache(self, fmt, hw, gpu_layers):
            return "f32"

        def flash_attn(self, wanted, kv_cache, hw, all_on_gpu):
            return False

        def flash_attn_unmet(self, hw):
            return "the toy has no fused attention"

        def refuse(self, setup):
            return "" if setup.gpu_layers == 0 else "the toy runs on the CPU only"


    class ToySession:
        def __init__(self, target: RunTarget):
            from fitplan.advisor.models.resolve import resolve_model

            spec = resolve_model(target.weights().path)
            self.words = [spec.architecture, f"{spec.layers}-layers", f"{target.setup.threads}-threads"]

        def count_tokens(self, text, *, prompt):
            return len(text.split())

        def stream(self, prompt, max_tokens):
            for i in range(max_tokens):
                yield ("" if i == 0 else " ") + self.words[i % len(self.words)], 1

        def close(self):
            self.words = []


    class ToyExecutor:
        name = "toy"
        exports = ("toy-script",)

        def missing(self):
            return None

        def prepare(self, source):
            return source

        def open(self, source, setup, *, layers):
            raise NotImplementedError("the toy is not timed")

        def session(self, target):
            return ToySession(target)

        def serve(self, target, *, port, host):
            return ServeCommand(["toy-serve", target.weights().path, str(port)], target.name)

        def export(self, target, to, *, max_tokens, port):
            return f"toy-generate {target.weights().path} --tokens {max_tokens} --threads {target.setup.threads}"


    @hookimpl
    def fitplan_register_runtimes(register):
        register(ToyCost())
        register(ToyExecutor())
'''


@pytest.fixture()
def toy_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_fitplan_runtime.py").write_text(textwrap.dedent(TOY))
    info = site / "toy_fitplan_runtime-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-fitplan-runtime\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fitplan]\ntoy = toy_fitplan_runtime\n")
    return {**os.environ, "PYTHONPATH": str(site), "FITPLAN_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}


def _run(command: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_a_third_party_runtime_is_listed_planned_and_run(toy_env: dict[str, str], tmp_path: Path,
                                                          smollm2_gguf: str) -> None:
    listed = _run("fitplan", "strategies", "--json", env=toy_env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["strategy"], r["option"]): r for r in json.loads(listed.stdout)}
    assert ("runtime", "toy") in rows and ("quantization", "toy-f32") in rows
    assert rows[("runtime", "toy")]["execute"] == "toy_fitplan_runtime (a test package)"

    helped = _run("advise", "--help", env=toy_env, cwd=tmp_path)
    assert "onnxruntime, toy" in " ".join(helped.stdout.split())  # --runtime's help comes from the registry

    advised = _run("advise", smollm2_gguf, "--hardware", "laptop-cpu-16gb", "--runtime", "toy-runtime", "--threads", "2",
                   "--json", "-o", "plan.json", env=toy_env, cwd=tmp_path)
    assert advised.returncode == 0, advised.stderr
    doc = json.loads(advised.stdout)
    assert doc["fits"] and (doc["plan"]["runtime"], doc["plan"]["weights"], doc["plan"]["kv_cache"]) == ("toy", "toy-f32", "f32")
    spec_bytes = doc["model"]["parameters"] * 4
    assert doc["predicted"]["memory"]["cpu"]["weights"] == pytest.approx(spec_bytes, rel=0.01)  # fp32, as the toy sizes it
    assert doc["predicted"]["decode_tokens_per_s"] > 0  # fitplan's speed model over the toy's placement

    ran = _run("fitplan", "run", "plan.json", "--prompt", "hello there", "--max-tokens", "4", env=toy_env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "llama 30-layers 2-threads llama"  # SmolLM2-135M: a llama, 30 blocks
    assert "[toy toy-f32: 2 prompt tokens, 4 generated" in ran.stderr

    exported = _run("fitplan", "export", "plan.json", "--to", "toy-script", env=toy_env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"toy-generate {smollm2_gguf} --tokens 128 --threads 2"


def test_a_plan_file_names_a_registered_runtime(toy_env: dict[str, str], tmp_path: Path, smollm2_gguf: str) -> None:
    """Without the package, the toy's plan is refused in one line: the plan file's runtime is checked
    against the registered runtimes, not a fixed list."""
    made = _run("advise", smollm2_gguf, "--hardware", "laptop-cpu-16gb", "--runtime", "toy", "-o", "plan.json",
                env=toy_env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    bare = {k: v for k, v in toy_env.items() if k != "PYTHONPATH"}
    ran = _run("fitplan", "run", "plan.json", "--prompt", "hi", env=bare, cwd=tmp_path)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert ran.stderr.count("\n") == 1 and "unknown runtime 'toy'" in ran.stderr
