"""ModelSpecs from local files: a GGUF file, or a folder with config.json and safetensors."""
from __future__ import annotations

import os
import re
from typing import Any

from fitplan.advisor.architectures import MAX_LAYERS, check_finite_tree, spec_from_config
from fitplan.advisor.gguf_header import GGUFArray, GGUFHeader, read_gguf_header
from fitplan.advisor.safetensors_header import read_safetensors_header, strict_json
from fitplan.errors import ModelFileError
from fitplan.model_spec import ModelSpec, Role, TensorInfo

MAX_CONFIG_BYTES = 4 * 2**20
_HF_LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.")


def stored_tensors(headers: dict[str, tuple[str, tuple[int, ...], int]]) -> tuple[TensorInfo, ...]:
    """Safetensors entries (Hugging Face names) tagged with their role and layer."""
    out = []
    for name, (dtype, shape, nbytes) in headers.items():
        match = _HF_LAYER.search(name)
        role: Role
        if match:
            role = "block"
        elif "embed_tokens" in name or name.endswith(("wte.weight", "word_embeddings.weight")):
            role = "embed"
        elif name.startswith("lm_head") or name.endswith("output.weight"):
            role = "output"
        else:
            role = "global"
        out.append(TensorInfo(name, tuple(reversed(shape)), role, int(match[1]) if match else None,
                              dtype=dtype, nbytes=nbytes))
    return tuple(out)


def read_config(path: str) -> dict[str, Any]:
    """A config.json as a dict, refusing huge files, bad JSON, NaN/Infinity and duplicate keys."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"{path}: {size} bytes is too large for a config.json")
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    config = strict_json(raw, path)
    if not isinstance(config, dict) or not config:
        raise ModelFileError(f"{path}: expected a JSON object with the model's settings")
    check_finite_tree(config, path)
    return config


def folder_spec(folder: str) -> ModelSpec:
    """config.json plus, where present, the exact bytes of every *.safetensors file in the folder."""
    config = read_config(os.path.join(folder, "config.json"))
    name = os.path.basename(os.path.normpath(folder))
    spec = spec_from_config(config, name=name, source="folder", location=folder)
    headers: dict[str, tuple[str, tuple[int, ...], int]] = {}
    for file in sorted(os.listdir(folder)):
        if file.endswith(".safetensors"):
            headers.update(read_safetensors_header(os.path.join(folder, file)))
    return attach_stored(spec, headers, folder)


def attach_stored(spec: ModelSpec, headers: dict[str, tuple[str, tuple[int, ...], int]], where: str) -> ModelSpec:
    """The spec with the exact stored tensors of its safetensors headers, once they agree with config.json.

    Shared by local folders and hub repositories; no headers (e.g. a .bin-only model) leaves the spec as is.
    """
    if not headers:
        return spec
    stored = stored_tensors(headers)
    beyond = next((t for t in stored if t.layer is not None and t.layer >= spec.layers), None)
    if beyond is not None:
        raise ModelFileError(
            f"{where}: tensor {beyond.name} is in layer {beyond.layer}, but config.json has "
            f"num_hidden_layers = {spec.layers}"
        )
    stored_params = sum(t.numel for t in stored if not (spec.tied_embeddings and t.role == "output"))
    if stored_params != spec.parameters:
        raise ModelFileError(
            f"{where}: the safetensors files hold {stored_params:,} parameters but config.json "
            f"describes {spec.parameters:,}; is a shard missing, or the config from another model?"
        )
    return _replace(spec, stored_tensors=stored, native_dtype=_dominant_dtype(stored))


def gguf_spec(path: str) -> ModelSpec:
    """Shape and exact tensor bytes of a GGUF file, from its header alone."""
    header = read_gguf_header(path)
    meta = _GGUFMeta(header, path)
    arch = meta.text("general.architecture")
    p = f"{arch}."
    layers = meta.size(p + "block_count", maximum=MAX_LAYERS)  # the cost models loop over blocks
    heads = meta.size(p + "attention.head_count", per_layer=True)
    hidden = meta.size(p + "embedding_length")
    head_dim = meta.size(p + "attention.key_length", hidden // heads)
    kv_lora = meta.size(p + "attention.kv_lora_rank", 0, minimum=0)
    tensors = tuple(_gguf_tensor(t) for t in header.tensors)
    beyond = next((t for t in tensors if t.layer is not None and t.layer >= layers), None)
    if beyond is not None:
        raise ModelFileError(f"{path}: tensor {beyond.name} is in block {beyond.layer}, but {p}block_count is {layers}")
    vocab = meta.size(p + "vocab_size", 0, minimum=0) or _vocab_from(header, tensors)
    window = meta.size(p + "attention.sliding_window", 0, minimum=0) or None
    experts = meta.size(p + "expert_count", 0, minimum=0)
    file_type = meta.metadata.get("general.file_type")
    return ModelSpec(
        name=str(meta.metadata.get("general.name") or os.path.basename(path)),
        source="gguf", location=path, architecture=arch, layers=layers, hidden_size=hidden,
        heads=heads, kv_heads=meta.size(p + "attention.head_count_kv", heads, per_layer=True),
        head_dim=head_dim, v_head_dim=meta.size(p + "attention.value_length", head_dim),
        intermediate_size=meta.size(p + "feed_forward_length", 0, minimum=0, per_layer=True),
        vocab_size=vocab, tied_embeddings=not any(t.name == "output.weight" for t in tensors),
        attention_bias=any(t.name.endswith("attn_q.bias") for t in tensors),
        max_context=meta.size(p + "context_length", 2048),
        native_dtype=_gguf_file_type(file_type, tensors), tensors=tensors, stored_tensors=tensors,
        experts=experts, experts_per_token=meta.size(p + "expert_used_count", 0, minimum=0),
        sliding_window=window, sliding_layers=_gguf_sliding(arch, layers, window, meta),
        kv_lora_rank=kv_lora, qk_rope_head_dim=meta.size(p + "rope.dimension_count", 0, minimum=0) if kv_lora else 0,
    )


class _GGUFMeta:
    def __init__(self, header: GGUFHeader, path: str) -> None:
        self.metadata, self.path = header.metadata, path

    def text(self, key: str) -> str:
        value = self.metadata.get(key)
        if not isinstance(value, str) or not value:
            raise ModelFileError(f"{self.path}: GGUF metadata lacks {key}")
        return value

    def size(self, key: str, default: int | None = None, *, minimum: int = 1, maximum: int = 2**31,
             per_layer: bool = False) -> int:
        value = self.metadata.get(key, default)
        if per_layer and isinstance(value, GGUFArray) and value.values:
            value = max(value.values)  # per-layer counts: the widest layer bounds the cache
        if value is None:
            raise ModelFileError(f"{self.path}: GGUF metadata lacks {key}")
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ModelFileError(f"{self.path}: GGUF metadata {key} = {value!r} is out of range")
        return value


def _gguf_tensor(t: Any) -> TensorInfo:
    match = _GGUF_LAYER.match(t.name)
    role: Role = "block" if match else (
        "embed" if t.name == "token_embd.weight" else "output" if t.name == "output.weight" else "global")
    experts = t.shape[2] if "_exps." in t.name and len(t.shape) == 3 else 0
    return TensorInfo(t.name, t.shape, role, int(match[1]) if match else None, experts, t.type_name, t.nbytes)


def _vocab_from(header: GGUFHeader, tensors: tuple[TensorInfo, ...]) -> int:
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, GGUFArray):
        return tokens.length
    embed = next((t for t in tensors if t.role == "embed"), None)
    return embed.shape[-1] if embed else 0


def _gguf_file_type(file_type: Any, tensors: tuple[TensorInfo, ...]) -> str:
    """The file type's name from general.file_type (llama.h llama_ftype), else the type holding most
    bytes among the matrices (older files without the key)."""
    from fitplan.datafiles import load_table

    names = load_table("fitplan.strategies.data", "gguf_file_types.toml")
    if isinstance(file_type, int) and str(file_type) in names:
        return names[str(file_type)]
    weight: dict[str, int] = {}
    for t in tensors:
        if t.is_matrix and t.dtype:
            weight[t.dtype] = weight.get(t.dtype, 0) + (t.nbytes or 0)
    return max(weight, key=lambda k: weight[k]) if weight else "F32"


def _gguf_sliding(arch: str, layers: int, window: int | None, meta: _GGUFMeta) -> frozenset[int]:
    """Sliding-window layers as llama.cpp assigns them (src/llama-model.cpp, hparams.swa_layers)."""
    if not window:
        return frozenset()
    pattern = meta.metadata.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, GGUFArray) and pattern.values and len(pattern.values) == layers:
        return frozenset(i for i, sliding in enumerate(pattern.values) if sliding)
    period = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}.get(arch)
    if period is None:
        return frozenset(range(layers))
    return frozenset(i for i in range(layers) if (i + 1) % period)  # every period-th layer is global


def _dominant_dtype(stored: tuple[TensorInfo, ...]) -> str:
    totals: dict[str, int] = {}
    for t in stored:
        totals[t.dtype or "?"] = totals.get(t.dtype or "?", 0) + (t.nbytes or 0)
    names = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}
    return names.get(max(totals, key=lambda k: totals[k]), "bf16")


def _replace(spec: ModelSpec, **changes: Any) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)
