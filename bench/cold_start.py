"""Cold start of `advise <catalog model> --hardware NAME` against a bare `python -c 'import json'`.

Runs both side by side, interleaved, and prints the medians and their ratio (target: under 20x).
With --against REV, runs the same advise from the tree of git revision REV and from the working tree,
interleaved in pairs, and prints the median of the new/old ratios (a change's cost, in the same run).
Usage: python bench/cold_start.py [--runs N] [--against REV]
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


def from_tree(tree: str) -> list[str]:
    """advise, importing fitplan from `tree` rather than the installed copy."""
    code = f"import sys; sys.path.insert(0, {tree!r}); from fitplan.advisor.cli.commands import advise_main; advise_main()"
    return [sys.executable, "-c", code, *ADVISE[1:]]


def against(rev: str, runs: int) -> None:
    import tempfile

    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", root, "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        new_cmd, old_cmd = from_tree(root), from_tree(old)
        seconds(new_cmd), seconds(old_cmd)  # bytecode and page cache warm for both
        ratios, news, olds = [], [], []
        for _ in range(runs):
            o, n = seconds(old_cmd), seconds(new_cmd)
            olds.append(o), news.append(n), ratios.append(n / o)
    print(f"advise {' '.join(ADVISE[1:])}: working tree median {statistics.median(news) * 1000:.1f} ms, "
          f"{rev} median {statistics.median(olds) * 1000:.1f} ms")
    print(f"median of {runs} paired ratios new/old: {statistics.median(ratios):.3f} (target <= 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--against", help="a git revision to compare the working tree with")
    parsed = parser.parse_args()
    runs = parsed.runs
    if parsed.against:
        against(parsed.against, runs)
        return
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
