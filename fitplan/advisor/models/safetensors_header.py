"""Exact tensor bytes and dtypes from safetensors headers, never loading a tensor.

Why our own parser: safe_open accepts headers up to 100 MB (~3.7 s, 1.37 GB to parse one near the
cap, docs/evidence.md); we cap the header first (and the tensors it can describe, counted before
the JSON is parsed), then check every offset against the file.
Format: https://github.com/huggingface/safetensors#format
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any

from fitplan.errors import ModelFileError
from fitplan.user_files import open_regular, printable

MAX_HEADER_BYTES = 32 * 2**20  # the largest real headers are a few MB
MAX_DIMS = 16  # real tensors have at most 5 (a 3-D convolution)
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


def strict_json(data: bytes | str, where: str, *, constants: bool = False) -> Any:
    """json.loads that refuses duplicate keys, and NaN/Infinity unless `constants` (a model's config.json:
    real ones hold them in fields fitplan never reads; the fields it reads are checked one by one)."""
    def no_constant(token: str) -> Any:
        if constants:
            return float(token)
        raise ModelFileError(printable(f"{where}: holds {token}, which is not valid JSON"))

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            key = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
            raise ModelFileError(printable(f"{where}: key {key!r} appears twice"))
        return out

    try:
        return json.loads(data, parse_constant=no_constant, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(printable(f"{where}: not valid JSON ({exc})")) from None


_VALUES_PER_TENSOR = 32  # a tensor entry is ~6 JSON values (dtype, shape dims, two offsets); 16 dims need ~20
_VALUES_SLACK = 65536  # commas and braces inside __metadata__ strings


def parse_header(header: bytes, data_bytes: int, where: str,
                 max_tensors: int | None = None) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """{tensor name: (dtype, shape, nbytes)} from a header's JSON; data_bytes is the data section's size.

    With max_tensors, a header describing more tensors is refused, and so, before its JSON is parsed, is one
    holding more JSON values than that many tensors need: every value but the last in an array or object
    is followed by a comma, and every object opens with a brace, which JSON cannot escape."""
    if max_tensors is not None:
        named = header.count(b'"data_offsets"')
        if named > max_tensors:
            raise _too_many(where, named, max_tensors)
        values = header.count(b",") + header.count(b"{")
        if values > _VALUES_PER_TENSOR * max_tensors + _VALUES_SLACK:
            raise _bad(where, f"holds {values:,} JSON values, more than the {max_tensors:,} tensors a model "
                              "of this config could hold need")
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(printable(f"{where}: header is not UTF-8 (byte {exc.start})")) from None
    doc = strict_json(text, where)
    if not isinstance(doc, dict):
        raise ModelFileError(printable(f"{where}: header is not a JSON object"))
    count = len(doc) - ("__metadata__" in doc)
    if max_tensors is not None and count > max_tensors:
        raise _too_many(where, count, max_tensors)
    tensors: dict[str, tuple[str, tuple[int, ...], int]] = {}
    spans = []
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _bad(where, f"tensor {name!r} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if type(dtype) is not str or dtype not in DTYPE_BYTES:
            raise _bad(where, f"tensor {name!r} has unknown dtype {_shown(dtype)}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
                type(d) is int and 0 <= d < 2**48 for d in shape):
            raise _bad(where, f"tensor {name!r} has a bad shape {_shown(shape)}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise _bad(where, f"tensor {name!r} has bad data_offsets {_shown(offsets)}")
        numel = 1
        for dim in shape:
            numel *= dim
        start, end = offsets
        if not 0 <= start <= end <= data_bytes or end - start != numel * DTYPE_BYTES[dtype]:
            raise _bad(where, f"tensor {name!r} claims bytes {start}..{end}, which do not match its shape "
                              f"or lie beyond the {data_bytes} bytes the file holds")
        tensors[name] = (dtype, tuple(shape), end - start)
        spans.append((start, end, name))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise _bad(where, f"tensors {first!r} and {second!r} overlap")
    return tensors


def _bad(where: str, what: str) -> ModelFileError:
    return ModelFileError(printable(f"{where}: {what}"))


def _too_many(where: str, count: int, limit: int) -> ModelFileError:
    return _bad(where, f"describes {count:,} tensors, more than the {limit:,} a model of this config could hold")


def _shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def header_length(fd: int, size: int, path: str) -> int:
    """The header length an open safetensors file's 8-byte prefix claims, checked against the file and the cap."""
    prefix = os.pread(fd, 8, 0)
    if len(prefix) < 8:
        raise _bad(path, "not a safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise _bad(path, f"safetensors header claims {length} bytes; the file holds {size} "
                         f"and fitplan reads at most {MAX_HEADER_BYTES}")
    return length


def read_safetensors_header(path: str, max_tensors: int | None = None) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """{tensor name: (dtype, shape, nbytes)} of one local .safetensors file (a regular file only)."""
    fd = open_regular(path, "safetensors file", ModelFileError)
    try:
        size = os.fstat(fd).st_size
        length = header_length(fd, size, path)
        header = os.pread(fd, length, 8)
        if len(header) != length:
            raise _bad(path, f"safetensors header is truncated ({len(header)} of {length} bytes)")
    except OSError as exc:
        raise _bad(path, f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    return parse_header(header, size - 8 - length, path, max_tensors)
