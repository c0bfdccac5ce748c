"""GGUF building blocks for the tests that hand-make hostile files (layout per
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md, value types "gguf_metadata_value_type")."""
from __future__ import annotations

import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
WIDTH = {U8: 1, I8: 1, U16: 2, I16: 2, U32: 4, I32: 4, F32: 4, BOOL: 1, U64: 8, I64: 8, F64: 8}
ALIGN = 32


def g_str(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string: u64 length (or a lying one) + bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def g_kv(key: str | bytes, value_type: int, payload: bytes) -> bytes:
    return g_str(key) + struct.pack("<I", value_type) + payload


def g_u32(key: str, value: int) -> bytes:
    return g_kv(key, U32, struct.pack("<I", value))


def g_array(element_type: int, length: int, body: bytes = b"") -> bytes:
    return struct.pack("<IQ", element_type, length) + body
