"""How long this machine's probes take: the full default run (target < 30 s, so `--probe` stays a quick
step) and a cached call (target < 1 s). Timing lives here, not in the tests: CI shares its machine.

Each run measures into a fresh cache folder, so nothing a user cached is read or replaced.
Usage: python bench/probes.py [--runs N] [--model FILE.gguf]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=None, help="a GGUF file whose disk read is probed too")
    args = parser.parse_args()
    full, cached = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            os.environ["FITPLAN_CACHE_DIR"] = folder
            from fitplan.profiles.detect import detect
            from fitplan.profiles.probes import probes_or_cached

            hw, files = detect(), [args.model] if args.model else []
            start = time.perf_counter()
            probes_or_cached(hw, model_files=files, progress=False)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            probes_or_cached(hw, model_files=files, progress=False)
            cached.append(time.perf_counter() - start)
    print(f"{'call':<28} {'median':>9} {'min':>9} {'max':>9}  target")
    for name, values, target in (("full default run", full, "< 30 s"), ("cached call", cached, "< 1 s")):
        print(f"{name:<28} {statistics.median(values):>8.3f}s {min(values):>8.3f}s {max(values):>8.3f}s  {target}")
    print(f"({args.runs} runs{', disk read of ' + args.model if args.model else ''})")


if __name__ == "__main__":
    main()
