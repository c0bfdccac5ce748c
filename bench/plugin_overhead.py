"""Overhead of the fitplan pytest plugin on 500 trivial tests: off, on without markers, on with a
fits_ram marker on every test. Prints the medians and ratios (targets: < 2% without markers,
< 10% with).

Usage: python bench/plugin_overhead.py [--tests 500] [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = "def test_{i}():\n    assert {i} >= 0\n"
MARKED = "@pytest.mark.fits_ram('100MB')\ndef test_{i}():\n    assert {i} >= 0\n"


def write_suite(folder: Path, template: str, count: int) -> Path:
    path = folder / f"test_{'marked' if 'mark' in template else 'plain'}.py"
    path.write_text("import pytest\n\n" + "\n".join(template.format(i=i) for i in range(count)), encoding="utf-8")
    return path


def seconds(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fitplan-overhead-"))
    plain, marked = write_suite(folder, PLAIN, args.tests), write_suite(folder, MARKED, args.tests)
    cases = {
        "plugin off (-p no:fitplan), plain tests": ["-p", "no:fitplan", plain.name],
        "plugin on, plain tests": [plain.name],
        "plugin off, marked tests (marker ignored)": ["-p", "no:fitplan", "-W", "ignore::pytest.PytestUnknownMarkWarning",
                                                      marked.name],
        "plugin on, fits_ram on every test": [marked.name],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so drift on a shared machine hits every case alike
        for name, case in cases.items():
            times[name].append(seconds(case, folder))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.tests} trivial tests, {args.runs} runs each, interleaved; whole pytest process time")
    print(f"{'case':<46} {'median':>9} {'min':>9} {'max':>9}")
    for name, values in times.items():
        print(f"{name:<46} {medians[name]:>8.3f}s {min(values):>8.3f}s {max(values):>8.3f}s")
    names = list(cases)
    print(f"overhead without markers: {medians[names[1]] / medians[names[0]] - 1:+.1%} (target < 2%)")
    print(f"overhead with fits_ram on every test: {medians[names[3]] / medians[names[2]] - 1:+.1%} (target < 10%)")


if __name__ == "__main__":
    main()
