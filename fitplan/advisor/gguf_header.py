"""A bounded reader for GGUF headers: metadata and tensor infos, never tensor data.

Why not gguf.GGUFReader: it takes ~2 s and ~190 MB on a 98 MB file, memory-maps the file (a file
truncated later kills the process with SIGBUS) and can hang or grow without bound on a hostile
header (../shared/MEASURED.md). This reader checks every count, length and offset against the file
size before it reads, keeps only scalars and short numeric arrays, and skips string arrays.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from fitplan.errors import ModelFileError
from fitplan.strategies.ggml_types import ggml_type_name, ggml_type_size

_MAGIC = b"GGUF"
_MAX_KEY_BYTES = 65536
_MAX_STRING_BYTES = 16 * 2**20  # a chat template is the longest scalar string in practice
_MAX_KEPT_ARRAY = 65536  # numeric arrays up to this length are kept (per-layer values)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ARRAY_DEPTH = 2
# GGUFValueType ids -> struct format (gguf.md "gguf_metadata_value_type")
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFArray:
    """An array value: its element type and length; `values` only for short numeric arrays."""

    element_type: int
    length: int
    values: tuple[Any, ...] | None


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # ne0 first, as stored
    type_name: str
    offset: int  # from the start of the data section
    nbytes: int


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GGUFTensor, ...]
    data_offset: int
    file_size: int


class _Reader:
    """Reads little-endian values, refusing any read that would pass the end of the file."""

    def __init__(self, handle: BinaryIO, size: int, path: str) -> None:
        self.handle, self.size, self.path, self.pos = handle, size, path, 0

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: not a valid GGUF file ({what} at byte {self.pos})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} runs past the end of the file")
        data = self.handle.read(n)
        if len(data) != n:
            raise self.fail(f"{what} is truncated")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} runs past the end of the file")
        self.handle.seek(n, os.SEEK_CUR)
        self.pos += n

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return self.scalar("<I", what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", what)

    def string(self, what: str, limit: int) -> str:
        length = self.u64(f"{what} length")
        if length > limit:
            raise self.fail(f"{what} claims {length} bytes (limit {limit})")
        try:
            return self.take(length, what).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def skip_string(self, what: str) -> None:
        self.skip(self.u64(f"{what} length"), what)

    def value(self, value_type: int, what: str, depth: int = 0) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type], what)
        if value_type == _STRING:
            return self.string(what, _MAX_STRING_BYTES)
        if value_type == _ARRAY:
            return self.array(what, depth + 1)
        raise self.fail(f"{what} has unknown value type {value_type}")

    def array(self, what: str, depth: int) -> GGUFArray:
        if depth > _MAX_ARRAY_DEPTH:
            raise self.fail(f"{what} nests arrays more than {_MAX_ARRAY_DEPTH} deep")
        element_type, length = self.u32(f"{what} element type"), self.u64(f"{what} length")
        if element_type in _SCALARS:
            width = struct.calcsize(_SCALARS[element_type])
            if length * width > self.size - self.pos:
                raise self.fail(f"{what} claims {length} elements, more than the file holds")
            if length <= _MAX_KEPT_ARRAY:
                raw = self.take(length * width, what)
                return GGUFArray(element_type, length, struct.unpack(f"<{length}{_SCALARS[element_type][-1]}", raw))
            self.skip(length * width, what)
            return GGUFArray(element_type, length, None)
        if element_type not in (_STRING, _ARRAY):
            raise self.fail(f"{what} has unknown element type {element_type}")
        if length * 8 > self.size - self.pos:  # each string or array needs at least 8 bytes
            raise self.fail(f"{what} claims {length} elements, more than the file holds")
        for _ in range(length):
            if element_type == _STRING:
                self.skip_string(what)
            else:
                self.array(what, depth + 1)
        return GGUFArray(element_type, length, None)


def read_gguf_header(path: str) -> GGUFHeader:
    """Metadata and tensor infos of a GGUF file, every size checked against the file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            return _read(_Reader(handle, size, path))
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read(r: _Reader) -> GGUFHeader:
    if r.size < 24:
        raise ModelFileError(f"{r.path}: not a valid GGUF file (only {r.size} bytes)")
    if r.take(4, "magic") != _MAGIC:
        raise ModelFileError(f"{r.path}: not a GGUF file (wrong magic bytes)")
    version = r.u32("version")
    if version not in (2, 3):
        raise r.fail(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.u64("tensor count"), r.u64("metadata count")
    # a tensor info takes at least 8+1+4+8+4+8 bytes, a key/value at least 8+1+4+1
    if n_tensors * 33 > r.size or n_kv * 14 > r.size:
        raise r.fail(f"counts ({n_tensors} tensors, {n_kv} keys) exceed what the file can hold")
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = r.string(f"key #{i}", _MAX_KEY_BYTES)
        metadata[key] = r.value(r.u32(f"type of {key}"), key)
    infos = [_tensor_info(r, i) for i in range(n_tensors)]
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-r.pos // alignment) * alignment
    tensors = _check_layout(r, infos, data_offset, alignment)
    return GGUFHeader(version, metadata, tensors, data_offset, r.size)


def _tensor_info(r: _Reader, i: int) -> tuple[str, tuple[int, ...], str, int]:
    name = r.string(f"tensor #{i} name", 4096)
    n_dims = r.u32(f"{name} dimension count")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise r.fail(f"tensor {name} has {n_dims} dimensions")
    shape = tuple(r.u64(f"{name} dimension") for _ in range(n_dims))
    type_id = r.u32(f"{name} type")
    type_name = ggml_type_name(type_id)
    if type_name is None:
        raise r.fail(f"tensor {name} has unknown ggml type {type_id}")
    return name, shape, type_name, r.u64(f"{name} offset")


def _check_layout(
    r: _Reader, infos: list[tuple[str, tuple[int, ...], str, int]], data_offset: int, alignment: int,
) -> tuple[GGUFTensor, ...]:
    """Every tensor lies inside the file, aligned, with no two overlapping."""
    room = r.size - data_offset
    tensors = []
    for name, shape, type_name, offset in infos:
        block, type_size = ggml_type_size(type_name)
        numel = 1
        for dim in shape:
            if dim <= 0 or dim > room * 8:
                raise r.fail(f"tensor {name} has dimension {dim}")
            numel *= dim
        if shape[0] % block:
            raise r.fail(f"tensor {name}: row of {shape[0]} is not a whole number of {type_name} blocks")
        nbytes = numel // block * type_size
        if offset % alignment or offset + nbytes > room:
            raise r.fail(f"tensor {name} ({nbytes} bytes at offset {offset}) lies outside the data section")
        tensors.append(GGUFTensor(name, shape, type_name, offset, nbytes))
    ordered = sorted(tensors, key=lambda t: t.offset)
    for before, after in zip(ordered, ordered[1:]):
        if before.offset + before.nbytes > after.offset:
            raise r.fail(f"tensors {before.name} and {after.name} overlap")
    if len({t.name for t in tensors}) != len(tensors):
        raise r.fail("two tensors share a name")
    return tuple(tensors)
