"""`fitplan hardware --for MODEL` and `advise MODEL --compare`, timed as a user runs them (a fresh process).

Prints one row a command: wall seconds (median of --runs), the profiles answered and how many meet the
requirement. Target: `hardware --for` under 5 s for every profile (issue 16). A table, never a test:
CI shares its machine.
Usage: python bench/hardware.py [--runs N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

FITPLAN = str(Path(sys.executable).with_name("fitplan"))
CASES = [
    ("hardware --for qwen3-30b-a3b --min-tokens-per-s 20", ["hardware", "--for", "qwen3-30b-a3b", "--min-tokens-per-s", "20"]),
    ("hardware --for llama-3.1-70b --context 32768", ["hardware", "--for", "llama-3.1-70b", "--context", "32768"]),
    ("hardware --for gpt-oss-120b --min-tokens-per-s 10", ["hardware", "--for", "gpt-oss-120b", "--min-tokens-per-s", "10"]),
    ("advise llama-3.1-70b --compare (4 profiles)", ["advise", "llama-3.1-70b", "--compare",
     "rtx-5090-32gb,2xrtx-3090-24gb,apple-m3-ultra-512gb,dgx-spark-128gb"]),
]


def timed(args: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run([FITPLAN, *args, "--json"], capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    print(f"{'command':52} {'wall s (median)':>16} {'profiles':>9} {'meet':>5}")
    for name, args in CASES:
        times, doc = [], {}
        for _ in range(runs):
            seconds, doc = timed(args)
            times.append(seconds)
        rows = doc.get("profiles") or doc.get("compare") or []
        meet = sum(1 for r in rows if r.get("meets", r.get("summary", {}).get("meets")))
        print(f"{name:52} {statistics.median(times):16.2f} {len(rows):9} {meet:5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
