"""Write a file or a folder so that readers see the old content or the new, never half of either."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

STALE_TEMP_S = 60.0  # a temp file this old was left by a writer that was killed


def write_atomic(path: Path | str, text: str | bytes) -> None:
    """Write a dot-named temp file in the same folder, fsync, then os.replace it over `path`.

    Readers never open the temp files (they start with a dot and end in .tmp); one left behind by
    a killed writer is removed by a later writer once it is a minute old.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise


def _remove_stale_temps(path: Path) -> None:
    cutoff = time.time() - STALE_TEMP_S
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        with suppress(OSError):  # another writer may remove it first
            if temp.stat().st_mtime < cutoff:
                temp.unlink()


def replace_folder(target: Path, build: Callable[[Path], None]) -> None:
    """Build a folder in a dot-named staging folder beside `target`, then put it in target's place:
    readers of a cache see the old folder or the whole new one, and a failed build leaves nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
