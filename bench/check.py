"""`fitplan check` on 20 budget entries x 3 profiles: the time to predict and judge all 60 cases,
interpreter start-up and imports excluded (target < 2 s on the 2-core CI machine).

Usage: python bench/check.py [--repeat 5]
Prints a table: each run's time for a fresh process state (solver caches cleared), and the median.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["llama-3.1-8b", "llama-3.2-3b", "llama-3.2-1b", "qwen2.5-7b", "mistral-7b-v0.3", "gemma-2-9b",
          "phi-3-mini-4k", "smollm2-135m", "smollm2-1.7b", "qwen2.5-0.5b"]
PROFILES = ["rtx-3060-12gb", "rtx-4090-24gb", "gha-ubuntu-4core"]


def budgets_file(folder: Path) -> Path:
    from fitplan.advisor.models.catalog import catalog_names

    known = set(catalog_names())
    models = [m for m in MODELS if m in known]
    models += [m for m in catalog_names() if m not in models and "70b" not in m and "405b" not in m]
    entries = []
    for i in range(20):
        model = models[i % len(models)]
        weights = ("Q4_K_M", "Q8_0")[i // len(models) % 2]
        entries.append(f'[[budget]]\nmodel = "{model}"\nweights = "{weights}"\ncontext = 4096\n'
                       f'hardware = {PROFILES!r}\nmax_vram = "12GB"\nmax_ram = "16GB"\n'
                       f'min_decode_tokens_per_s = 5\nmax_ttft = "10s"\n')
    path = folder / "fitplan.toml"
    path.write_text("\n".join(entries).replace("'", '"'))
    return path


def clear_caches() -> None:
    from fitplan.advisor.budgets import predicted
    from fitplan.strategies import quantization

    for cached in (predicted.predicted_plan, predicted.model_spec, predicted.hardware, quantization.tensor_bytes):
        cached.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from fitplan.advisor.budgets.budget_file import load_budgets
    from fitplan.advisor.budgets.check import check

    path = budgets_file(Path(tempfile.mkdtemp(prefix="fitplan-check-bench-")))
    check(load_budgets(str(path)))  # imports and the data tables, excluded as the target says
    times = []
    for _ in range(args.repeat):
        clear_caches()
        start = time.perf_counter()
        rows = check(load_budgets(str(path)))
        times.append(time.perf_counter() - start)
    cases = len({(r.entry, r.profile) for r in rows})
    print(f"{'run':>4} {'seconds':>8}")
    for i, t in enumerate(times, 1):
        print(f"{i:>4} {t:>8.3f}")
    print(f"median {statistics.median(times):.3f} s for {cases} entry x profile cases ({len(rows)} limits); "
          f"target < 2 s", file=sys.stdout)


if __name__ == "__main__":
    main()
