"""Reading a file the user named: a regular file only, never more than a stated number of bytes.

Every path fitplan reads on a user's say-so (model files and folders, plan, budget, profile and
baseline files, prompts) goes through here, so that /dev/zero (which reports size 0 and never ends),
a FIFO (whose open blocks until a writer comes), a folder or a dangling link named like a model file
is refused in one line instead of hanging, filling memory or raising a traceback.
"""
from __future__ import annotations

import hashlib
import os
import stat

from fitplan.errors import BadValueError, FitplanError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str, what: str, error: type[FitplanError] = BadValueError) -> int:
    """A read-only descriptor of `path`, checked to be a regular file after opening (no race).

    O_NONBLOCK keeps the open of a FIFO from waiting for a writer; it changes nothing for a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        kind = "a dangling link" if os.path.islink(path) else None
        raise error(f"{what} {path}: " + (f"is {kind}" if kind else "no such file")) from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{what} {path} is {_not_regular(mode)}, not a regular file")
    return fd


def regular_size(path: str, what: str, error: type[FitplanError] = BadValueError) -> int:
    """The size of `path`, refusing anything that is not a regular file (without opening a FIFO)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        kind = "is a dangling link" if os.path.islink(path) else "no such file"
        raise error(f"{what} {path}: {kind}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is {_not_regular(info.st_mode)}, not a regular file")
    return info.st_size


def is_regular_file(path: str) -> bool:
    """True for a regular file (following links); False for folders, FIFOs, devices and dangling links."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_bytes(path: str, *, limit: int, what: str, error: type[FitplanError] = BadValueError) -> bytes:
    """All of a regular file, refusing one larger than `limit` bytes (whatever its size claims)."""
    fd = open_regular(path, what, error)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than the {limit:,} bytes fitplan reads")
    return data


def read_text(path: str, *, limit: int, what: str, error: type[FitplanError] = BadValueError) -> str:
    """A regular file of at most `limit` bytes, decoded as UTF-8."""
    data = read_bytes(path, limit=limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None



# C0 controls (U+0000-U+001F, tab and newline included), DEL, C1 controls (U+0080-U+009F: a lone U+009B is
# a CSI on many terminals), and the Unicode bidirectional overrides/isolates and line/paragraph separators,
# which reorder or split what a terminal shows (the "Trojan Source" characters).
_CONTROL = {c: None for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029,
                                *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def printable(text: str) -> str:
    """`text` without the characters that steer a terminal (escape sequences, bell, carriage return,
    newline, bidirectional overrides); ordinary printable Unicode is kept as it is.

    Call it on every string read from a user's file that can reach the screen: model names, architecture
    names, tensor and key names in error messages."""
    return text if text.isprintable() else text.translate(_CONTROL)


def weights_fingerprint(location: str) -> str:
    """sha256 over each weight file's size and first and last MiB: it tells a replaced or truncated
    file from the planned one in milliseconds, without reading 100 GB.

    Regular files only: a FIFO, a device, a folder or a dangling link, as the location or named like a
    weight file inside it, is refused in one line (ModelFileError) rather than blocking or reading forever."""
    from fitplan.errors import ModelFileError

    if os.path.isdir(location):
        try:
            names = os.listdir(location)
        except OSError as exc:
            raise ModelFileError(printable(f"cannot list model folder {location}: {exc.strerror or exc}")) from None
        files = sorted(os.path.join(location, n) for n in names if n.endswith((".safetensors", ".gguf", "config.json")))
    else:
        files = [location]
    digest = hashlib.sha256()
    for path in files:
        fd = open_regular(path, "model file", ModelFileError)
        try:
            size = os.fstat(fd).st_size
            digest.update(f"{os.path.basename(path)}:{size}:".encode())
            digest.update(os.pread(fd, 2**20, 0))
            if size > 2**21:
                digest.update(os.pread(fd, 2**20, size - 2**20))
        except OSError as exc:
            raise ModelFileError(printable(f"cannot read model file {path}: {exc.strerror or exc}")) from None
        finally:
            os.close(fd)
    return "sha256-ends:" + digest.hexdigest()


def shown(text: object) -> str:
    """A string from a file or the user as rich prints it literally: no terminal escapes (printable) and
    no rich markup (a model named '[link=https://...]' would otherwise print as a hyperlink)."""
    from rich.markup import escape

    return escape(printable(str(text)))
