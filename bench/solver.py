"""Full solve time of `advise` cases, interpreter start-up and imports excluded (target < 100 ms).

Each case is solved once to warm imports and data tables, then timed over repeats with fresh
caches of the weight-byte computation, so every run recomputes the quantization recipe.
Usage: python bench/solver.py [--repeat 20]
"""
from __future__ import annotations

import argparse
import statistics
import time

CASES = [("llama-3.1-70b", "2xrtx-4090-24gb"), ("mixtral-8x7b-v0.1", "rtx-4090-24gb"),
         ("llama-3.1-8b", "rtx-3060-12gb"), ("llama-3.1-405b", "laptop-cpu-16gb")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    from fitplan.advisor.models.catalog import catalog_spec
    from fitplan.advisor.planner.solver import Request, advise
    from fitplan.profiles.named import load_profile
    from fitplan.strategies.quantization import tensor_bytes

    print(f"{'model':<20} {'hardware':<18} {'candidates':>10} {'median':>9} {'min':>9} {'max':>9}  plan")
    for model, hardware in CASES:
        spec, hw = catalog_spec(model), load_profile(hardware)
        advise(spec, hw, Request())  # warm-up: imports, TOML tables
        times = []
        for _ in range(args.repeat):
            tensor_bytes.cache_clear()
            start = time.perf_counter()
            advice = advise(spec, hw, Request())
            times.append(time.perf_counter() - start)
        count = 1 + len(advice.alternatives) + len(advice.rejected)
        plan = f"{advice.chosen.label}{'' if advice.fits else ' (does not fit)'}"
        print(f"{model:<20} {hardware:<18} {count:>10} {statistics.median(times) * 1e3:>7.1f}ms "
              f"{min(times) * 1e3:>7.1f}ms {max(times) * 1e3:>7.1f}ms  {plan}")


if __name__ == "__main__":
    main()
