"""What pruning changes when a plan runs here: weight bytes, zeros and decode speed, dense against
50% unstructured and 2:4 magnitude pruning (transformers fp32 on the CPU, SmolLM2-135M, fitplan.load).

Usage: python bench/pruning.py [--tokens 64] [--repeat 3]
Prints a table; the quality side is bench/quality_probes.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import smollm2_path  # noqa: E402

PROMPT = "The capital of France is"


def plan_file(folder: str, prune: str | None) -> str:
    path = os.path.join(folder, f"plan-{prune or 'dense'}.json".replace(":", "-"))
    extra = ["--prune", prune] if prune else []
    subprocess.run([sys.executable, "-m", "fitplan.advisor.cli.commands", "advise", smollm2_path(), "--runtime", "transformers",
                    "--weights", "fp32", "--context", "1024", "--threads", "1", *extra, "-o", path], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def measure(path: str, tokens: int, repeat: int) -> dict[str, float]:
    import fitplan

    with fitplan.load(path) as handle:
        model = handle._session.model
        weights = [m.weight for n, m in model.named_modules() if type(m).__name__ == "Linear" and ".layers." in n]
        rates = []
        for _ in range(repeat):  # decode rate: the tokens after the first piece, over the time after it
            before, first = handle.tokens_out, None
            for _piece in handle.stream(PROMPT, max_tokens=tokens):
                first = first or time.perf_counter()
            rates.append((handle.tokens_out - before - 1) / (time.perf_counter() - first))
        return {"generated": handle.tokens_out // repeat, "bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                "zeros": sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights),
                "tok_s": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("FITPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="fitplan-pruning-"))
    folder = tempfile.mkdtemp(prefix="fitplan-plans-")
    rows = {name: measure(plan_file(folder, prune), args.tokens, args.repeat)
            for name, prune in (("dense", None), ("unstructured 50%", "unstructured:0.5"), ("2:4", "2:4"))}
    base = rows["dense"]
    print(f"{'plan':18} {'weight bytes':>14} {'block zeros':>12} {'tokens':>7} {'decode tok/s':>13} {'vs dense':>9}")
    for name, row in rows.items():
        print(f"{name:18} {row['bytes']:>14,} {row['zeros']:>12.1%} {row['generated']:>7} {row['tok_s']:>13.1f} "
              f"{row['tok_s'] / base['tok_s']:>8.2f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
