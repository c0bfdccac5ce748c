"""Where fitplan keeps what it measured or converted: $FITPLAN_CACHE_DIR, else the XDG cache."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The cache folder (created unless `create` is false), optionally a sub-folder of it."""
    root = os.environ.get("FITPLAN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fitplan")
    path = Path(root, *parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
