"""Loading the TOML tables that ship inside the package (catalog, profiles, formats, runtimes)."""
from __future__ import annotations

import sys
from functools import cache
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@cache
def load_table(package: str, filename: str) -> dict[str, Any]:
    """Parse `filename` inside `package` once; tables are data, read lazily, never at import."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return tomllib.loads(text)


def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML text; raises ValueError (tomllib.TOMLDecodeError) on bad input.

    tomllib recurses once per nesting level: a file nested a few thousand deep raises RecursionError,
    turned here into the same ValueError as any other unreadable TOML.
    """
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ValueError("arrays or tables nest too deeply to be read") from None
