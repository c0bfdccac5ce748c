"""GPU validation: probe the GPU, then hold fitplan's predictions against real runs on it.

Run on a machine with an NVIDIA GPU (the device tool), within 8 minutes. That machine has no
network: models are built there from catalog configs with random weights (`from_config`: the
sizes, not the values, decide memory and speed), saved as safetensors, and run through
transformers by `fitplan verify`'s own code. Prints one table and writes JSON.

    python bench/gpu_validate.py --out $OUT/gpu_validate.json
    python bench/gpu_validate.py --allow-cpu --models smollm2-135m   # a dry run of the logic on a CPU

Carried wheels (see the device tool's README) must provide what fitplan imports there:
pydantic, pluggy, rich, psutil and nvidia-ml-py if missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DEFAULT_MODELS = ["smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b", "qwen2.5-1.5b"]


def build_model(name: str, folder: Path) -> Path:
    """A random-weight bf16 copy of a catalog model, saved as safetensors (config from the catalog)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fitplan.advisor.models.catalog import catalog_entry

    target = folder / name
    if (target / "config.json").is_file():
        return target
    entry = catalog_entry(name)
    config_dict = {**entry["config"], **{k: None for k in entry.get("null_keys", [])}}
    config = AutoConfig.for_model(**config_dict)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)
    _write_tokenizer(target, config.vocab_size)
    return target


def _write_tokenizer(target: Path, vocab_size: int) -> None:
    """A word-level tokenizer over the model's vocabulary size: verify only needs token ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    for i, word in enumerate("The quick brown fox jumps over the lazy dog while patient cat watches from wall .".split()):
        vocab[word] = i + 10
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="w0").save_pretrained(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_validate.json")
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (checks the logic only)")
    args = parser.parse_args()
    os.environ.setdefault("FITPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="fitplan-gpu-"))
    started = time.perf_counter()

    from fitplan.advisor.plans.verify_command import verify_plan
    from fitplan.profiles.detect import detect
    from fitplan.profiles.probes import run_probes

    hw = detect()
    if not hw.gpus and not args.allow_cpu:
        sys.exit("no NVIDIA GPU found (NVML); pass --allow-cpu for a dry run on the CPU")
    probes = run_probes(hw, progress=False)
    report: dict = {"hardware": json.loads(hw.model_dump_json()), "probes": json.loads(probes.model_dump_json()),
                    "cases": [], "errors": {}}
    folder = Path(tempfile.mkdtemp(prefix="fitplan-models-"))
    for name in args.models:
        try:
            path = build_model(name, folder)
            doc = verify_plan(str(path), prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                              repeat=args.repeat, runtime="transformers", weights="bf16", context=None, threads=None)
            report["cases"].append({"case": name, **doc})
        except Exception as exc:  # one failing case must not hide the others' figures
            report["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"{name}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report["plugin_vram"] = plugin_vram_check(folder)
    report["sparse_2_4"] = sparse_kernel_check()
    report["seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print_table(report)


PLUGIN_TESTS = """
import pytest, torch

@pytest.mark.fits_vram("4GB")
def test_one_gib_fits_4gb():
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda"); x.fill_(1)

@pytest.mark.fits_vram("512MB")
def test_one_gib_breaks_512mb():
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda"); x.fill_(1)
"""


def plugin_vram_check(folder: Path) -> dict:
    """The pytest plugin's measured fits_vram on this GPU: 1 GiB allocated passes 4GB, breaks 512MB."""
    import subprocess

    test_file, report = folder / "test_vram_budget.py", folder / "vram_report.json"
    test_file.write_text(PLUGIN_TESTS, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file),
                           "--fitplan-report", str(report)], capture_output=True, text=True, timeout=300)
    budgets = json.loads(report.read_text())["budgets"] if report.is_file() else []
    return {"exit_code": done.returncode, "budgets": budgets, "tail": done.stdout[-2000:]}


def sparse_kernel_check() -> dict:
    """2:4 semi-structured sparsity on this GPU (compute capability >= 8.0): the bytes of a bf16 4096x4096
    weight after torch.sparse.to_sparse_semi_structured against the 0.5625 pruning.toml predicts, and
    dense vs sparse matmul time at 1 and 512 tokens (the plan claims no speed gain)."""
    try:
        import torch
        from torch.sparse import to_sparse_semi_structured

        if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
            return {"skipped": "needs an NVIDIA GPU of compute capability >= 8.0"}
        weight = torch.randn(4096, 4096, dtype=torch.bfloat16, device="cuda")
        weight *= torch.tensor([0, 0, 1, 1], dtype=torch.bool, device="cuda").tile((4096, 1024))
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        sparse = to_sparse_semi_structured(weight)
        torch.cuda.synchronize()
        out = {"dense_bytes": weight.numel() * 2, "sparse_bytes": torch.cuda.memory_allocated() - before,
               "predicted_ratio": 0.5625}
        out["measured_ratio"] = out["sparse_bytes"] / out["dense_bytes"]
        for tokens in (1, 512):
            x = torch.randn(tokens, 4096, dtype=torch.bfloat16, device="cuda")
            for name, w in (("dense", weight), ("sparse", sparse)):
                for _ in range(10):
                    torch.nn.functional.linear(x, w)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(100):
                    torch.nn.functional.linear(x, w)
                torch.cuda.synchronize()
                out[f"{name}_{tokens}_tokens_us"] = (time.perf_counter() - start) * 1e4
        return out
    except Exception as exc:  # the other checks' figures still count
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def print_table(report: dict) -> None:
    gpus = ", ".join(g["name"] for g in report["hardware"]["gpus"]) or "no GPU (CPU dry run)"
    print(f"# gpu_validate on {gpus}, {report['seconds']:.0f} s")
    for i, figures in enumerate(report["probes"]["gpus"]):
        print(f"gpu{i} probes: " + ", ".join(f"{k} {v['value']:.1f} {v['unit']}" for k, v in figures.items()))
    print("| model | metric | predicted | measured | ratio |")
    print("|---|---|---|---|---|")
    for case in report["cases"]:
        for row in case["comparison"]:
            fmt = (lambda v: f"{v / 2**20:.0f} MiB") if row["unit"] == "bytes" else (lambda v: f"{v:.3g}")
            print(f"| {case['case']} | {row['metric']} | {fmt(row['predicted'])} | {fmt(row['measured'])} | "
                  f"{row['ratio']} |")
    for name, why in report["errors"].items():
        print(f"| {name} | error | {why} | | |")
    print(f"2:4 sparse kernels: {report.get('sparse_2_4')}")
    for budget in report.get("plugin_vram", {}).get("budgets", []):
        value = "not measured" if budget["value"] is None else f"{budget['value'] / 2**20:.0f} MiB"
        print(f"plugin {budget['test']}: {budget['kind']} {budget['limit_text']}: {value} -> "
              f"{'ok' if budget['passed'] else 'BROKEN'}")


if __name__ == "__main__":
    main()
