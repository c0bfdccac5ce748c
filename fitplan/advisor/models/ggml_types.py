"""Sizes of ggml tensor types (data/ggml_types.toml), and exact bytes of a tensor in one of them."""
from __future__ import annotations

import math

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError


def ggml_type_size(type_name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml type such as "Q4_K" or "F16"."""
    table = load_table("fitplan.advisor.models.data", "ggml_types.toml")
    entry = table.get(type_name.upper())
    if entry is None:
        raise BadValueError(f"unknown ggml type {type_name!r}")
    return entry["block_size"], entry["type_size"]


def ggml_type_name(type_id: int) -> str | None:
    """The name of a ggml type id as stored in GGUF tensor infos, or None if unknown."""
    table = load_table("fitplan.advisor.models.data", "ggml_types.toml")
    for name, entry in table.items():
        if entry["id"] == type_id:
            return name
    return None


def ggml_tensor_bytes(type_name: str, shape: tuple[int, ...]) -> int:
    """Exact bytes of a tensor: rows of shape[0] elements, each a whole number of blocks."""
    block, size = ggml_type_size(type_name)
    if shape and shape[0] % block:
        raise BadValueError(f"a row of {shape[0]} elements is not a whole number of {type_name} blocks")
    return math.prod(shape) // block * size
