"""Cold start of `advise <catalog model> --hardware NAME` against a bare `python -c 'import json'`.

Runs both side by side, interleaved, and prints the medians and their ratio (target: under 20x).
Usage: python bench/cold_start.py [--runs N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ADVISE = [str(Path(sys.executable).with_name("advise")), "llama-3.1-8b", "--hardware", "rtx-4090-24gb"]
BARE = [sys.executable, "-c", "import json"]


def seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    seconds(ADVISE)  # warm the page cache and bytecode, as a user's second run would
    bare, advise = [], []
    for _ in range(runs):
        bare.append(seconds(BARE))
        advise.append(seconds(ADVISE))
    b, a = statistics.median(bare), statistics.median(advise)
    print(f"{'command':<58} {'median':>9} {'min':>9} {'max':>9}")
    print(f"{'python -c import json':<58} {b * 1000:>7.1f}ms {min(bare) * 1000:>7.1f}ms {max(bare) * 1000:>7.1f}ms")
    print(f"{' '.join(['advise', *ADVISE[1:]]):<58} {a * 1000:>7.1f}ms {min(advise) * 1000:>7.1f}ms {max(advise) * 1000:>7.1f}ms")
    print(f"ratio (median advise / median bare): {a / b:.1f}x  (target < 20x; {runs} runs each, interleaved)")


if __name__ == "__main__":
    main()
