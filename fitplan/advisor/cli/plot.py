"""`advise --plot FILE.png|svg`: the Pareto front (speed against quality loss) and the chosen plan's
memory per device. matplotlib is an extra (`pip install 'fitplan[plot]'`)."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fitplan.errors import BadValueError, RuntimeMissingError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_MARK = "fitplan advise --plot"  # PNG tEXt Software; an SVG's first line after its XML declaration


def check_plot_target(path: str, *, force: bool = False) -> None:
    """Refuse, before any work, a --plot path that cannot be drawn to (bad suffix, no matplotlib, a
    file there that fitplan did not draw)."""
    from fitplan.owned_files import writable_target

    _check_drawable(path)
    writable_target(path, ours=_is_ours(path), option="--plot", force=force)


def _check_drawable(path: str) -> None:
    if not path.lower().endswith((".png", ".svg")):
        raise BadValueError(f"--plot {path}: the file must end in .png or .svg")
    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeMissingError("--plot needs matplotlib: pip install 'fitplan[plot]'")


def _is_ours(path: str) -> Callable[[bytes], bool]:
    from fitplan.owned_files import first_line, png_software

    return first_line(f"<!-- {PLOT_MARK} -->") if path.lower().endswith(".svg") else png_software(PLOT_MARK)


def plot(document: dict[str, Any], path: str, *, force: bool = False) -> None:
    """Draw the figure to `path`, replacing only a plot fitplan drew there (or anything, with force):
    write_owned checks the file there just before writing."""
    _check_drawable(path)
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, (front, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    plans = [document, *document.get("alternatives", [])]
    for plan, mark in ((p, "o") for p in plans if "decode_tokens_per_s" in p["predicted"]):
        loss = plan["quality"]["ppl_increase"]
        if loss is None:
            continue
        front.scatter(loss, plan["predicted"]["decode_tokens_per_s"], marker=mark, color="0.7")
    pareto = _speed_quality_front(plans)
    front.plot([p["quality"]["ppl_increase"] for p in pareto],
               [p["predicted"]["decode_tokens_per_s"] for p in pareto], "o-", color="tab:blue",
               label="Pareto front (speed, quality)")
    for p in pareto:
        front.annotate(f"{p['plan']['weights']} ({p['plan']['placement']})",
                       (p["quality"]["ppl_increase"], p["predicted"]["decode_tokens_per_s"]), fontsize=7)
    if "decode_tokens_per_s" in document["predicted"]:
        front.scatter([document["quality"]["ppl_increase"] or 0], [document["predicted"]["decode_tokens_per_s"]],
                      s=120, facecolors="none", edgecolors="tab:red", label="chosen")
    front.set_xlabel("perplexity increase (lower is better)")
    front.set_ylabel(f"decode tokens/s ({document['predicted'].get('provenance', {}).get('speed', 'estimated')})")
    front.set_title(f"{document['model']['name']} on {document['hardware']['name']}")
    front.legend()
    parts = ("weights", "kv_cache", "activations", "overhead", "load_transient")
    devices = list(document["predicted"]["memory"])
    bottom = [0.0] * len(devices)
    for part in parts:
        values = [document["predicted"]["memory"][d].get(part, 0) / 1e9 for d in devices]
        memory.bar(devices, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    memory.set_ylabel("GB")
    memory.set_title(f"chosen: {document['plan']['runtime']} {document['plan']['weights']}")
    memory.legend()
    figure.tight_layout()
    _save(figure, path, force)
    plt.close(figure)


def _save(figure: Figure, path: str, force: bool) -> None:
    import io

    from fitplan.owned_files import write_owned

    buffer = io.BytesIO()
    svg = path.lower().endswith(".svg")
    if svg:
        figure.savefig(buffer, format="svg")
        declaration, _, rest = buffer.getvalue().partition(b"\n")
        data = b"%s\n<!-- %s -->\n%s" % (declaration, PLOT_MARK.encode(), rest)
    else:
        figure.savefig(buffer, format="png", metadata={"Software": PLOT_MARK})
        data = buffer.getvalue()
    write_owned(path, data, ours=_is_ours(path), option="--plot", force=force)


def _speed_quality_front(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plans no other plan beats on both decode speed and loss, by increasing loss."""
    known = [p for p in plans if p["quality"]["ppl_increase"] is not None and "decode_tokens_per_s" in p["predicted"]]
    front: list[dict[str, Any]] = []
    for plan in sorted(known, key=lambda p: (p["quality"]["ppl_increase"], -p["predicted"]["decode_tokens_per_s"])):
        if not front or plan["predicted"]["decode_tokens_per_s"] > front[-1]["predicted"]["decode_tokens_per_s"]:
            front.append(plan)
    return front


def plot_compare(document: dict[str, Any], path: str, *, force: bool = False) -> None:
    """`advise --compare ... --plot FILE`: decode and prefill rates of each profile's best plan, and the
    memory it leaves free."""
    _check_drawable(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = document["compare"]
    names = [e["hardware"] for e in entries]
    figure, (decode, headroom) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates = [e["summary"]["decode_tokens_per_s"] or 0.0 if e["summary"]["fits"] else 0.0 for e in entries]
    bars = decode.barh(names, rates, color=["tab:blue" if e["summary"]["fits"] else "0.8" for e in entries])
    for bar, e in zip(bars, entries):
        s = e["summary"]
        decode.annotate(f" {s['format']} ({s['placement']})" if s["fits"] else " does not fit",
                        (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center", fontsize=7)
    decode.set_xlabel("decode tokens/s (predicted)")
    decode.set_title(f"{document['model']}: best plan per profile")
    decode.invert_yaxis()
    free = [(e["summary"]["headroom_bytes"] or 0) / 1e9 if e["summary"]["fits"] else 0.0 for e in entries]
    headroom.barh(names, free, color="tab:green")
    headroom.set_xlabel("GB left on the fullest device")
    headroom.set_title("memory headroom")
    headroom.invert_yaxis()
    figure.tight_layout()
    _save(figure, path, force)
    plt.close(figure)
