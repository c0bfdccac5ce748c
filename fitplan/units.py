"""Sizes in bytes, written the way people write them.

GB, MB, KB, TB are powers of 1000; GiB, MiB, KiB, TiB powers of 1024 (the SI/IEC convention,
unlike pytest-memray where "MB" means MiB). A bare number is refused: "12" could be either.
"""
from __future__ import annotations

import math
import re

from fitplan.errors import BadValueError

_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]+)\s*$")
SIZE_HELP = "a size such as 12GB, 12 GiB, 512MB or 1.5GiB (GB = 10^9 bytes, GiB = 2^30)"


def parse_size(text: object, *, source: str = "value") -> int:
    """Bytes in `text`, e.g. "12GB" -> 12_000_000_000; `source` names where it came from."""
    match = _SIZE.match(str(text))
    unit = match and _UNITS.get(match["unit"].lower())
    if not match or not unit:
        raise BadValueError(f"bad size {text!r} ({source}): expected {SIZE_HELP}")
    value = float(match["num"]) * unit
    if not math.isfinite(value) or value > 2**63:
        raise BadValueError(f"bad size {text!r} ({source}): too large")
    return int(round(value))


def parse_reserve(text: object, *, source: str) -> int:
    """The memory a plan leaves free on each GPU: a size, or a bare 0 (zero is zero in every unit)."""
    if str(text).strip() == "0":
        return 0
    return parse_size(text, source=source)


def format_bytes(n: int | float) -> str:
    """A short decimal rendering for tables: 16.1 GB, 512 MB, 734 kB."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"


def parse_count(text: str | int, *, source: str, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum], e.g. a context length or a batch size."""
    digits = str(text).strip()
    if len(digits) > 30:  # int() of a 10,000-digit string is slow, and no count is that long
        raise BadValueError(f"bad {source} {digits[:20]!r}...: expected a whole number")
    try:
        value = int(digits, 10)
    except ValueError:
        raise BadValueError(f"bad {source} {text!r}: expected a whole number") from None
    if value < minimum:
        raise BadValueError(f"bad {source} {text!r}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise BadValueError(f"bad {source} {text!r}: must be at most {maximum:,}")
    return value


_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ns|us|µs|ms|s|min|h)\s*$")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
DURATION_HELP = "a duration such as 200ms, 1.5s or 50us"


def parse_duration(text: object, *, source: str = "value") -> float:
    """Seconds in `text`, e.g. "200ms" -> 0.2; a bare number is refused (ms or s?)."""
    match = _DURATION.match(str(text))
    if not match:
        raise BadValueError(f"bad duration {text!r} ({source}): expected {DURATION_HELP}")
    seconds = float(match["num"]) * _SECONDS[match["unit"]]
    if not math.isfinite(seconds):
        raise BadValueError(f"bad duration {text!r} ({source}): too large")
    return seconds


_RATE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?:tok(?:ens)?/s)?\s*$")


def parse_rate(value: object, *, source: str = "value") -> float:
    """Tokens per second: a positive number, or a string such as "20" or "20 tok/s"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE.match(str(value))
        rate = float(match["num"]) if match else -1.0
    if not math.isfinite(rate) or rate <= 0:
        raise BadValueError(f"bad rate {value!r} ({source}): expected tokens per second, e.g. 20 or '20 tok/s'")
    return rate


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"
