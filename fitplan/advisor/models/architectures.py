"""From a transformers config.json to a ModelSpec with every weight tensor laid out.

Parameter counts are computed from this layout, never copied from a model card: a missing key
takes the default of the architecture's transformers config class (data/architectures.toml).
"""
from __future__ import annotations

from typing import Any

from fitplan.advisor.models.config_values import Config, shown
from fitplan.advisor.models.layer_plan import layer_count, layer_plans
from fitplan.advisor.models.tensor_layout import (
    Dims,
    experts,
    experts_per_token,
    gemma3n_globals,
    layer_cache,
    layer_tensors,
)
from fitplan.datafiles import load_table
from fitplan.errors import ModelFileError
from fitplan.model_spec import ModelSpec, TensorInfo

# Every cost model loops over blocks for each candidate plan: 4096 blocks of an 8B model's widths took
# 35 s and 700 MB to advise on, 1024 blocks 6 s. The deepest real models have ~126 (Llama 3.1 405B) and
# the deepest self-merges ~250; 1024 leaves room for both.
MAX_LAYERS = 512
MAX_PARAMETERS = 2**47  # ~141T, over 100x the largest published model (Kimi K2, ~1.04T)
MAX_CONFIG_DEPTH = 32  # real config.json files nest 4-6 levels (text_config, rope_scaling, quantization_config)


def spec_from_config(
    raw: dict[str, Any], *, name: str, source: str, location: str, hub_id: str | None = None,
) -> ModelSpec:
    """Build the ModelSpec of a config.json (already parsed and checked to be a JSON object)."""
    where = f"config of {location}"
    table = load_table("fitplan.advisor.models.data", "architectures.toml")
    raw, model_type, counted = _text_model(raw, table, where)
    arch = table[model_type]
    for old, new in arch.get("renamed", {}).items():  # keys a config class reads under a former name
        if old in raw and new not in raw:
            raw = {**raw, new: raw[old]}
    cfg = Config(raw, arch.get("defaults", {}), where)
    layout = arch.get("layout", {})

    hidden = cfg.size("hidden_size")
    heads = cfg.size("num_attention_heads", limit=65536)
    kv_heads = cfg.size("num_key_value_heads", heads, limit=heads)
    layers = cfg.size("num_hidden_layers", layer_count(cfg, layout), limit=MAX_LAYERS)
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
    plans = layer_plans(cfg, layout, layers)
    moe = layout.get("moe")
    n_experts = experts(cfg, moe) if any(p.mlp == "moe" for p in plans) else 0
    window = cfg.size("sliding_window", limit=2**31) if any(p.attention == "sliding" for p in plans) else None
    chunk = cfg.size("attention_chunk_size", limit=2**31) if any(p.attention == "chunked" for p in plans) else None

    dims = Dims(cfg, layout, hidden, heads, kv_heads, head_dim, v_head_dim, layers)
    tensors: list[TensorInfo] = [TensorInfo("token_embd.weight", (hidden, vocab), "embed")]
    if layout.get("gemma3n"):
        tensors += gemma3n_globals(cfg, hidden, layers)
    for i, plan in enumerate(plans):
        tensors += layer_tensors(dims, i, plan)
    tensors.append(TensorInfo("output_norm.weight", (hidden,), "global"))
    if not tied:
        tensors.append(TensorInfo("output.weight", (hidden, vocab), "output"))
    caches = tuple(layer_cache(dims, plan, window, chunk) for plan in plans)
    mtp = cfg.size(layout["mtp"], 0, minimum=0, limit=64) if layout.get("mtp") else 0
    if mtp:
        counted = ", ".join(filter(None, [counted, f"without the {mtp} multi-token-prediction layer{'s' * (mtp > 1)} "
                                                   "the checkpoint also stores (runtimes do not load it)"]))

    spec = ModelSpec(
        name=name, source=source, location=location, hub_id=hub_id,
        architecture=model_type, layers=layers, hidden_size=hidden, heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim,
        intermediate_size=max(cfg.sizes(layout.get("dense_width", "intermediate_size"), layers)), vocab_size=vocab,
        tied_embeddings=tied, attention_bias=cfg.switch(layout.get("qkv_bias")),
        max_context=cfg.size("max_position_embeddings", 2048),
        native_dtype=_native_dtype(cfg), tensors=tuple(tensors),
        experts=n_experts, experts_per_token=experts_per_token(cfg, moe) if n_experts else 0,
        sliding_window=window, sliding_layers=frozenset(i for i, p in enumerate(plans) if p.attention == "sliding"),
        kv_lora_rank=kv_lora_rank, qk_rope_head_dim=rope_dim, layer_caches=caches, counted_parts=counted,
        mtp_layers=mtp, multimodal=bool(counted.startswith("the language model only")),
    )
    check_parameters(spec.parameters, where)
    return spec


def _text_model(raw: dict[str, Any], table: dict[str, Any], where: str) -> tuple[dict[str, Any], str, str]:
    """(the text model's config, its model_type, what the count leaves out): a multimodal checkpoint's
    text_config is what fitplan plans (Gemma 3, Llama 4, Mistral 3); an unknown model_type falls back
    to architectures[0] where the table names it."""
    model_type = raw.get("model_type")
    text = raw.get("text_config")
    if isinstance(model_type, str) and model_type in table and "text_model" in table[model_type]:
        if not isinstance(text, dict):
            raise ModelFileError(f"{where}: a {model_type} config without a text_config object")
        inner = text.get("model_type")
        kind = inner if isinstance(inner, str) and inner in table else str(table[model_type]["text_model"])
        counted = table[model_type].get("counted", "the language model only (the checkpoint's vision tower is not counted)")
        return {**text, "model_type": kind}, kind, counted
    if not isinstance(model_type, str) or model_type not in table:
        by_class = {cls: key for key, arch in table.items() for cls in arch.get("classes", [])}
        classes = raw.get("architectures")
        first = classes[0] if isinstance(classes, list) and classes and isinstance(classes[0], str) else None
        if first in by_class:
            return raw, by_class[first], ""
        raise ModelFileError(
            f"{where}: model_type {shown(model_type)}{f' ({shown(first)})' if first else ''} is not one fitplan "
            f"models yet (known: {', '.join(sorted(k for k in table if 'text_model' not in table[k]))})"
        )
    return raw, model_type, ""


def check_parameters(parameters: int, where: str) -> None:
    """Refuse a model beyond MAX_PARAMETERS: widths that pass one by one can still multiply to absurd."""
    if parameters > MAX_PARAMETERS:
        raise ModelFileError(f"{where}: describes {parameters:,} parameters, beyond the {MAX_PARAMETERS:,} "
                             "(~141 trillion) fitplan plans for")


def gguf_arch(model_type: str) -> str:
    """llama.cpp's architecture name for a transformers model_type (for its quantization recipe)."""
    table = load_table("fitplan.advisor.models.data", "architectures.toml")
    return table.get(model_type, {}).get("layout", {}).get("gguf_arch", model_type)


def _native_dtype(cfg: Config) -> str:
    dtype = cfg.text("torch_dtype") or cfg.text("dtype") or "float32"
    names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    return names.get(dtype, "bf16")


def check_config_depth(value: object, where: str, max_depth: int = MAX_CONFIG_DEPTH) -> None:
    """Refuse nesting deeper than max_depth (no recursion: a deep tree is refused, not a RecursionError).
    A NaN or Infinity is accepted here: real configs hold them in fields fitplan never reads
    (Nemotron-H's time_step_limit); every field that is read is checked where it is read."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= max_depth:
                raise ModelFileError(f"{where}: nests objects or lists more than {max_depth} levels deep")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
