"""Exact tensor bytes and dtypes from safetensors headers, never loading a tensor.

Why our own parser: safe_open accepts headers up to 100 MB (~3.7 s, 1.37 GB to parse one near the
cap, ../shared/MEASURED.md); we cap the header first, then check every offset against the file.
Format: https://github.com/huggingface/safetensors#format
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any

from fitplan.errors import ModelFileError

MAX_HEADER_BYTES = 32 * 2**20  # the largest real headers are a few MB
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


def strict_json(data: bytes | str, where: str) -> Any:
    """json.loads that refuses NaN/Infinity and duplicate keys instead of accepting them silently."""
    def no_constant(token: str) -> Any:
        raise ModelFileError(f"{where}: holds {token}, which is not valid JSON")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ModelFileError(f"{where}: key {key!r} appears twice")
            out[key] = value
        return out

    try:
        return json.loads(data, parse_constant=no_constant, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{where}: not valid JSON ({exc})") from None


def parse_header(header: bytes, data_bytes: int, where: str) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """{tensor name: (dtype, shape, nbytes)} from a header's JSON; data_bytes is the data section's size."""
    doc = strict_json(header, where)
    if not isinstance(doc, dict):
        raise ModelFileError(f"{where}: header is not a JSON object")
    tensors: dict[str, tuple[str, tuple[int, ...], int]] = {}
    spans = []
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(f"{where}: tensor {name!r} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise ModelFileError(f"{where}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**48 for d in shape):
            raise ModelFileError(f"{where}: tensor {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise ModelFileError(f"{where}: tensor {name!r} has bad data_offsets {offsets!r}")
        numel = 1
        for dim in shape:
            numel *= dim
        start, end = offsets
        if not 0 <= start <= end <= data_bytes or end - start != numel * DTYPE_BYTES[dtype]:
            raise ModelFileError(
                f"{where}: tensor {name!r} claims bytes {start}..{end}, which do not match its shape "
                f"or lie beyond the {data_bytes} bytes the file holds"
            )
        tensors[name] = (dtype, tuple(shape), end - start)
        spans.append((start, end, name))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ModelFileError(f"{where}: tensors {first!r} and {second!r} overlap")
    return tensors


def read_safetensors_header(path: str) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """{tensor name: (dtype, shape, nbytes)} of one local .safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelFileError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise ModelFileError(
                    f"{path}: safetensors header claims {length} bytes; the file holds {size} "
                    f"and fitplan reads at most {MAX_HEADER_BYTES}"
                )
            header = handle.read(length)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_header(header, size - 8 - length, path)
