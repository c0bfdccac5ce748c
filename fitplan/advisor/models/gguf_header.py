"""A bounded reader for GGUF headers: metadata and tensor infos, never tensor data.

Why not gguf.GGUFReader: it takes ~2 s and ~190 MB on a 98 MB file, memory-maps the file (a file
truncated later kills the process with SIGBUS) and can hang or grow without bound on a hostile
header (docs/evidence.md). This reader checks every count, length and offset against the file
size before it reads, keeps only scalars, strings and short numeric arrays, skips string arrays, and
caps what a well-formed but costly header can make it do (keys, tensors, header bytes, array
elements walked or kept), each cap named in its error.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from fitplan.advisor.models.ggml_types import ggml_type_name, ggml_type_size
from fitplan.errors import ModelFileError
from fitplan.user_files import open_regular, printable

_MAGIC = b"GGUF"
# Caps. A real header is a few MB: SmolLM2 has 37 keys, 272 tensors, 98k tokenizer strings in 2.4 MB;
# DeepSeek-V3 has ~50 keys, 1,025 tensors, 129k tokens and 127k merges; the largest vocabularies
# (Gemma 3, BLOOM) have 256-262k tokens. Each cap leaves at least 8x room above that.
MAX_HEADER_BYTES = 64 * 2**20  # metadata + tensor infos
MAX_KEYS = 65536
MAX_TENSORS = 65536
MAX_WALKED_ELEMENTS = 2**22  # strings and arrays inside arrays, over the whole header (tokens + merges)
MAX_NESTED_ARRAYS = 65536  # arrays inside arrays, over the whole header (no real file has any)
MAX_KEPT_ELEMENTS = 2**20  # numeric array elements kept as values, over the whole header
_MAX_KEY_BYTES = 65536
_MAX_NAME_BYTES = 4096  # llama.cpp itself refuses tensor names of 64 bytes or more (GGML_MAX_NAME)
_MAX_STRING_BYTES = 16 * 2**20  # a chat template is the longest scalar string in practice
_MAX_KEPT_ARRAY = 4096  # numeric arrays up to this length are kept: per-layer values (block_count <= 4096)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ARRAY_DEPTH = 2
_CHUNK = 2**20
# GGUFValueType ids -> struct format (gguf.md "gguf_metadata_value_type")
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "?", 10: "<Q", 11: "<q", 12: "<d"}
_STRUCTS = {t: struct.Struct(f) for t, f in _SCALARS.items()}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<IQ")


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
    """Reads little-endian values through a 1 MiB window, refusing any read past the end of the file
    or past MAX_HEADER_BYTES, and counting what the caps bound."""

    def __init__(self, handle: BinaryIO, size: int, path: str) -> None:
        self.handle, self.size, self.path = handle, size, path
        self.end = min(size, MAX_HEADER_BYTES)
        self.buf, self.off, self.base = b"", 0, 0  # the window, the read position in it, its file offset
        self.walked = self.nested = self.kept = 0

    @property
    def pos(self) -> int:
        return self.base + self.off

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(printable(f"{self.path}: not a valid GGUF file ({what} at byte {self.pos})"))

    def _room(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} runs past the end of the file")
        if self.pos + n > MAX_HEADER_BYTES:
            raise self.fail(f"{what} ends beyond byte {MAX_HEADER_BYTES:,}: fitplan reads GGUF headers "
                            f"(metadata and tensor infos) of at most {MAX_HEADER_BYTES // 2**20} MiB")

    def take(self, n: int, what: str) -> bytes:
        end = self.off + n
        if 0 <= n and end <= len(self.buf):
            self.off = end
            return self.buf[end - n:end]
        self._room(n, what)
        left = len(self.buf) - self.off
        self.handle.seek(self.pos + left)  # the window never reaches past the file or the header cap
        data = self.buf[self.off:] + self.handle.read(max(n - left, min(_CHUNK, self.end - self.pos - left)))
        if len(data) < n:
            raise self.fail(f"{what} is truncated")
        self.buf, self.base, self.off = data, self.pos, n
        return data[:n]

    def skip(self, n: int, what: str) -> None:
        if 0 <= n and self.off + n <= len(self.buf):
            self.off += n
            return
        self._room(n, what)
        self.base, self.buf, self.off = self.pos + n, b"", 0

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]

    def string(self, what: str, limit: int) -> str:
        length = self.u64(f"{what} length")
        if length > limit:
            raise self.fail(f"{what} claims {length} bytes (limit {limit})")
        try:
            return self.take(length, what).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def value(self, value_type: int, what: str) -> Any:
        if value_type in _STRUCTS:
            return _STRUCTS[value_type].unpack(self.take(_STRUCTS[value_type].size, what))[0]
        if value_type == _STRING:
            return self.string(what, _MAX_STRING_BYTES)
        if value_type == _ARRAY:
            return self.array(what, 1)
        raise self.fail(f"{what} has unknown value type {value_type}")

    def array(self, what: str, depth: int) -> GGUFArray:
        if depth > _MAX_ARRAY_DEPTH:
            raise self.fail(f"{what} nests arrays more than {_MAX_ARRAY_DEPTH} deep")
        element_type, length = _ARRAY_HEAD.unpack(self.take(12, f"{what} element type and length"))
        if element_type in _STRUCTS:
            fmt = _STRUCTS[element_type]
            if length * fmt.size > self.size - self.pos:
                raise self.fail(f"{what} claims {length} elements, more than the file holds")
            if length > _MAX_KEPT_ARRAY:
                self.skip(length * fmt.size, what)
                return GGUFArray(element_type, length, None)
            self.kept += length
            if self.kept > MAX_KEPT_ELEMENTS:
                raise self.fail(f"{what} passes the {MAX_KEPT_ELEMENTS:,} numeric array elements "
                                "fitplan keeps from one header")
            raw = self.take(length * fmt.size, what)
            return GGUFArray(element_type, length, struct.unpack(f"<{length}{fmt.format[-1]}", raw))
        if element_type not in (_STRING, _ARRAY):
            raise self.fail(f"{what} has unknown element type {element_type}")
        if length * 8 > self.size - self.pos:  # each string or array needs at least 8 bytes
            raise self.fail(f"{what} claims {length} elements, more than the file holds")
        self.walked += length
        if self.walked > MAX_WALKED_ELEMENTS:
            raise self.fail(f"{what} passes the {MAX_WALKED_ELEMENTS:,} strings and arrays inside arrays "
                            "fitplan reads from one header")
        if element_type == _STRING:
            self.skip_strings(length, what)
        else:
            self.nested += length
            if self.nested > MAX_NESTED_ARRAYS:
                raise self.fail(f"{what} passes the {MAX_NESTED_ARRAYS:,} arrays inside arrays "
                                "fitplan reads from one header")
            for _ in range(length):
                self.array(what, depth + 1)
        return GGUFArray(element_type, length, None)

    def skip_strings(self, count: int, what: str) -> None:
        """Skip `count` strings: the tokenizer's tokens and merges, the bulk of a real header."""
        unpack = _U64.unpack_from
        buf, off = self.buf, self.off
        for _ in range(count):
            end = off + 8
            if end <= len(buf):
                end += unpack(buf, off)[0]
                if end <= len(buf):
                    off = end
                    continue
            self.off = off  # leave the window: the general path checks and refills
            self.skip(self.u64(f"{what} element length"), what)
            buf, off = self.buf, self.off
        self.off = off


def read_gguf_header(path: str) -> GGUFHeader:
    """Metadata and tensor infos of a GGUF file, every size checked against the file."""
    fd = open_regular(path, "GGUF file", ModelFileError)
    try:
        size = os.fstat(fd).st_size
        with os.fdopen(fd, "rb", buffering=0) as handle:
            return _read(_Reader(handle, size, path))
    except OSError as exc:
        raise ModelFileError(printable(f"{path}: cannot read ({exc.strerror or exc})")) from None


def _read(r: _Reader) -> GGUFHeader:
    if r.size < 24:
        raise ModelFileError(printable(f"{r.path}: not a valid GGUF file (only {r.size} bytes)"))
    if r.take(4, "magic") != _MAGIC:
        raise ModelFileError(printable(f"{r.path}: not a GGUF file (wrong magic bytes)"))
    version = r.u32("version")
    if version not in (2, 3):
        raise r.fail(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.u64("tensor count"), r.u64("metadata count")
    # a tensor info takes at least 8+1+4+8+4+8 bytes, a key/value at least 8+1+4+1
    if n_tensors * 33 > r.size or n_kv * 14 > r.size:
        raise r.fail(f"counts ({n_tensors} tensors, {n_kv} keys) exceed what the file can hold")
    if n_kv > MAX_KEYS:
        raise r.fail(f"{n_kv:,} metadata keys: fitplan reads at most {MAX_KEYS:,}")
    if n_tensors > MAX_TENSORS:
        raise r.fail(f"{n_tensors:,} tensors: fitplan reads at most {MAX_TENSORS:,}")
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = r.string(f"key #{i}", _MAX_KEY_BYTES)
        if key in metadata:  # the last would win silently: one block could be planned as 4096
            raise r.fail(f"metadata key {key} appears twice")
        metadata[key] = r.value(r.u32(f"type of {key}"), key)
    infos = []
    names: set[str] = set()
    for i in range(n_tensors):
        info = _tensor_info(r, i)
        if info[0] in names:
            raise r.fail(f"two tensors are named {info[0]}")
        names.add(info[0])
        infos.append(info)
    alignment = metadata.get("general.alignment", 32)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-r.pos // alignment) * alignment
    tensors = _check_layout(r, infos, data_offset, alignment)
    return GGUFHeader(version, metadata, tensors, data_offset, r.size)


def _tensor_info(r: _Reader, i: int) -> tuple[str, tuple[int, ...], str, int]:
    name = r.string(f"tensor #{i} name", _MAX_NAME_BYTES)
    n_dims = r.u32(f"{name} dimension count")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise r.fail(f"tensor {name} has {n_dims} dimensions")
    shape = struct.unpack(f"<{n_dims}Q", r.take(8 * n_dims, f"{name} dimensions"))
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
    return tuple(tensors)
