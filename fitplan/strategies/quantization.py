"""Weight formats and the exact bytes of every tensor in each (data/formats.toml).

GGUF file types are computed tensor by tensor with llama.cpp's own type recipe (gguf_recipe), not
as parameters x average bits per weight: a Q4_K_M file keeps some tensors at Q6_K and norms at F32.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fitplan.advisor.models.ggml_types import ggml_tensor_bytes
from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.strategies.gguf_recipe import RecipeTensor, assign_types
from fitplan.strategies.strategy import Option, TableStrategy, requirement_from


@dataclass(frozen=True)
class WeightFormat:
    name: str
    runtime: str
    family: str
    devices: tuple[str, ...]
    auto: bool
    ppl_increase: float | None
    quality_source: str
    bits: int = 0
    group_size: int = 0
    bytes_per_weight: int = 0
    double_quant: bool = False
    pinned_only_on: tuple[str, ...] = ()  # devices where it runs but is not proposed unpinned
    kld_mean: float | None = None  # mean KL divergence from the reference, where measured (fitplan quality)


@lru_cache(maxsize=1)
def all_formats() -> dict[str, WeightFormat]:
    """The built-in formats (formats.toml); a registered runtime's own come through the registry."""
    return {name: format_from_row(name, row) for name, row in load_table("fitplan.strategies.data", "formats.toml").items()}


def format_from_row(name: str, row: Mapping[str, Any]) -> WeightFormat:
    """A format from a row in formats.toml's shape (a third-party runtime's rows have the same keys)."""
    return WeightFormat(
        name=name, runtime=row["runtime"], family=row["family"], devices=tuple(row["devices"]),
        auto=row["auto"], ppl_increase=row.get("ppl_increase"),
        quality_source=row.get("quality_source", "no published figure"),
        bits=row.get("bits", 0), group_size=row.get("group_size", 0),
        bytes_per_weight=row.get("bytes_per_weight", 0), double_quant=row.get("double_quant", False),
        pinned_only_on=tuple(row.get("pinned_only_on", ())),
    )


def weight_format(name: str, *, source: str = "--weights", runtime: str | None = None) -> WeightFormat:
    """A built-in format by name (strategies/registry.py `weight_format` knows the registered runtimes' too)."""
    return find_format(all_formats(), name, source=source, runtime=runtime)


def find_format(formats: Mapping[str, WeightFormat], name: str, *, source: str, runtime: str | None) -> WeightFormat:
    """A format by name: an exact match first, then case-insensitively, preferring `runtime`'s
    (bf16 is transformers' format, BF16 llama.cpp's; q4_k_m finds Q4_K_M)."""
    wanted = name.strip()
    if wanted in formats and runtime in (None, formats[wanted].runtime):
        return formats[wanted]
    matches = [f for key, f in formats.items() if key.lower() == wanted.lower()]
    matches.sort(key=lambda f: f.runtime != runtime)
    if matches:
        return matches[0]
    raise BadValueError(f"unknown weight format {name!r} ({source}); known: {', '.join(formats)}")


def is_dynamic_int8(weights: str, runtime: str) -> bool:
    """A format quantized when loaded whose activations are quantized at every call (family dynint8:
    int8-dynamic, onnx-int8): loaded in fp32 first, computed in fp32 between its int8 matmuls."""
    return weight_format(weights, source="plan.weights", runtime=runtime).family == "dynint8"


@lru_cache(maxsize=256)
def tensor_bytes(spec: ModelSpec, fmt: WeightFormat) -> tuple[tuple[TensorInfo, int], ...]:
    """Every weight tensor of `spec` with its exact bytes in `fmt` (cached: the solver and the
    speed model both ask)."""
    if spec.stored_tensors and _is_stored_format(spec, fmt):
        return tuple((t, t.nbytes or 0) for t in spec.stored_tensors)
    if fmt.family == "gguf":
        return tuple(_gguf_bytes(spec, fmt.name))
    return tuple((t, _hf_tensor_bytes(t, fmt)) for t in spec.tensors)


def _is_stored_format(spec: ModelSpec, fmt: WeightFormat) -> bool:
    """The files already hold this format: their exact bytes are the answer."""
    if spec.source == "gguf":
        return fmt.family == "gguf" and fmt.name == spec.native_dtype
    return fmt.family == "dense" and fmt.name == spec.native_dtype


def _gguf_bytes(spec: ModelSpec, file_type: str) -> list[tuple[TensorInfo, int]]:
    from fitplan.advisor.models.architectures import gguf_arch

    recipe = [RecipeTensor(t.name, t.shape) for t in spec.tensors]
    arch = spec.architecture if spec.source == "gguf" else gguf_arch(spec.architecture)
    try:
        types = assign_types(recipe, file_type, arch=arch, n_expert=spec.experts,
                             n_gqa=max(1, spec.heads // max(1, spec.kv_heads)), n_layer=spec.layers)
    except ValueError as exc:
        raise BadValueError(f"llama.cpp cannot quantize {spec.name} to {file_type}: {exc}") from None
    return [(TensorInfo(t.name, t.shape, t.role, t.layer, t.experts, types[t.name].upper(), t.nbytes),
             ggml_tensor_bytes(types[t.name], t.shape)) for t in spec.tensors]


def _quantized_linear(t: TensorInfo) -> bool:
    """bitsandbytes/GPTQ/AWQ replace the nn.Linear layers of the blocks; embeddings, lm_head, norms stay."""
    return t.role == "block" and t.is_matrix


def _hf_tensor_bytes(t: TensorInfo, fmt: WeightFormat) -> int:
    numel = t.numel
    # ONNX Runtime's quantize_dynamic takes every MatMul weight and the embedding's Gather, not only the blocks'
    quantized = t.is_matrix if fmt.family == "dynint8" and fmt.runtime == "onnxruntime" else _quantized_linear(t)
    if fmt.family == "dense" or not quantized:
        return numel * (fmt.bytes_per_weight or 2)
    rows_in, out = t.shape[0], numel // t.shape[0]  # GGUF order: shape[0] is in_features
    if fmt.family == "dynint8":  # int8 weight + per output channel an fp32 scale, an int32 zero point and an
        return numel + out * 12  # int32 column offset (fbgemm's packed weight; ORT: scale and zero point)
    if fmt.family == "bnb8":  # int8 weight + one fp32 scale per output row (Int8Params.SCB)
        return numel + out * 4
    if fmt.family == "bnb4":  # two 4-bit codes per byte + an absmax per 64-weight block
        blocks = -(-numel // 64)
        if fmt.double_quant:  # absmax as uint8, plus an fp32 scale per 256 blocks (bitsandbytes nested quant)
            return numel // 2 + blocks + -(-blocks // 256) * 4
        return numel // 2 + blocks * 4
    groups = -(-rows_in // fmt.group_size)
    if fmt.family == "gptq":  # qweight + qzeros packed in int32, fp16 scales, int32 g_idx (auto-gptq layout)
        return numel * fmt.bits // 8 + groups * out * fmt.bits // 8 + groups * out * 2 + rows_in * 4
    if fmt.family == "awq":  # qweight + qzeros packed 8 per int32, fp16 scales (AutoAWQ GEMM layout)
        return numel // 2 + groups * out // 2 + groups * out * 2
    raise AssertionError(f"unknown format family {fmt.family!r}")


def _options() -> list[Option]:
    return format_options(all_formats().values())


def format_options(formats: Iterable[WeightFormat]) -> list[Option]:
    """One option per format: devices and runtime from its row, the rest from its family."""
    families = load_table("fitplan.strategies.data", "strategies.toml")["quantization"]
    out = []
    for fmt in formats:
        row = families[fmt.family]
        effects = {"memory": "exact bytes per tensor (llama.cpp's type recipe, or the format's packing)",
                   "quality": {"ppl_increase": fmt.ppl_increase, "source": fmt.quality_source}}
        out.append(Option("quantization", fmt.name, requirement_from(row, devices=fmt.devices, runtimes=(fmt.runtime,)),
                          effects, row["execute"]))
    return out


STRATEGY = TableStrategy("quantization", "weight formats: 16/32-bit, GGUF types, bitsandbytes, GPTQ, AWQ", _options)
