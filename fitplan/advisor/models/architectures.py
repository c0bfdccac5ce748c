"""From a transformers config.json to a ModelSpec with every weight tensor laid out.

Parameter counts are computed from this layout, never copied from a model card: a missing key
takes the default of the architecture's transformers config class (data/architectures.toml).
"""
from __future__ import annotations

import math
from typing import Any

from fitplan.datafiles import load_table
from fitplan.errors import ModelFileError
from fitplan.model_spec import ModelSpec, TensorInfo

_MAX_DIM = 2**24  # no real model has a width, vocabulary or context beyond 16.7M
# Every cost model loops over blocks for each candidate plan: 4096 blocks of an 8B model's widths took
# 35 s and 700 MB to advise on, 1024 blocks 6 s. The deepest real models have ~126 (Llama 3.1 405B) and
# the deepest self-merges ~250; 1024 leaves room for both.
MAX_LAYERS = 512
MAX_PARAMETERS = 2**47  # ~141T, over 100x the largest published model (Kimi K2, ~1.04T)
MAX_CONFIG_DEPTH = 32  # real config.json files nest 4-6 levels (text_config, rope_scaling, quantization_config)


class _Config:
    """config.json values with the architecture's defaults behind them, each checked once."""

    def __init__(self, raw: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
        self.raw, self.defaults, self.where = raw, defaults, where

    def get(self, key: str, default: object = None) -> Any:
        value = self.raw.get(key)
        return self.defaults.get(key, default) if value is None else value

    def size(self, key: str, default: int | None = None, *, minimum: int = 1, limit: int = _MAX_DIM) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= limit:
            raise ModelFileError(
                f"{self.where}: {key} = {_shown(value)} is not a whole number from {minimum} to {limit}"
            )
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise ModelFileError(f"{self.where}: {key} = {_shown(value)} is not true or false")
        return value

    def optional_size(self, key: str, *, limit: int = _MAX_DIM) -> int:
        """A size that may be absent, null or 0 (none): q_lora_rank of DeepSeek-V2-Lite is null."""
        value = self.raw.get(key, self.defaults.get(key))
        return 0 if value is None or value == 0 and type(value) is int else self.size(key, limit=limit)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ModelFileError(f"{self.where}: {key} = {_shown(value)} is not a string")
        return value

    def layer_list(self, key: str, layers: int) -> set[int]:
        """A list of layer indices (e.g. mlp_only_layers), each from 0 to layers - 1."""
        value = self.get(key, [])
        if not isinstance(value, list) or len(value) > layers or not all(
                type(i) is int and 0 <= i < layers for i in value):
            raise ModelFileError(f"{self.where}: {key} = {_shown(value)} is not a list of at most {layers} "
                                 f"layer indices from 0 to {layers - 1}")
        return set(value)

    def switch(self, setting: bool | str | None) -> bool:
        """A layout switch: a fixed true/false, or the name of the config key that decides."""
        return self.flag(setting) if isinstance(setting, str) else bool(setting)


def spec_from_config(
    raw: dict[str, Any], *, name: str, source: str, location: str, hub_id: str | None = None,
) -> ModelSpec:
    """Build the ModelSpec of a config.json (already parsed and checked to be a JSON object)."""
    where = f"config of {location}"
    model_type = raw.get("model_type")
    if model_type == "gemma3" and isinstance(raw.get("text_config"), dict):
        raw, model_type = {**raw["text_config"], "model_type": "gemma3_text"}, "gemma3_text"
    table = load_table("fitplan.advisor.models.data", "architectures.toml")
    if not isinstance(model_type, str) or model_type not in table:
        raise ModelFileError(
            f"{where}: model_type {_shown(model_type)} is not one fitplan models yet "
            f"(known: {', '.join(sorted(table))})"
        )
    arch = table[model_type]
    cfg = _Config(raw, arch.get("defaults", {}), where)
    layout = arch.get("layout", {})

    hidden = cfg.size("hidden_size")
    heads = cfg.size("num_attention_heads", limit=65536)
    kv_heads = cfg.size("num_key_value_heads", heads, limit=heads)
    layers = cfg.size("num_hidden_layers", limit=MAX_LAYERS)
    vocab = cfg.size("vocab_size")
    head_dim = cfg.size("head_dim", hidden // heads)
    v_head_dim = head_dim
    kv_lora_rank = rope_dim = 0
    if layout.get("mla"):
        rope_dim = cfg.size("qk_rope_head_dim")
        head_dim = cfg.size("qk_nope_head_dim") + rope_dim
        v_head_dim = cfg.size("v_head_dim")
        kv_lora_rank = cfg.size("kv_lora_rank")
    tied = cfg.flag("tie_word_embeddings")
    experts, per_token, moe_layers = _moe_shape(cfg, layout.get("moe"), layers)
    window, sliding = _sliding(cfg, layout.get("sliding"), layers)

    tensors: list[TensorInfo] = [TensorInfo("token_embd.weight", (hidden, vocab), "embed")]
    for i in range(layers):
        tensors += _attention_tensors(cfg, layout, i, hidden, heads, kv_heads, head_dim, v_head_dim)
        tensors += _mlp_tensors(cfg, layout, i, hidden, experts if i in moe_layers else 0)
    tensors.append(TensorInfo("output_norm.weight", (hidden,), "global"))
    if not tied:
        tensors.append(TensorInfo("output.weight", (hidden, vocab), "output"))

    spec = ModelSpec(
        name=name, source=source, location=location, hub_id=hub_id,
        architecture=model_type, layers=layers, hidden_size=hidden, heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim,
        intermediate_size=cfg.size("intermediate_size"), vocab_size=vocab,
        tied_embeddings=tied, attention_bias=cfg.switch(layout.get("qkv_bias")),
        max_context=cfg.size("max_position_embeddings", 2048),
        native_dtype=_native_dtype(cfg), tensors=tuple(tensors),
        experts=experts, experts_per_token=per_token,
        sliding_window=window, sliding_layers=frozenset(sliding),
        kv_lora_rank=kv_lora_rank, qk_rope_head_dim=rope_dim,
    )
    check_parameters(spec.parameters, where)
    return spec


def check_parameters(parameters: int, where: str) -> None:
    """Refuse a model beyond MAX_PARAMETERS: widths that pass one by one can still multiply to absurd."""
    if parameters > MAX_PARAMETERS:
        raise ModelFileError(f"{where}: describes {parameters:,} parameters, beyond the {MAX_PARAMETERS:,} "
                             "(~141 trillion) fitplan plans for")


def gguf_arch(model_type: str) -> str:
    """llama.cpp's architecture name for a transformers model_type (for its quantization recipe)."""
    table = load_table("fitplan.advisor.models.data", "architectures.toml")
    return table.get(model_type, {}).get("layout", {}).get("gguf_arch", model_type)


def _native_dtype(cfg: _Config) -> str:
    dtype = cfg.text("torch_dtype") or cfg.text("dtype") or "float32"
    names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    return names.get(dtype, "bf16")


def _moe_shape(cfg: _Config, moe: str | None, layers: int) -> tuple[int, int, set[int]]:
    """(experts, experts per token, indices of layers whose MLP is a mixture of experts)."""
    if moe == "mixtral":
        return cfg.size("num_local_experts", limit=4096), cfg.size("num_experts_per_tok", limit=4096), set(range(layers))
    if moe == "qwen3_moe":
        experts = cfg.size("num_experts", limit=4096)
        step = cfg.size("decoder_sparse_step", limit=layers)
        dense = cfg.layer_list("mlp_only_layers", layers)
        sparse = {i for i in range(layers) if i not in dense and (i + 1) % step == 0}
        return experts, cfg.size("num_experts_per_tok", limit=experts), sparse
    if moe == "deepseek":
        experts = cfg.size("n_routed_experts", minimum=0, limit=4096)
        if not experts:
            return 0, 0, set()
        first = cfg.size("first_k_dense_replace", minimum=0, limit=layers)
        freq = cfg.size("moe_layer_freq", limit=layers)
        sparse = {i for i in range(first, layers) if i % freq == 0}
        return experts, cfg.size("num_experts_per_tok", limit=experts), sparse
    return 0, 0, set()


def _sliding(cfg: _Config, kind: str | None, layers: int) -> tuple[int | None, set[int]]:
    """(window, indices of sliding-window layers); `layer_types` wins where a config has it."""
    types = cfg.raw.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers or not all(isinstance(t, str) for t in types):
            raise ModelFileError(f"{cfg.where}: layer_types = {_shown(types)} is not a list of "
                                 f"num_hidden_layers = {layers} layer type names")
        sliding = {i for i, t in enumerate(types) if t == "sliding_attention"}
        return (cfg.size("sliding_window", limit=2**31) if sliding else None), sliding
    window = cfg.get("sliding_window")
    if not kind or window is None or ("sliding_window" in cfg.raw and cfg.raw["sliding_window"] is None):
        return None, set()  # an explicit null is full attention (Mistral v0.3), not the class default
    window = cfg.size("sliding_window", limit=2**31)
    if kind == "all":
        return window, set(range(layers))
    if kind == "alternate":  # Gemma 2: layer 0, 2, 4, ... use the window
        return window, set(range(0, layers, 2))
    if kind == "pattern":  # Gemma 3: every Nth layer is global, the rest slide
        period = cfg.size("sliding_window_pattern", 6, limit=layers + 1)
        return window, {i for i in range(layers) if (i + 1) % period}
    if kind == "qwen2":  # Qwen2/3: only when use_sliding_window, on layers >= max_window_layers
        if not cfg.flag("use_sliding_window"):
            return None, set()
        first = cfg.size("max_window_layers", layers, minimum=0, limit=2**31)
        return window, set(range(min(first, layers), layers))
    raise AssertionError(f"unknown sliding kind {kind!r} in architectures.toml")


def _attention_tensors(
    cfg: _Config, layout: dict[str, Any], i: int, hidden: int, heads: int, kv_heads: int,
    head_dim: int, v_head_dim: int,
) -> list[TensorInfo]:
    def block(name: str, *shape: int) -> TensorInfo:
        return TensorInfo(f"blk.{i}.{name}", tuple(shape), "block", i)

    out = [block("attn_norm.weight", hidden)]
    if layout.get("mla"):
        q_rank = cfg.optional_size("q_lora_rank")
        if q_rank:
            out += [block("attn_q_a.weight", hidden, q_rank), block("attn_q_a_norm.weight", q_rank),
                    block("attn_q_b.weight", q_rank, heads * head_dim)]
        else:
            out.append(block("attn_q.weight", hidden, heads * head_dim))
        rank, rope = cfg.size("kv_lora_rank"), cfg.size("qk_rope_head_dim")
        nope = head_dim - rope
        out += [block("attn_kv_a_mqa.weight", hidden, rank + rope), block("attn_kv_a_norm.weight", rank),
                block("attn_kv_b.weight", rank, heads * (nope + v_head_dim)),
                block("attn_output.weight", heads * v_head_dim, hidden)]
    else:
        q, kv = heads * head_dim, kv_heads * head_dim
        if layout.get("fused_qkv"):
            out.append(block("attn_qkv.weight", hidden, q + 2 * kv))
        else:
            out += [block("attn_q.weight", hidden, q), block("attn_k.weight", hidden, kv),
                    block("attn_v.weight", hidden, kv)]
            if cfg.switch(layout.get("qkv_bias")):
                out += [block("attn_q.bias", q), block("attn_k.bias", kv), block("attn_v.bias", kv)]
        out.append(block("attn_output.weight", q, hidden))
        if cfg.switch(layout.get("o_bias")):
            out.append(block("attn_output.bias", hidden))
        if layout.get("qk_norm"):
            out += [block("attn_q_norm.weight", head_dim), block("attn_k_norm.weight", head_dim)]
    if layout.get("post_norms"):
        out.append(block("post_attention_norm.weight", hidden))
    return out


def _mlp_tensors(cfg: _Config, layout: dict[str, Any], i: int, hidden: int, experts: int) -> list[TensorInfo]:
    """Layer i's MLP: a mixture of `experts` experts, or dense where experts is 0."""
    def block(name: str, *shape: int, experts: int = 0) -> TensorInfo:
        return TensorInfo(f"blk.{i}.{name}", tuple(shape), "block", i, experts)

    out = [block("ffn_norm.weight", hidden)]
    moe = layout.get("moe")
    if experts:
        inter = cfg.size("intermediate_size" if moe == "mixtral" else "moe_intermediate_size")
        out += [block("ffn_gate_inp.weight", hidden, experts),
                block("ffn_gate_exps.weight", hidden, inter, experts, experts=experts),
                block("ffn_up_exps.weight", hidden, inter, experts, experts=experts),
                block("ffn_down_exps.weight", inter, hidden, experts, experts=experts)]
        shared = cfg.size("n_shared_experts", 0, minimum=0, limit=4096) if moe == "deepseek" else 0
        if shared:
            width = inter * shared
            out += [block("ffn_gate_shexp.weight", hidden, width), block("ffn_up_shexp.weight", hidden, width),
                    block("ffn_down_shexp.weight", width, hidden)]
    else:
        inter = cfg.size("intermediate_size")
        if layout.get("fused_gate_up"):
            out.append(block("ffn_up.weight", hidden, 2 * inter))
        else:
            out += [block("ffn_gate.weight", hidden, inter), block("ffn_up.weight", hidden, inter)]
        out.append(block("ffn_down.weight", inter, hidden))
        if cfg.switch(layout.get("mlp_bias")):
            out += [block("ffn_gate.bias", inter), block("ffn_up.bias", inter), block("ffn_down.bias", hidden)]
    if layout.get("post_norms"):
        out.append(block("post_ffw_norm.weight", hidden))
    return out


def check_finite_tree(value: object, where: str, max_depth: int = MAX_CONFIG_DEPTH) -> None:
    """Reject NaN/Infinity anywhere in a parsed config (json accepts them silently), and nesting deeper
    than max_depth (no recursion: a deep tree is refused, not a RecursionError)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ModelFileError(f"{where}: holds a non-finite number ({item})")
        elif isinstance(item, (dict, list)):
            if depth >= max_depth:
                raise ModelFileError(f"{where}: nests objects or lists more than {max_depth} levels deep")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def _shown(value: object, limit: int = 80) -> str:
    """A config value for a one-line message: its repr (control characters escaped), cut to `limit`."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} items" if isinstance(value, (list, dict, str)) else f"{len(text)} characters"
    return f"{text[:limit]}... (a {type(value).__name__} of {size})"
