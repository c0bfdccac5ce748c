"""The one budget vocabulary of budget files (`fitplan check`) and the pytest plugin's markers: what
a budget limits, in which unit, which way is worse, the pins that choose a predicted plan, and how a
value prints. Light on purpose: the plugin imports it when pytest starts."""
from __future__ import annotations

from fitplan.units import format_bytes, format_seconds

# a budget file's limits: field -> (unit, larger is worse)
LIMITS = {
    "max_vram": ("bytes", True), "max_ram": ("bytes", True), "max_ttft": ("s", True),
    "max_ppl_increase": ("ppl", True), "min_decode_tokens_per_s": ("tok/s", False),
    "min_prefill_tokens_per_s": ("tok/s", False),
}
# the plugin's markers: kind -> (unit, larger is worse)
MARKERS = {
    "fits_vram": ("bytes", True), "fits_ram": ("bytes", True), "max_latency": ("s", True),
    "min_tokens_per_s": ("tok/s", False),
}
# what pins a predicted plan, in a budget entry and in a marker's keyword arguments alike
PIN_FIELDS = ("weights", "context", "batch", "runtime", "kv_cache", "threads", "gpu_layers", "offload", "reserve")


def show(kind: str, value: float) -> str:
    """A limit or a measured value of a budget field or marker kind, in its unit ("-" for none)."""
    unit = (LIMITS.get(kind) or MARKERS[kind])[0]
    if value != value:
        return "-"
    if unit == "bytes":
        return format_bytes(value)
    if unit == "s":
        return format_seconds(value)
    if unit == "tok/s":
        return f"{value:.1f} tok/s"
    return f"+{value:.3f}"
