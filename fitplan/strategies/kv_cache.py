"""KV cache: bytes per layer for a context, a cache element type and a runtime.

bytes(layer) = (K width + V width) x cached tokens x bytes per element x sequences, where
cached tokens = min(context, window) on sliding-window and chunked layers; a recurrent layer (Mamba,
gated DeltaNet, short convolution) keeps a fixed state per sequence instead, whatever the context.
Widths differ by runtime under MLA:
llama.cpp caches the compressed latent (kv_lora_rank) plus the RoPE key; transformers caches full
per-head keys and values.
"""
from __future__ import annotations

from functools import cache
from typing import Any

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import STATE_BYTES_PER_ELEMENT, ModelSpec
from fitplan.strategies.strategy import Option, TableStrategy, requirement_from


@cache
def kv_bytes_per_element(kv_dtype: str, runtime: str) -> float:
    """Bytes of one cached element of `kv_dtype` in a built-in runtime (kv_dtypes.toml says which offer it)."""
    row = _row(kv_dtype)
    if runtime not in row["runtimes"]:
        raise BadValueError(f"KV cache type {kv_dtype!r} is not offered by {runtime} (offered by: {', '.join(row['runtimes'])})")
    return float(row["bytes_per_element"])


def element_bytes(kv_dtype: str) -> float:
    """Bytes of one cached element of `kv_dtype`, whichever runtime holds it."""
    return float(_row(kv_dtype)["bytes_per_element"])


def offered_kv_types(runtime: str) -> tuple[str, ...]:
    """The KV cache types kv_dtypes.toml lists for a built-in runtime."""
    return tuple(name for name, row in _table().items() if runtime in row["runtimes"])


def offered_by(kv_dtype: str) -> tuple[str, ...]:
    return tuple(_row(kv_dtype)["runtimes"])


def _table() -> dict[str, Any]:
    return load_table("fitplan.strategies.data", "kv_dtypes.toml")


def _row(kv_dtype: str) -> dict[str, Any]:
    table = _table()
    row = table.get(kv_dtype.lower())
    if row is None:
        raise BadValueError(f"unknown KV cache type {kv_dtype!r} (--kv-cache); known: {', '.join(table)}")
    return row


def kv_widths(spec: ModelSpec, runtime: str, layer: int | None = None) -> tuple[int, int]:
    """Elements cached per token for K and for V in `layer` (default: the first layer that attends);
    0, 0 for a layer without a KV cache (recurrent, or none of its own)."""
    cache = spec.caches[layer] if layer is not None else next((c for c in spec.caches if c.attends), None)
    if cache is None or not cache.attends:
        return 0, 0
    if spec.is_mla and runtime == "llama.cpp":
        # llama.cpp's MLA path caches the latent + RoPE key once per token; V is a view of it
        # (src/llama-model.cpp, deepseek2 with kv_lora_rank; PR #12801).
        return spec.kv_lora_rank + spec.qk_rope_head_dim, 0
    return cache.kv_heads * cache.key_dim, cache.kv_heads * cache.value_dim


def cached_tokens(spec: ModelSpec, layer: int, context: int, *, swa_extra: int = 0, pad: int = 1,
                  windowed: bool = True) -> int:
    """Tokens a layer keeps: the window (plus what a runtime adds for one batch) on sliding and chunked
    layers, unless the runtime keeps them whole (`windowed` False: llama.cpp's swa_full)."""
    cache = spec.caches[layer]
    if windowed and cache.windowed and cache.window:
        window = -(-(cache.window + swa_extra) // pad) * pad
        return min(context, window)
    return context


def layer_kv_bytes(
    spec: ModelSpec, layer: int, context: int, kv_dtype: str, runtime: str, sequences: int = 1,
    *, swa_extra: int = 0, pad: int = 1, windowed: bool = True,
) -> int:
    """Bytes `layer` caches for `sequences` sequences of `context` tokens: its KV cache, or its
    recurrent state (f32, the same at every context); nothing for a layer that reads another's cache."""
    cache = spec.caches[layer]
    state = cache.state_elements * STATE_BYTES_PER_ELEMENT * sequences
    k, v = kv_widths(spec, runtime, layer)
    if not k + v or cache.shared:
        return state
    tokens = cached_tokens(spec, layer, context, swa_extra=swa_extra, pad=pad, windowed=windowed)
    return int((k + v) * tokens * kv_bytes_per_element(kv_dtype, runtime) * sequences) + state


def _options() -> list[Option]:
    """One option per cache type: bytes and runtimes from kv_dtypes.toml, execution from strategies.toml."""
    types = load_table("fitplan.strategies.data", "kv_dtypes.toml")
    rows = load_table("fitplan.strategies.data", "strategies.toml")["kv_cache"]
    return [Option("kv_cache", name, requirement_from(rows.get(name, {}), runtimes=row["runtimes"]),
                   {"memory": {"bytes_per_element": row["bytes_per_element"]}}, rows.get(name, {}).get("execute", ""))
            for name, row in types.items()]


STRATEGY = TableStrategy("kv_cache", "KV-cache element type: f16 / bf16 / f32, q8_0 / q4_0 (llama.cpp), fp8 (vLLM)", _options)
