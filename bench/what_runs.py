"""`fitplan models --hardware NAME`: what every catalog model gets on one profile, and how long it takes.

Prints the ranked table (as the command does) and the wall time of the survey alone, in-process,
after one warm-up run (the command's own start adds ~0.5 s). Target: the whole catalog under 10 s.
Usage: python bench/what_runs.py [--hardware rtx-4090-24gb] [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

from fitplan.advisor.models.catalog import all_entries
from fitplan.advisor.planner.survey import survey
from fitplan.profiles.named import hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="rtx-4090-24gb")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    hw = hardware(args.hardware)
    rows = survey(hw)  # warm-up: imports, table loads
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        rows = survey(hw)
        times.append(time.perf_counter() - start)
    print(f"{'model':<30} {'params':>8} {'format':<7} {'placement':<26} {'tok/s':>7} {'GB':>6}")
    for r in rows:
        memory = sum(r.memory_bytes.values()) / 1e9 if r.memory_bytes else 0.0
        rate = f"{r.decode_tokens_per_s:.1f}" if r.fits and r.decode_tokens_per_s else "-"
        print(f"{r.name:<30} {r.parameters / 1e9:>7.1f}B {r.format or '-':<7} "
              f"{(r.placement if r.fits else 'does not fit'):<26} {rate:>7} {memory if r.fits else 0:>6.1f}")
    print(f"\n{len(rows)} of {len(all_entries())} catalog models on {hw.name}: survey median "
          f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s ({args.runs} runs; "
          "target < 10 s)")


if __name__ == "__main__":
    main()
