"""GPU validation: probe the GPU, then hold fitplan's predictions against real runs on it.

Run on a machine with an NVIDIA GPU (the device tool) that has torch, transformers and accelerate
(no llama.cpp build), within 5 minutes (`--budget-s`, models past it are skipped and say so). That
machine has no network: models are built there from catalog configs with random weights
(`from_config`: the sizes, not the values, decide memory and speed), saved as safetensors, and run
through transformers by `fitplan verify`'s own code. Prints, and writes as JSON:
  - the CUDA context: what this process holds on the GPU (NVML) beyond torch's reserved memory, after
    a first cuBLAS matmul, against runtimes.toml's gpu_context_bytes;
  - the per-token overhead: the intercept of decode seconds per token against weight bytes over the
    models (launches, Python, sampling), and the slope's effective bandwidth against the spec sheet;
  - each model's peak memory (torch reserved, process RSS), prefill, decode and TTFT, predicted
    against measured.

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
    """A byte-level BPE tokenizer with no merges (one token per byte, ids below 256, under any model's
    vocabulary): verify only needs token ids. Written both as tokenizer.json and as vocab.json +
    merges.txt, because transformers 5's AutoTokenizer picks the tokenizer class by model type (a
    Qwen2 folder gets Qwen2Tokenizer, which reads those two files and ignores a word-level tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: i for i, char in enumerate(_byte_chars())}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(target)
    (target / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (target / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    assert vocab_size >= len(vocab)


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 bytes, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte], extra = chr(256 + extra), extra + 1
    return [chars[b] for b in range(256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_validate.json")
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip the models left once past this")
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
    context = cuda_context_check() if hw.gpus else {"skipped": "no GPU"}
    probes = run_probes(hw, progress=False)
    report: dict = {"hardware": json.loads(hw.model_dump_json()), "probes": json.loads(probes.model_dump_json()),
                    "cuda_context": context, "cases": [], "errors": {}, "skipped_for_time": []}
    folder = Path(tempfile.mkdtemp(prefix="fitplan-models-"))
    for name in args.models:
        if time.perf_counter() - started > args.budget_s:
            report["skipped_for_time"].append(name)
            continue
        try:
            path = build_model(name, folder)
            doc = verify_plan(str(path), prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                              repeat=args.repeat, runtime="transformers", weights="bf16", context=None, threads=None)
            report["cases"].append({"case": name, **doc})
        except Exception as exc:  # one failing case must not hide the others' figures
            report["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"{name}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report["per_token_overhead"] = per_token_overhead(report["cases"], hw)
    report["plugin_vram"] = plugin_vram_check(folder)
    report["sparse_2_4"] = sparse_kernel_check()
    report["seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print_table(report)


CONTEXT_PROBE = """
import json, pynvml, torch
pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
def held():
    import os
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if p.pid == os.getpid():
            return p.usedGpuMemory
    return None
a = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
(a @ a).sum().item()  # loads cuBLAS and its workspace, as a first forward does
torch.cuda.synchronize()
print(json.dumps({"process_bytes": held(), "torch_reserved_bytes": torch.cuda.memory_reserved(),
                  "torch": torch.__version__, "cuda": torch.version.cuda}))
"""


def cuda_context_check() -> dict:
    """What a fresh torch process holds on GPU 0 beyond its reserved memory: the CUDA context and cuBLAS
    (a subprocess, so nothing this script loaded counts), against fitplan's gpu_context_bytes."""
    import subprocess

    from fitplan.datafiles import load_table

    assumed = load_table("fitplan.strategies.data", "runtimes.toml")["transformers"]["gpu_context_bytes"]
    try:
        done = subprocess.run([sys.executable, "-c", CONTEXT_PROBE], capture_output=True, text=True, timeout=120)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as exc:  # the other checks' figures still count
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "assumed_bytes": assumed}
    if figures["process_bytes"] is None:
        return {**figures, "error": "NVML does not report this process's memory here", "assumed_bytes": assumed}
    context = figures["process_bytes"] - figures["torch_reserved_bytes"]
    return {**figures, "context_bytes": context, "assumed_bytes": assumed, "ratio": round(assumed / context, 3)}


def per_token_overhead(cases: list[dict], hw) -> dict:
    """Decode seconds per token = overhead + weight bytes read / bandwidth, fitted over the models run:
    the intercept is the fixed cost of a step, the slope the bandwidth decoding reaches."""
    import numpy as np

    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.strategies.quantization import tensor_bytes, weight_format

    points = []
    for case in cases:
        decode = next((r["measured"] for r in case["comparison"] if r["metric"] == "decode_tokens_per_s"), None)
        if decode:
            spec = resolve_model(case["model"]["location"] or case["case"])
            read = sum(n for t, n in tensor_bytes(spec, weight_format("bf16"))  # an untied embedding is a lookup
                       if t.role != "embed" or spec.tied_embeddings)
            points.append((read, 1 / decode))
    if len(points) < 2:
        return {"skipped": "needs decode figures of two models"}
    nbytes, seconds = np.array(points).T
    slope, intercept = np.polyfit(nbytes, seconds, 1)
    spec_bw = hw.gpus[0].memory_bandwidth_GB_per_s if hw.gpus else None
    out = {"points": [{"weight_bytes": int(b), "seconds_per_token": s} for b, s in points],
           "overhead_ms": round(intercept * 1e3, 3),
           "effective_GB_per_s": round(1 / slope / 1e9, 1) if slope > 0 else None}
    if spec_bw and out["effective_GB_per_s"]:
        out["share_of_spec_bandwidth"] = round(out["effective_GB_per_s"] / spec_bw, 3)
    return out


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
    ctx = report.get("cuda_context", {})
    if "context_bytes" in ctx:
        print(f"CUDA context + cuBLAS (NVML process memory - torch reserved): {ctx['context_bytes'] / 2**20:.0f} MiB "
              f"measured, {ctx['assumed_bytes'] / 2**20:.0f} MiB assumed (torch {ctx['torch']}, CUDA {ctx['cuda']})")
    else:
        print(f"CUDA context: {ctx}")
    over = report.get("per_token_overhead", {})
    if "overhead_ms" in over:
        print(f"decode per-token overhead {over['overhead_ms']} ms, effective bandwidth {over['effective_GB_per_s']} GB/s"
              f" ({over.get('share_of_spec_bandwidth')} of spec) over {len(over['points'])} models")
    else:
        print(f"per-token overhead: {over}")
    if report.get("skipped_for_time"):
        print(f"skipped for time: {', '.join(report['skipped_for_time'])}")
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
