"""Cold start of `advise <catalog model> --hardware NAME` against a bare `python -c 'import json'`.

Runs both side by side, interleaved, and prints the medians and their ratio (target: under 20x).
With --against REV, runs the same advise from the tree of git revision REV and from the working tree,
interleaved in pairs (which one goes first alternates, so a slower second run of a pair cancels out),
and prints the median of the new/old ratios of wall time and of CPU time (user + system; on a shared
machine the wall time also holds the time others' work took the core, the CPU time does not).
Usage: python bench/cold_start.py [--runs N] [--against REV]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ADVISE = [str(Path(sys.executable).with_name("advise")), "llama-3.1-8b", "--hardware", "rtx-4090-24gb"]
BARE = [sys.executable, "-c", "import json"]


def seconds(cmd: list[str]) -> float:
    return timed(cmd)[0]


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + system)."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed (wait status {status})")
    return wall, usage.ru_utime + usage.ru_stime


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
        news, olds = [], []
        for i in range(runs):
            if i % 2:
                n, o = timed(new_cmd), timed(old_cmd)
            else:
                o, n = timed(old_cmd), timed(new_cmd)
            olds.append(o), news.append(n)
    for k, what in ((0, "wall"), (1, "CPU")):
        new_s, old_s = [x[k] for x in news], [x[k] for x in olds]
        ratio = statistics.median(a / b for a, b in zip(new_s, old_s))
        print(f"advise {' '.join(ADVISE[1:])} {what}: working tree median {statistics.median(new_s) * 1000:.1f} ms, "
              f"{rev} median {statistics.median(old_s) * 1000:.1f} ms; median of {runs} paired ratios "
              f"new/old {ratio:.3f} (target <= 1.05)")


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
