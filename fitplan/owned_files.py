"""Writing a file fitplan owns: a report or a plot replaces only an earlier one fitplan wrote.

Whether a file is fitplan's is told by a marker each writer puts in a place of its own and each
reader verifies there, never by a phrase found somewhere in the first bytes (a user's notes or CI
workflow may well mention "fitplan check"):
- JSON: a top-level `"kind"` naming the document (`fitplan-check-report`, `fitplan-pytest-report`);
- text: a first line that is exactly the marker line (after an XML declaration for XML/SVG);
- PNG: a `tEXt` chunk `Software` whose value is exactly the marker.
`force` replaces any regular file. A symlink is written through (the link stays); a folder, FIFO or
device is never replaced.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

from fitplan.errors import BadValueError

MAX_OWNED_BYTES = 64 * 2**20  # a report larger than this was not written by fitplan
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def json_kind(kind: str) -> Callable[[bytes], bool]:
    """Ours: a JSON object whose top-level "kind" is `kind`."""
    def ours(data: bytes) -> bool:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return False
        return isinstance(doc, dict) and doc.get("kind") == kind
    return ours


def first_line(marker: str) -> Callable[[bytes], bool]:
    """Ours: the first line, or the first after an `<?xml ...?>` declaration, is exactly `marker`."""
    def ours(data: bytes) -> bool:
        lines = data[:4096].decode("utf-8", errors="replace").splitlines()
        if lines and lines[0].startswith("<?xml"):
            lines = lines[1:]
        return bool(lines) and lines[0] == marker
    return ours


def png_software(marker: str) -> Callable[[bytes], bool]:
    """Ours: a PNG whose tEXt chunk `Software` (before the image data) is exactly `marker`."""
    wanted = b"Software\0" + marker.encode("latin-1")

    def ours(data: bytes) -> bool:
        if not data.startswith(PNG_MAGIC):
            return False
        pos = len(PNG_MAGIC)
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            if kind in (b"IDAT", b"IEND"):
                return False
            if kind == b"tEXt" and data[pos + 8:pos + 8 + length] == wanted:
                return True
            pos += 12 + length
        return False
    return ours


def writable_target(path: str, *, ours: Callable[[bytes], bool], option: str, force: bool = False) -> str:
    """The real path `path` may be written at, or a one-line refusal (called again just before writing,
    and early by commands that would otherwise do their work first)."""
    from fitplan.user_files import open_regular

    target = os.path.realpath(path)  # through a link: the link stays, the report it points at is replaced
    if os.path.lexists(path) and os.path.exists(target):
        fd = open_regular(target, f"{option} target")  # a folder, FIFO or device: refused in one line
        with os.fdopen(fd, "rb") as handle:
            existing = b"" if force else handle.read(MAX_OWNED_BYTES + 1)
        if not force and (len(existing) > MAX_OWNED_BYTES or not ours(existing)):
            raise BadValueError(f"{path} exists and was not written by fitplan ({option}); "
                                "pick another name, or pass --force to replace it")
    _check_writable(os.path.dirname(target), path, option)
    return target


def _check_writable(folder: str, path: str, option: str) -> None:
    """Create and remove a temp file where the file will go, so that a read-only or pseudo file system
    (/proc, /sys) is refused before the work, not after it. A folder yet to be made is made on writing."""
    import tempfile

    if not os.path.isdir(folder):
        return
    try:
        fd, temp = tempfile.mkstemp(prefix=".fitplan-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise BadValueError(f"cannot write {path} ({option}): {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(temp)


def write_owned(path: str, data: str | bytes, *, ours: Callable[[bytes], bool], option: str,
                force: bool = False) -> None:
    """Write `data` to `path` atomically, unless a file is there that fitplan did not write."""
    from fitplan.atomic_file import write_atomic

    target = writable_target(path, ours=ours, option=option, force=force)
    try:
        write_atomic(target, data)
    except OSError as exc:
        raise BadValueError(f"cannot write {path} ({option}): {exc.strerror or exc}") from None
