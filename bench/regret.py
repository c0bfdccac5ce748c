"""Regret of the solver on this machine: measure every feasible CPU candidate it considered for
SmolLM2-135M and compare its choice with the fastest measured one (target: within 5%).

GGUF candidates are written by llama.cpp's own quantizer (requantized from the real Q4_1 file,
`allow_requantize`), transformers candidates load the GGUF converted once. Speeds are calibrated
first (the runtime probe, as `advise --probe` does), then every candidate runs through
`fitplan verify` (64-token prompt, 32 generated, 1 thread).
Usage: python bench/regret.py [--repeat 2]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import calibrate, smollm2_path  # noqa: E402  (the same calibration as the accuracy bench)

THREADS, CONTEXT = 1, 2048


def requantize(source: str, file_type: str, folder: Path) -> str:
    import llama_cpp

    target = folder / f"smollm2-{file_type}.gguf"
    if not target.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}")
        params.allow_requantize = True
        params.nthread = 2
        if llama_cpp.llama_model_quantize(source.encode(), str(target).encode(), ctypes.byref(params)) != 0:
            raise RuntimeError(f"llama_model_quantize failed for {file_type}")
    return str(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("FITPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="fitplan-regret-"))
    from fitplan.advisor.models.model_files import gguf_spec
    from fitplan.advisor.planner.calibration import load_calibration
    from fitplan.advisor.planner.solver import Request, advise
    from fitplan.advisor.plans.verify_command import verify_plan
    from fitplan.profiles.detect import detect
    from fitplan.profiles.probes import fingerprint, load_cached

    source = smollm2_path()
    calibrate(source)
    spec, hw = gguf_spec(source), detect()
    probes, calibration = load_cached(hw), load_calibration(fingerprint(hw))
    folder = Path(tempfile.mkdtemp(prefix="fitplan-regret-models-"))
    rows = []
    for objective in ("speed", "balanced"):
        advice = advise(spec, hw, Request(threads=THREADS, context=CONTEXT, objective=objective),
                        probes=probes, calibration=calibration)
        plans = [advice.chosen, *advice.alternatives]
        if objective == "speed":
            for c in plans:  # measure each candidate once; the balanced pass reuses the figures
                path = source if c.setup.runtime == "transformers" or not c.converted else \
                    requantize(source, c.fmt.name, folder)
                doc = verify_plan(path, prompt_tokens=64, gen_tokens=32, repeat=args.repeat, runtime=c.setup.runtime,
                                  weights=c.fmt.name if c.setup.runtime == "transformers" else None,
                                  context=CONTEXT, threads=THREADS)
                measured = next(r for r in doc["comparison"] if r["metric"] == "decode_tokens_per_s")["measured"]
                rows.append((c, measured))
                print(f"measured {c.label}: {measured:.1f} tok/s", file=sys.stderr)
        report(objective, advice, rows)


def report(objective: str, advice, rows) -> None:
    from fitplan.advisor.planner.solver import plan_loss_of, weight_format

    measured = {id(c): m for c, m in rows}
    by_label = {c.label: m for c, m in rows}
    chosen = advice.chosen
    pool = rows
    if objective == "balanced":
        bound = weight_format("Q4_K_M").ppl_increase
        within = [(c, m) for c, m in rows if plan_loss_of(c) <= bound]
        pool = within or [(c, m) for c, m in rows if plan_loss_of(c) == min(plan_loss_of(x) for x, _ in rows)]
    best_label, best = max(((c.label, m) for c, m in pool), key=lambda x: x[1])
    got = measured.get(id(chosen), by_label.get(chosen.label))
    print(f"\n## objective {objective}: {len(rows)} candidates measured ({len(pool)} eligible)")
    print("| candidate | predicted decode tok/s | measured | loss |")
    print("|---|---|---|---|")
    for c, m in sorted(rows, key=lambda r: -r[1]):
        mark = " **chosen**" if c.label == chosen.label else ""
        print(f"| {c.label}{mark} | {c.speed.decode_tokens_per_s:.1f} | {m:.1f} | {plan_loss_of(c):.3f} |")
    print(f"chosen: {chosen.label} measured {got:.1f} tok/s; fastest eligible measured: {best_label} {best:.1f} tok/s; "
          f"regret {1 - got / best:.1%} (target <= 5%)")


if __name__ == "__main__":
    main()
