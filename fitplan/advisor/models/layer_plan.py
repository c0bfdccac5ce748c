"""Which block each layer of a model is: its token mixer (attention of some kind, or a recurrent
mixer), and its MLP (dense, a mixture of experts, or none).

A config says it in one of three ways: a `layer_types` list (transformers' convention since 2025),
an architecture's own pattern keys (Jamba's periods, Nemotron-H's `hybrid_override_pattern`, LFM2's
`full_attn_idxs`, Llama 4's chunked and NoPE layers, Gemma's sliding patterns), or nothing (every layer
full attention). The rules below are those of the transformers config classes named in
data/architectures.toml, which is where an architecture says which rule it uses.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from fitplan.advisor.models.config_values import Config, shown
from fitplan.errors import ModelFileError

Mixer = Literal["attention", "mamba1", "mamba2", "deltanet", "shortconv", "none"]
Attention = Literal["full", "sliding", "chunked"]
MLP = Literal["dense", "moe", "none"]


@dataclass(frozen=True)
class LayerPlan:
    mixer: Mixer
    attention: Attention = "full"  # where mixer is "attention" (or `parallel_mamba`)
    mlp: MLP = "dense"
    parallel_mamba: bool = False  # Falcon-H1: a Mamba-2 mixer beside the attention in every layer
    kv_shared: bool = False  # Gemma 3n: attends over the K/V of the last earlier layer of its kind, so it
    # has no K/V projections and caches nothing


# transformers' layer type names (configuration_utils._LEGACY_LAYER_TYPE_REMAP maps the older ones)
_LAYER_TYPES: dict[str, tuple[str, Attention]] = {
    "full_attention": ("attention", "full"), "attention": ("attention", "full"),
    "sliding_attention": ("attention", "sliding"), "chunked_attention": ("attention", "chunked"),
    # DeepSeek-V3.2's sparse attention keeps the full MLA cache (its indexer's keys are not modelled)
    "indexed_attention": ("attention", "full"), "deepseek_sparse_attention": ("attention", "full"),
    "linear_attention": ("linear", "full"), "mamba": ("linear", "full"), "conv": ("shortconv", "full"),
}
# Nemotron-H's hybrid_override_pattern and layers_block_type: one component per layer
_NEMOTRON: dict[str, tuple[Mixer, MLP]] = {
    "M": ("mamba2", "none"), "*": ("attention", "none"), "-": ("none", "dense"), "E": ("none", "moe"),
    "mamba": ("mamba2", "none"), "linear_attention": ("mamba2", "none"), "attention": ("attention", "none"),
    "full_attention": ("attention", "none"), "mlp": ("none", "dense"), "moe": ("none", "moe"),
}


def layer_plans(cfg: Config, layout: dict[str, Any], layers: int) -> list[LayerPlan]:
    """Every layer's plan, checked against num_hidden_layers."""
    if layout.get("layers") == "nemotron_h":
        return _nemotron_h(cfg, layers)
    mixers = _mixers(cfg, layout, layers)
    moe = moe_layers(cfg, layout.get("moe"), layers)
    parallel = layout.get("layers") == "parallel_mamba2"
    plans = [LayerPlan(mixer, attention, "moe" if i in moe else "dense", parallel)
             for i, (mixer, attention) in enumerate(mixers)]
    if layout.get("kv_shared"):  # the last N layers reuse K/V (transformers: first_kv_shared_layer_idx)
        first = layers - cfg.size(layout["kv_shared"], 0, minimum=0, limit=layers - 1)
        for i in range(first, layers):
            if not any(p.mixer == "attention" and p.attention == plans[i].attention for p in plans[:first]):
                raise ModelFileError(f"{cfg.where}: layer {i} shares the K/V of an earlier {plans[i].attention} "
                                     f"attention layer, but none of the first {first} layers is one")
            plans[i] = replace(plans[i], kv_shared=True)
    return plans


def _mixers(cfg: Config, layout: dict[str, Any], layers: int) -> list[tuple[Mixer, Attention]]:
    linear: Mixer = layout.get("linear", "mamba2")
    types = cfg.raw.get("layer_types")
    if types is not None:
        names = _name_list(cfg, "layer_types", types, layers)
        unknown = next((t for t in names if t not in _LAYER_TYPES), None)
        if unknown is not None:
            raise ModelFileError(f"{cfg.where}: layer_types holds {unknown!r}, not a layer type fitplan "
                                 f"models (known: {', '.join(_LAYER_TYPES)})")
        out: list[tuple[Mixer, Attention]] = []
        for name in names:
            mixer, attention = _LAYER_TYPES[name]
            out.append((linear if mixer == "linear" else mixer, attention))  # type: ignore[arg-type]
        return out
    rule = layout.get("layers")
    if rule == "jamba":
        period = cfg.size("attn_layer_period", limit=layers)
        offset = cfg.size("attn_layer_offset", minimum=0, limit=period - 1)
        return [("attention", "full") if i % period == offset else ("mamba1", "full") for i in range(layers)]
    if rule == "lfm2":
        full = cfg.layer_list("full_attn_idxs", layers) if cfg.get("full_attn_idxs") is not None else set(range(layers))
        return [("attention", "full") if i in full else ("shortconv", "full") for i in range(layers)]
    if rule == "every_nth_full":  # Qwen3-Next: gated DeltaNet, with full attention every Nth layer
        period = cfg.size("full_attention_interval", limit=layers)
        return [("attention", "full") if (i + 1) % period == 0 else (linear, "full") for i in range(layers)]
    if rule == "all_linear":  # Granite 4.0-H without layer_types: every layer Mamba-2
        return [(linear, "full")] * layers
    if rule == "llama4":  # chunked attention on RoPE layers; every no_rope_layer_interval-th layer is NoPE, full
        if cfg.get("attention_chunk_size") is None:
            return [("attention", "full")] * layers
        cfg.size("attention_chunk_size", limit=2**31)
        no_rope = cfg.get("no_rope_layers")
        if no_rope:
            if not isinstance(no_rope, list) or len(no_rope) != layers or any(v not in (0, 1) for v in no_rope):
                raise ModelFileError(f"{cfg.where}: no_rope_layers is not a list of num_hidden_layers = {layers} "
                                     "zeros and ones")
            uses_rope = [bool(v) for v in no_rope]
        else:
            interval = cfg.size("no_rope_layer_interval", limit=layers + 1)
            uses_rope = [(i + 1) % interval != 0 for i in range(layers)]
        return [("attention", "chunked" if rope else "full") for rope in uses_rope]
    sliding = _sliding_layers(cfg, layout.get("sliding"), layers)
    return [("attention", "sliding" if i in sliding else "full") for i in range(layers)]


def _sliding_layers(cfg: Config, kind: str | None, layers: int) -> set[int]:
    """Sliding-window layers of the architectures that name them by a pattern, not a list."""
    window = cfg.get("sliding_window")
    if not kind or window is None or ("sliding_window" in cfg.raw and cfg.raw["sliding_window"] is None):
        return set()  # an explicit null is full attention (Mistral v0.3), not the class default
    cfg.size("sliding_window", limit=2**31)
    if kind == "all":
        return set(range(layers))
    if kind == "alternate":  # Gemma 2: layer 0, 2, 4, ... use the window
        return set(range(0, layers, 2))
    if kind == "pattern":  # Gemma 3, Cohere 2, EXAONE 4: every Nth layer is global, the rest slide
        pattern = cfg.get("sliding_window_pattern")
        if isinstance(pattern, str) and pattern and set(pattern) <= {"L", "G"}:  # EXAONE 4's "LLLG"
            return {i for i in range(layers) if pattern[i % len(pattern)] == "L"}
        period = cfg.size("sliding_window_pattern", 6, limit=2**31)  # more than the layers: all slide
        return {i for i in range(layers) if (i + 1) % period}
    if kind == "qwen2":  # Qwen2/3: only when use_sliding_window, on layers >= max_window_layers
        if not cfg.flag("use_sliding_window"):
            return set()
        first = cfg.size("max_window_layers", layers, minimum=0, limit=2**31)
        return set(range(min(first, layers), layers))
    raise AssertionError(f"unknown sliding kind {kind!r} in architectures.toml")


def moe_layers(cfg: Config, moe: str | None, layers: int) -> set[int]:
    """Indices of the layers whose MLP is a mixture of experts."""
    if moe is None:
        return set()
    if moe in ("mixtral", "gpt_oss"):
        return set(range(layers))
    if moe in ("qwen3_moe", "qwen2_moe"):
        step = cfg.size("decoder_sparse_step", limit=layers)
        dense = cfg.layer_list("mlp_only_layers", layers)
        return {i for i in range(layers) if i not in dense and (i + 1) % step == 0}
    if moe == "deepseek":
        if not cfg.size("n_routed_experts", minimum=0, limit=4096):
            return set()
        first = cfg.size("first_k_dense_replace", minimum=0, limit=layers)
        freq = cfg.size("moe_layer_freq", 1, limit=layers)
        return {i for i in range(first, layers) if i % freq == 0}
    if moe == "llama4":
        if cfg.get("moe_layers") is not None:
            return cfg.layer_list("moe_layers", layers)
        step = cfg.size("interleave_moe_layer_step", limit=layers)
        return set(range(step - 1, layers, step))
    if moe == "jamba":
        period = cfg.size("expert_layer_period", limit=layers)
        offset = cfg.size("expert_layer_offset", minimum=0, limit=period - 1)
        return {i for i in range(layers) if i % period == offset} if cfg.size("num_experts", 1, limit=4096) > 1 else set()
    if moe == "ernie":  # ERNIE 4.5: every moe_layer_interval-th layer from moe_layer_start_index to _end_index
        step = cfg.size("moe_layer_interval", limit=layers)
        first = cfg.size("moe_layer_start_index", minimum=0, limit=layers)
        end = cfg.get("moe_layer_end_index")
        last = layers - 1 if end == -1 else cfg.size("moe_layer_end_index", minimum=0, limit=layers - 1)
        return {i for i in range(first, last + 1) if (i + 1) % step == 0}
    if moe == "granite":
        return set(range(layers)) if cfg.size("num_local_experts", 0, minimum=0, limit=4096) else set()
    raise AssertionError(f"unknown moe kind {moe!r} in architectures.toml")


def layer_count(cfg: Config, layout: dict[str, Any]) -> int | None:
    """num_hidden_layers where config.json leaves it out and the architecture can tell: Nemotron-H's
    pattern names every layer (transformers 5 derives the count from it); else None (the class default)."""
    if layout.get("layers") != "nemotron_h" or "num_hidden_layers" in cfg.raw:
        return None
    pattern = cfg.raw.get("hybrid_override_pattern")
    if pattern is None:
        pattern = cfg.get("layer_types" if "layer_types" in cfg.raw else "layers_block_type")
    return len(pattern) if isinstance(pattern, (str, list)) else None


def _nemotron_h(cfg: Config, layers: int) -> list[LayerPlan]:
    """Nemotron-H: each layer is one component (Mamba-2, attention, MLP or MoE), named by the
    `hybrid_override_pattern` string of the hub configs or a `layers_block_type` list."""
    pattern = cfg.raw.get("hybrid_override_pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ModelFileError(f"{cfg.where}: hybrid_override_pattern is not a string")
        names: list[str] = list(pattern)
        key = "hybrid_override_pattern"
    else:
        key = "layer_types" if "layer_types" in cfg.raw and "layers_block_type" not in cfg.raw else "layers_block_type"
        names = _name_list(cfg, key, cfg.get(key), layers)
    if len(names) != layers:
        raise ModelFileError(f"{cfg.where}: {key} names {len(names)} layers, but num_hidden_layers is {layers}")
    unknown = next((n for n in names if n not in _NEMOTRON), None)
    if unknown is not None:
        raise ModelFileError(f"{cfg.where}: {key} holds {unknown!r}, not a Nemotron-H block (M, *, -, E)")
    return [LayerPlan(_NEMOTRON[n][0], "full", _NEMOTRON[n][1]) for n in names]


def _name_list(cfg: Config, key: str, value: object, layers: int) -> list[str]:
    if not isinstance(value, list) or len(value) != layers or not all(isinstance(t, str) for t in value):
        raise ModelFileError(f"{cfg.where}: {key} = {shown(value)} is not a list of "
                             f"num_hidden_layers = {layers} layer type names")
    return value
