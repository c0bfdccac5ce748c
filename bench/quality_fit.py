"""The size rule of fitplan's quality priors, fitted on one split of the published tables and tested on the
others: how much more a GGUF format costs a smaller model.

fitplan's figure for a format is its loss on Llama-3-8B (the llama.cpp scoreboard, the anchor). For a model
of N parameters it is scaled by (N / N_anchor) ** -b: the relative perplexity increase of a format, PPL(q) /
PPL(f16) - 1, falls as models grow (Qwen1.5's table: Q4_K_M costs its 0.5B model 9.9%, its 72B 0.6%).
b is fitted, by least squares on log(relative increase), on the TRAIN families only; the HELD-OUT families
are never seen by the fit and give the error stated in docs/quality.md.

Points: the llama.cpp perplexity tables of fitplan/strategies/data/quality_priors.toml that publish their
16-bit reference and were quantized without an importance matrix. A point is kept where the published
increase is at least MIN_DELTA perplexity (several tables round to 0.01: smaller increases are rounding)
and the format has an anchor figure.

Usage: python bench/quality_fit.py [--write]   (--write: store b in fitplan/strategies/data/quality_rule.toml)
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import tomllib

DATA = Path(__file__).resolve().parent.parent / "fitplan" / "strategies" / "data"
TRAIN = ("qwen1.5", "llama-1", "llama-2")
HELD_OUT = ("qwen2", "mistral")
ANCHOR_MODEL = "LLaMA 3 8b"
ANCHOR_PARAMETERS_B = 8.03  # Llama-3-8B: 8,030,261,248 parameters (its safetensors index)
MIN_DELTA = 0.03


def tables() -> list[dict]:
    return tomllib.loads((DATA / "quality_priors.toml").read_text(encoding="utf-8"))["table"]


def anchor(rows: list[dict]) -> dict[str, float]:
    """Relative increase per format on Llama-3-8B, no importance matrix."""
    row = next(t for t in rows if t["model"] == ANCHOR_MODEL and t["metric"] == "ppl" and t.get("imatrix") == "none")
    return {fmt: v / row["reference_value"] - 1 for fmt, v in row["values"].items()}


def points(rows: list[dict], families: tuple[str, ...], known: dict[str, float]) -> list[tuple[str, str, float, float]]:
    """(model, format, parameters_b, relative increase) of every usable published value."""
    out = []
    for t in rows:
        if t["family"] not in families or t["metric"] != "ppl" or t["runtime"] != "llama.cpp" \
                or "reference_value" not in t or t.get("imatrix") not in (None, "none"):
            continue
        ref = t["reference_value"]
        for fmt, value in t["values"].items():
            if fmt in known and known[fmt] > 0 and value - ref >= MIN_DELTA:
                out.append((t["model"], fmt, t["parameters_b"], value / ref - 1))
    return out


def fit(train: list[tuple[str, str, float, float]], known: dict[str, float]) -> tuple[float, float]:
    """(c, b) minimizing sum (log(r / r_anchor) - log c + b log(N / N_anchor))^2: ordinary least squares of
    log(r / r_anchor) on log(N / N_anchor). c is how much less another family loses than Llama-3-8B."""
    xs = [math.log(n / ANCHOR_PARAMETERS_B) for _, _, n, _ in train]
    ys = [math.log(r / known[fmt]) for _, fmt, _, r in train]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - slope * mx), -slope


def errors(rows: list[tuple[str, str, float, float]], known: dict[str, float], c: float, b: float) -> list[float]:
    """log(predicted / published) per point."""
    return [math.log(c * known[fmt] * (n / ANCHOR_PARAMETERS_B) ** -b / r) for _, fmt, n, r in rows]


def summary(errs: list[float]) -> str:
    absolute = sorted(abs(e) for e in errs)
    p90 = absolute[min(len(absolute) - 1, round(0.9 * (len(absolute) - 1)))]
    within = sum(1 for e in absolute if e <= math.log(2)) / len(absolute)
    bias = math.exp(statistics.median(errs))
    return (f"{len(errs)} points: median error x{math.exp(statistics.median(absolute)):.2f}, p90 x{math.exp(p90):.2f}, "
            f"{within:.0%} within 2x, median predicted/published {bias:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the fitted b in quality_rule.toml")
    args = parser.parse_args()
    rows = tables()
    known = anchor(rows)
    train, held = points(rows, TRAIN, known), points(rows, HELD_OUT, known)
    c, b = fit(train, known)
    rules = (("Llama-3-8B's table for every model (fitplan before)", 1.0, 0.0),
             (f"size rule: c = {c:.3f}, b = {b:.3f}", c, b))
    print(f"anchor: {ANCHOR_MODEL} ({ANCHOR_PARAMETERS_B}B), {len(known)} formats; min delta {MIN_DELTA} ppl\n")
    print("| rule | split | families | error |\n|---|---|---|---|")
    for name, c_value, b_value in rules:
        for split, families, data in (("train", TRAIN, train), ("held-out", HELD_OUT, held)):
            print(f"| {name} | {split} | {', '.join(families)} | {summary(errors(data, known, c_value, b_value))} |")
    print("\nheld-out points, size rule:\n\n| model | format | published | predicted | ratio |\n|---|---|---|---|---|")
    for (model, fmt, _, r), e in zip(held, errors(held, known, c, b), strict=True):
        print(f"| {model} | {fmt} | {r:.4f} | {r * math.exp(e):.4f} | {math.exp(e):.2f} |")
    if args.write:
        path = DATA / "quality_rule.toml"
        fitted = {"other_families": f"{c:.4f}", "size_exponent": f"{b:.4f}"}
        lines = [f"{line.split(' =')[0]} = {fitted[line.split(' =')[0]]}" if line.split(" =")[0] in fitted else line
                 for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"\nwrote other_families = {c:.4f}, size_exponent = {b:.4f} to {path}")


if __name__ == "__main__":
    main()
