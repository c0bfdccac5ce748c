"""ModelSpecs from local files: a GGUF file, or a folder with config.json and safetensors.

Every file is opened as a regular file only (fitplan.user_files): a FIFO, a folder, a device or a dangling
link named like a model file is refused in one line. A folder's config.json is checked first, and its
shards' header lengths are summed before any header is parsed; each header is parsed only up to the
tensors and parameters the config leaves room for.
"""
from __future__ import annotations

import os
import re
from typing import Any

from fitplan.advisor.models.architectures import MAX_LAYERS, check_config_depth, check_parameters, spec_from_config
from fitplan.advisor.models.gguf_header import GGUFArray, GGUFHeader, read_gguf_header
from fitplan.advisor.models.safetensors_header import header_length, read_safetensors_header, strict_json
from fitplan.errors import ModelFileError
from fitplan.model_spec import LayerCache, ModelSpec, Role, TensorInfo
from fitplan.user_files import open_regular, printable, read_bytes

MAX_CONFIG_BYTES = 4 * 2**20
MAX_SHARDS = 4096  # Llama 3.1 405B has 191 shards, DeepSeek-V3 163
MAX_FOLDER_HEADER_BYTES = 64 * 2**20  # all shards' headers together; DeepSeek-V3's sum to ~10 MB
MAX_STORED_TENSORS = 2**18  # Kimi K2 (FP8, 384 experts: weights and their scales) stores ~139k tensors
MAX_BLOCK_TENSORS = 1024  # a real block has 10-40 (per-expert tensors of old Mixtral files: ~34)
MAX_OTHER_TENSORS = 4096  # outside blk.N.*: embeddings, norms, output; T5 encoders, vision towers: hundreds
_MAX_NAME_CHARS = 256  # of a model name shown in reports
_MAX_VOCAB = 2**24
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
        elif "embed_tokens_per_layer" in name:  # Gemma 3n's per-layer embeddings
            role = "lookup"
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
    """A config.json as a dict, refusing huge files, bad JSON and duplicate keys (NaN/Infinity are read:
    a field fitplan uses refuses them where it is read)."""
    raw = read_bytes(path, limit=MAX_CONFIG_BYTES, what="model config", error=ModelFileError)
    try:
        text = raw.decode("utf-8")  # json.loads of bytes would also take UTF-16 and UTF-32
    except UnicodeDecodeError as exc:
        raise ModelFileError(printable(f"{path}: not UTF-8 text (byte {exc.start})")) from None
    return parse_config(text, path)


def parse_config(text: str, where: str) -> dict[str, Any]:
    """config.json's text as a non-empty JSON object, no key twice, nested at most MAX_CONFIG_DEPTH
    (a local folder's and a hub repository's alike)."""
    config = strict_json(text, where, constants=True)
    if not isinstance(config, dict) or not config:
        raise ModelFileError(printable(f"{where}: expected a JSON object with the model's settings"))
    check_config_depth(config, where)
    return config


def folder_spec(folder: str) -> ModelSpec:
    """config.json plus, where present, the exact bytes of every *.safetensors file in the folder."""
    config = read_config(os.path.join(folder, "config.json"))
    name = printable(os.path.basename(os.path.normpath(folder)))
    spec = spec_from_config(config, name=name, source="folder", location=folder)
    if os.path.lexists(os.path.join(folder, "mergekit_config.yml")):  # mergekit writes its recipe beside the merge
        spec = _replace(spec, notes=(*spec.notes, "a mergekit merge: planned from its config.json and safetensors "
                                                  "headers like any model; nothing more is needed"))
    shards = _shards(folder)
    total = 0
    for path in shards:  # the header lengths first: 8 bytes a shard, before any header is parsed
        fd = open_regular(path, "safetensors file", ModelFileError)
        try:
            total += header_length(fd, os.fstat(fd).st_size, path)
        except OSError as exc:
            raise ModelFileError(printable(f"{path}: cannot read ({exc.strerror or exc})")) from None
        finally:
            os.close(fd)
        if total > MAX_FOLDER_HEADER_BYTES:
            raise ModelFileError(printable(
                f"{folder}: the safetensors headers of its first {shards.index(path) + 1} shards take "
                f"{total:,} bytes; fitplan reads at most {MAX_FOLDER_HEADER_BYTES // 2**20} MiB of headers a folder"))
    limit, params = tensor_limit(spec), 0
    headers: dict[str, tuple[str, tuple[int, ...], int]] = {}
    for path in shards:
        shard = read_safetensors_header(path, max_tensors=limit - len(headers))
        twice = next((n for n in shard if n in headers), None)
        if twice is not None:
            raise ModelFileError(printable(f"{folder}: tensor {twice!r} is stored in two shards"))
        headers.update(shard)
        params += _stored_params(spec, stored_tensors(shard))
        if params > spec.parameters:  # stop before parsing the other shards
            raise _params_mismatch(folder, params, spec, "at least ")
    return attach_stored(spec, headers, folder)


def _shards(folder: str) -> list[str]:
    """The sorted paths of a folder's *.safetensors entries, at most MAX_SHARDS (checked as each is opened)."""
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".safetensors"):
                    names.append(entry.name)
                    if len(names) > MAX_SHARDS:
                        raise ModelFileError(printable(
                            f"{folder}: holds more than {MAX_SHARDS:,} .safetensors files, the most fitplan reads"))
    except OSError as exc:
        raise ModelFileError(printable(f"{folder}: cannot list ({exc.strerror or exc})")) from None
    return [os.path.join(folder, n) for n in sorted(names)]


def tensor_limit(spec: ModelSpec) -> int:
    """The most stored tensors a checkpoint of this config can hold: per layer 128 plus 32 per expert
    (quantized checkpoints store up to 6 tensors a linear layer: bitsandbytes' weight, absmax, quant map,
    nested absmax, nested quant map and quant state), 1,024 outside the layers, never above MAX_STORED_TENSORS."""
    return min(MAX_STORED_TENSORS, spec.layers * (128 + 32 * (spec.experts + 1)) + 1024)


def _stored_params(spec: ModelSpec, stored: tuple[TensorInfo, ...]) -> int:
    """The logical weights the stored tensors hold (what config.json describes): a tied head once, an MTP
    layer and a multimodal checkpoint's towers not at all, quantization scales not at all, MXFP4 blocks
    as two weights a byte."""
    return sum(logical_numel(t) for t in _of_text_model(spec, stored)
               if not (spec.tied_embeddings and t.role == "output") and not _not_loaded(spec, t))


# Native quantized checkpoints: gpt-oss stores its experts as MXFP4 `*_blocks` (U8, two 4-bit weights a
# byte) with `*_scales` (U8, one E8M0 exponent per 32 weights); FP8 checkpoints store F8_E4M3 weights with
# F32 scales (DeepSeek-V3/Kimi K2 `weight_scale_inv` per 128 x 128 block, llm-compressor `weight_scale` /
# `input_scale`). Scales are bytes, not parameters.
_SCALE_SUFFIXES = ("_scales", ".weight_scale_inv", ".weight_scale", ".input_scale")


def logical_numel(t: TensorInfo) -> int:
    if t.name.endswith(_SCALE_SUFFIXES):
        return 0
    if t.name.endswith("_blocks") and t.dtype == "U8":
        return 2 * t.numel
    return t.numel


def _not_loaded(spec: ModelSpec, t: TensorInfo) -> bool:
    """A tensor stored but not loaded: of the multi-token-prediction layers after the last block, or a K/V
    projection of a layer that reads another layer's K/V (Gemma 3n checkpoints keep them; transformers 5
    builds none)."""
    if t.layer is None:
        return False
    if t.layer >= spec.layers:
        return t.layer < spec.layers + spec.mtp_layers
    return spec.caches[t.layer].shared and any(f"self_attn.{p}." in t.name for p in ("k_proj", "v_proj", "k_norm"))


def _of_text_model(spec: ModelSpec, stored: tuple[TensorInfo, ...]) -> tuple[TensorInfo, ...]:
    """A multimodal checkpoint's language model: `language_model.*` (and a top-level head) in every
    layout transformers has saved (Gemma 3/3n, Llama 4, Mistral 3); the rest are its towers."""
    if not spec.multimodal:
        return stored
    return tuple(t for t in stored if "language_model." in t.name or t.name.startswith("lm_head."))


def _params_mismatch(where: str, stored: int, spec: ModelSpec, qualifier: str = "") -> ModelFileError:
    return ModelFileError(printable(
        f"{where}: the safetensors files hold {qualifier}{stored:,} parameters but config.json "
        f"describes {spec.parameters:,}; is a shard missing, or the config from another model?"))


def attach_stored(spec: ModelSpec, headers: dict[str, tuple[str, tuple[int, ...], int]], where: str) -> ModelSpec:
    """The spec with the exact stored tensors of its safetensors headers, once they agree with config.json.

    Shared by local folders and hub repositories; no headers (e.g. a .bin-only model) leaves the spec as is.
    """
    if not headers:
        return spec
    if len(headers) > tensor_limit(spec):
        raise ModelFileError(printable(f"{where}: the safetensors files describe {len(headers):,} tensors, more "
                                       f"than the {tensor_limit(spec):,} a model of this config could hold"))
    stored = _of_text_model(spec, stored_tensors(headers))
    beyond = next((t for t in stored if t.layer is not None and t.layer >= spec.layers + spec.mtp_layers), None)
    if beyond is not None:
        raise ModelFileError(printable(
            f"{where}: tensor {beyond.name} is in layer {beyond.layer}, but config.json has "
            f"num_hidden_layers = {spec.layers}"
        ))
    stored_params = _stored_params(spec, stored)
    if stored_params != spec.parameters:
        raise _params_mismatch(where, stored_params, spec)
    loaded = tuple(t for t in stored if not _not_loaded(spec, t))
    return _replace(spec, stored_tensors=loaded, native_dtype=_dominant_dtype(loaded))


def gguf_spec(path: str) -> ModelSpec:
    """Shape and exact tensor bytes of a GGUF file, from its header alone."""
    header = read_gguf_header(path)
    meta = _GGUFMeta(header, path)
    arch = meta.text("general.architecture")
    p = f"{arch}."  # the keys are looked up under the architecture as written; reports show it printable
    tensors = tuple(_gguf_tensor(t) for t in header.tensors)
    layers = meta.size(p + "block_count", _blocks_in(tensors), maximum=MAX_LAYERS)  # the cost models loop over blocks
    hidden = meta.size(p + "embedding_length", _width_of(tensors))
    unknown: list[str] = []  # KV terms an architecture's keys do not give
    if p + "attention.head_count" in meta.metadata:  # present, it must be a real count
        heads = meta.size(p + "attention.head_count", per_layer=True)
    else:  # an architecture whose converter writes no head count (or one fitplan does not know)
        heads = 0
        unknown.append(f"{p}attention.head_count")
    head_dim = meta.size(p + "attention.key_length", hidden // heads if heads else 0, minimum=0)
    kv_lora = meta.size(p + "attention.kv_lora_rank", 0, minimum=0)
    _check_tensor_counts(tensors, path)
    beyond = next((t for t in tensors if t.layer is not None and t.layer >= layers), None)
    if beyond is not None:
        raise ModelFileError(printable(
            f"{path}: tensor {beyond.name} is in block {beyond.layer}, but {p}block_count is {layers}"))
    vocab = meta.size(p + "vocab_size", 0, minimum=0, maximum=_MAX_VOCAB) or _vocab_from(header, tensors)
    if vocab > _MAX_VOCAB:
        raise ModelFileError(printable(f"{path}: a vocabulary of {vocab:,} tokens (from tokenizer.ggml.tokens "
                                       f"or token_embd.weight) is beyond the {_MAX_VOCAB:,} fitplan plans for"))
    window = meta.size(p + "attention.sliding_window", 0, minimum=0) or None
    experts = meta.size(p + "expert_count", 0, minimum=0)
    file_type = meta.metadata.get("general.file_type")
    kv_heads = meta.size(p + "attention.head_count_kv", heads, minimum=0, per_layer=True)
    v_head_dim = meta.size(p + "attention.value_length", head_dim, minimum=0)
    sliding = _gguf_sliding(arch, layers, window, meta)
    caches = _gguf_caches(meta, p, arch, tensors, layers, hidden, (heads, head_dim, v_head_dim), window, sliding, unknown)
    spec = ModelSpec(
        name=_display_name(meta.metadata.get("general.name"), path),
        source="gguf", location=path, architecture=printable(arch), layers=layers, hidden_size=hidden,
        heads=max(heads, 1), kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim,
        intermediate_size=meta.size(p + "feed_forward_length", 0, minimum=0, per_layer=True),
        vocab_size=vocab, tied_embeddings=not any(t.name == "output.weight" for t in tensors),
        attention_bias=any(t.name.endswith("attn_q.bias") for t in tensors),
        max_context=meta.size(p + "context_length", 2048),
        native_dtype=_gguf_file_type(file_type, tensors), tensors=tensors, stored_tensors=tensors,
        experts=experts, experts_per_token=meta.size(p + "expert_used_count", 0, minimum=0),
        sliding_window=window, sliding_layers=sliding,
        kv_lora_rank=kv_lora, qk_rope_head_dim=meta.size(p + "rope.dimension_count", 0, minimum=0) if kv_lora else 0,
        layer_caches=caches,
        notes=(printable(f"{arch}: the KV cache is not derived, for want of {', '.join(dict.fromkeys(unknown))}; "
                         "memory counts none for it"),) if unknown else (),
    )
    check_parameters(spec.parameters, path)
    return spec


class _GGUFMeta:
    def __init__(self, header: GGUFHeader, path: str) -> None:
        self.metadata, self.path = header.metadata, path

    def text(self, key: str) -> str:
        value = self.metadata.get(key)
        if not isinstance(value, str) or not printable(value):
            raise ModelFileError(printable(f"{self.path}: GGUF metadata lacks {key}"))
        return value

    def per_layer(self, key: str, layers: int, default: int, *, maximum: int = 2**31) -> list[int]:
        """A per-layer count (an array of block_count values, as hybrids write head_count_kv: 0 on a
        recurrent layer), or one value for every layer."""
        value = self.metadata.get(key, default)
        if isinstance(value, GGUFArray):
            items = value.values
            if items is None or len(items) != layers or any(
                    isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum for v in items):
                raise ModelFileError(printable(f"{self.path}: GGUF metadata {key} is not an array of block_count = "
                                               f"{layers} counts from 0 to {maximum}"))
            return list(items)
        return [self.size(key, default, minimum=0, maximum=maximum)] * layers

    def size(self, key: str, default: int | None = None, *, minimum: int = 1, maximum: int = 2**31,
             per_layer: bool = False) -> int:
        value = self.metadata.get(key, default)
        if per_layer and isinstance(value, GGUFArray) and value.values:
            value = max(value.values)  # per-layer counts: the widest layer bounds the cache
        if value is None:
            raise ModelFileError(printable(f"{self.path}: GGUF metadata lacks {key}"))
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            shown = (f"an array of {value.length} elements" if isinstance(value, GGUFArray)
                     else repr(value)[:80])
            raise ModelFileError(printable(f"{self.path}: GGUF metadata {key} = {shown} is out of range "
                                           f"({minimum} to {maximum})"))
        return value


def _check_tensor_counts(tensors: tuple[TensorInfo, ...], path: str) -> None:
    """At most MAX_BLOCK_TENSORS in one block and MAX_OTHER_TENSORS outside the blocks: the cost models
    loop over tensors for every candidate plan (65,536 tiny tensors took ~10 s to advise on)."""
    per_block: dict[int, int] = {}
    others = 0
    for t in tensors:
        if t.layer is None:
            others += 1
        else:
            per_block[t.layer] = per_block.get(t.layer, 0) + 1
    if others > MAX_OTHER_TENSORS:
        raise ModelFileError(printable(f"{path}: {others:,} tensors lie outside the blocks (blk.N.*); fitplan "
                                       f"reads at most {MAX_OTHER_TENSORS:,}"))
    crowded = max(per_block, key=per_block.__getitem__, default=None)
    if crowded is not None and per_block[crowded] > MAX_BLOCK_TENSORS:
        raise ModelFileError(printable(f"{path}: block {crowded} has {per_block[crowded]:,} tensors; fitplan "
                                       f"reads at most {MAX_BLOCK_TENSORS:,} a block"))


def _display_name(name: object, path: str) -> str:
    """general.name as a report can show it: printable, at most _MAX_NAME_CHARS; else the file's name."""
    text = printable(name).strip() if isinstance(name, str) else ""
    if len(text) > _MAX_NAME_CHARS:
        text = text[:_MAX_NAME_CHARS - 3] + "..."
    return text or printable(os.path.basename(path))


def _gguf_tensor(t: Any) -> TensorInfo:
    match = _GGUF_LAYER.match(t.name)
    role: Role = "block" if match else (
        "embed" if t.name == "token_embd.weight" else "lookup" if t.name == "per_layer_token_embd.weight"
        else "output" if t.name == "output.weight" else "global")
    experts = t.shape[2] if "_exps." in t.name and len(t.shape) == 3 else 0
    return TensorInfo(t.name, t.shape, role, int(match[1]) if match else None, experts, t.type_name, t.nbytes)


def _vocab_from(header: GGUFHeader, tensors: tuple[TensorInfo, ...]) -> int:
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, GGUFArray):
        return tokens.length
    embed = next((t for t in tensors if t.role == "embed"), None)
    return embed.shape[-1] if embed else 0


def _gguf_file_type(file_type: object, tensors: tuple[TensorInfo, ...]) -> str:
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


# llama.cpp sets Llama 4's chunked attention in code, not in GGUF keys (src/models/llama4.cpp:
# LLAMA_SWA_TYPE_CHUNKED, n_swa 8192; every 4th layer is NoPE and attends globally)
_CHUNKED = {"llama4": (8192, 4)}
_ATTENTION_TENSORS = ("attn_q.", "attn_k.", "attn_qkv.", "attn_q_a.", "attn_kv_a_mqa.")


def _gguf_caches(meta: _GGUFMeta, p: str, arch: str, tensors: tuple[TensorInfo, ...], layers: int, hidden: int,
                 shape: tuple[int, int, int], window: int | None, sliding: frozenset[int],
                 unknown: list[str]) -> tuple[LayerCache, ...]:
    """Each block's cache, from the tensors it holds (attention, ssm_*, shortconv.*) and llama.cpp's
    keys: head_count_kv per layer, ssm.conv_kernel / inner_size / state_size / group_count, and
    shortconv.l_cache. A recurrent state is sized as llama.cpp's n_embd_r + n_embd_s: (d_conv - 1) x
    (d_inner + 2 x n_group x d_state) + d_inner x d_state (Mamba, Mamba-2, gated DeltaNet alike), or
    (l_cache - 1) x n_embd for a short convolution. Terms missing from the keys go to `unknown`."""
    heads, key_dim, value_dim = shape
    kv = meta.per_layer(p + "attention.head_count_kv", layers, heads, maximum=65536)
    tails: dict[int, list[str]] = {}
    for t in tensors:
        if t.layer is not None:
            tails.setdefault(t.layer, []).append(t.name.split(".", 2)[2])
    ssm = {k: meta.size(f"{p}ssm.{k}", 0, minimum=0) for k in ("conv_kernel", "inner_size", "state_size", "group_count")}
    state = (max(ssm["conv_kernel"] - 1, 0) * (ssm["inner_size"] + 2 * ssm["group_count"] * ssm["state_size"])
             + ssm["inner_size"] * ssm["state_size"])
    l_cache = meta.size(p + "shortconv.l_cache", 0, minimum=0)
    chunk, period = _CHUNKED.get(arch, (0, 0))
    # Gemma 3n: the last shared_kv_layers blocks attend over earlier blocks' K/V (hparams.n_layer_kv_from_start)
    first_shared = layers - meta.size(p + "attention.shared_kv_layers", 0, minimum=0, maximum=layers)
    out = []
    for i in range(layers):
        names = tails.get(i, [])
        recurrent = 0
        if any(n.startswith("ssm_") for n in names):
            if not state:
                unknown.append(f"{p}ssm.*")
            recurrent = state
        elif any(n.startswith("shortconv.") for n in names):
            if not l_cache:
                unknown.append(f"{p}shortconv.l_cache")
            recurrent = max(l_cache - 1, 0) * hidden
        if not any(n.startswith(_ATTENTION_TENSORS) for n in names):
            out.append(LayerCache("recurrent" if recurrent else "none", state_elements=recurrent))
            continue
        if not kv[i] or not key_dim:
            unknown.append(f"{p}attention.head_count_kv / key_length")
        shared = i >= first_shared
        if chunk and (i + 1) % period:
            out.append(LayerCache("chunked", kv[i], key_dim, value_dim, chunk, recurrent, shared))
        elif window and i in sliding:
            out.append(LayerCache("sliding", kv[i], key_dim, value_dim, window, recurrent, shared))
        else:
            out.append(LayerCache("full", kv[i], key_dim, value_dim, None, recurrent, shared))
    return tuple(out)


def _blocks_in(tensors: tuple[TensorInfo, ...]) -> int:
    """block_count as the tensors say it: one more than the highest blk.N."""
    return max((t.layer for t in tensors if t.layer is not None), default=-1) + 1


def _width_of(tensors: tuple[TensorInfo, ...]) -> int | None:
    """embedding_length as token_embd.weight says it (its rows are that long)."""
    embed = next((t for t in tensors if t.name == "token_embd.weight"), None)
    return embed.shape[0] if embed is not None else None


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
    if any(t.name.endswith("_blocks") and t.dtype == "U8" for t in stored):
        return "mxfp4"  # gpt-oss: the experts (most of the bytes) are MXFP4
    names = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8", "F8_E5M2": "fp8"}
    return names.get(max(totals, key=lambda k: totals[k]), "bf16")


def _replace(spec: ModelSpec, **changes: Any) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)
