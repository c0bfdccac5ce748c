"""Pure-Python port of llama.cpp's per-tensor quantization type recipe.

``llama-quantize`` does not quantize every tensor of a model to the type its
file type names: ``Q4_K_M`` keeps some ``attn_v`` / ``ffn_down`` tensors at
``Q6_K``, the output matrix gets ``Q6_K``, tensors whose rows are not a whole
number of blocks fall back to another type, and so on. This module reproduces
that decision so the size of a GGUF file can be predicted from the tensor
shapes alone.

Ported from ``src/llama-quant.cpp`` of ggml-org/llama.cpp, stored version at
commit ``007dbbf3fd17eefe9b47fee45f48f7ba5e62b714`` (the newest one available;
it already has ``tensor_category``, ``llama_ftype_get_default_type``,
``tensor_type_fallback`` and the Q1_0 / Q2_0 / NVFP4 file types). Functions
ported, with their C++ names:

* ``llama_ftype_get_default_type``   -> ``_FTYPE_DEFAULT_TYPE``
* ``tensor_get_category``            -> ``_tensor_category``
* ``init_quantize_state_counters``   -> ``_QuantizeState.from_tensors``
* ``tensor_allows_quantization``     -> ``_allows_quantization``
* ``llama_tensor_get_type``          -> ``_tensor_get_type``
* ``llama_tensor_get_type_impl``     -> ``_tensor_get_type_impl`` (+ helpers)
* ``tensor_type_fallback``           -> ``_tensor_type_fallback``
* ``llama_model_loader::weight_name_comparer`` -> ``_weight_order_key``
  (the order of ``weights_map``, in which the counters advance)

Differences from older llama.cpp releases worth knowing (checked against the
stored commit ``8784689fee07c6daabf3487d24e1535534ef6e6b``, before the
``tensor_category`` refactor):

* older releases matched only ``attn_v.weight`` for the "attn_v" rules and sent
  ``attn_qkv.weight`` to its own branch (Q4_K_M -> Q5_K, Q5_K_M -> Q6_K,
  Q3_K_M/Q3_K_L/IQ3_M -> Q4_K); the ported version routes ``attn_qkv`` and
  ``attn_kv_b`` through the attn_v rules, which makes that branch dead code;
* the older fallback sent Q2_K / Q3_K rows that are not a multiple of 256 to
  IQ4_NL; the ported version sends them to Q4_0.

Assumptions (what ``llama-quantize`` would be told on its command line):

* default parameters: no ``--imatrix`` (see ``assign_types``'s
  ``has_imatrix``), no ``--pure``, no ``--tensor-type``,
  ``--output-tensor-type`` / ``--token-embedding-type`` not given, the output
  tensor is quantized (no ``--leave-output-tensor``), no pruning;
* a tensor llama.cpp does not quantize keeps its source type; that is reported
  as ``"F32"`` (``convert_hf_to_gguf.py`` stores 1-D tensors, norms and the
  tensors it knows llama.cpp never quantizes as F32);
* the model "type" is only needed for ``LLM_TYPE_70B``, inferred the way
  llama.cpp's own ``llama_quant_model_from_metadata`` does: arch ``llama``,
  80 layers and ``n_head != n_head_kv`` (``n_gqa != 1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

LLAMA_CPP_COMMIT = "007dbbf3fd17eefe9b47fee45f48f7ba5e62b714"


@dataclass(frozen=True)
class RecipeTensor:
    name: str  # GGUF tensor name, e.g. "blk.3.attn_v.weight", "token_embd.weight", "output.weight"
    shape: tuple[int, ...]  # GGUF order: shape[0] is the row length (ne0), i.e. the number of columns


# ---------------------------------------------------------------------------
# file type -> default tensor type: llama_ftype_get_default_type()
# ---------------------------------------------------------------------------

_FTYPE_DEFAULT_TYPE: dict[str, str] = {
    "F32": "F32",  # LLAMA_FTYPE_ALL_F32
    "F16": "F16",
    "BF16": "BF16",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q8_0": "Q8_0",
    "Q1_0": "Q1_0",
    "Q2_0": "Q2_0",
    "MXFP4_MOE": "MXFP4",
    "NVFP4": "NVFP4",
    # K-quants
    "Q2_K": "Q2_K",
    "Q2_K_S": "Q2_K",
    "IQ3_XS": "IQ3_S",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "TQ1_0": "TQ1_0",
    "TQ2_0": "TQ2_0",
    "IQ2_XXS": "IQ2_XXS",
    "IQ2_XS": "IQ2_XS",
    "IQ2_S": "IQ2_XS",
    "IQ2_M": "IQ2_S",
    "IQ3_XXS": "IQ3_XXS",
    "IQ1_S": "IQ1_S",
    "IQ1_M": "IQ1_M",
    "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS",
    "IQ3_S": "IQ3_S",
    "IQ3_M": "IQ3_S",
}

FILE_TYPES: tuple[str, ...] = tuple(_FTYPE_DEFAULT_TYPE)

# aliases accepted by tools/quantize/quantize.cpp (QUANT_OPTIONS)
_FTYPE_ALIASES: dict[str, str] = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# ggml_is_quantized() is false for these (the only non-quantized defaults)
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})

# type the source file holds for tensors llama.cpp leaves alone (see docstring)
UNQUANTIZED_SOURCE_TYPE = "F32"

# block sizes of file-type targets that advisor/models/data/ggml_types.toml does not list (not yet a ggml tensor type
# in gguf-py 0.19; value from upstream gguf-py/gguf/constants.py GGML_QUANT_SIZES)
_EXTRA_BLOCK_SIZES: dict[str, int] = {"Q2_0": 64}

# ---------------------------------------------------------------------------
# groups of file types used by llama_tensor_get_type_impl()
# ---------------------------------------------------------------------------

# output tensor -> Q5_K for these
_OUTPUT_Q5_K_FTYPES = frozenset({"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
# the "very low bit" branch right after the token_embd branch
_IQ2_FAMILY = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
# attn_output of 8-expert models -> Q5_K for these
_MOE8_ATTN_OUTPUT_Q5_K_FTYPES = frozenset(
    {"Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS"}
)

# ---------------------------------------------------------------------------
# tensor_allows_quantization(): name substrings that are never quantized
# ---------------------------------------------------------------------------

_NEVER_QUANTIZED_SUBSTRINGS: tuple[str, ...] = (
    "_norm.weight",  # norm tensors
    "ffn_gate_inp.weight",  # expert gating
    "ffn_gate_tid2eid.weight",  # DeepSeek-V4 token-id -> expert-id table
    "altup",  # Gemma 3n, very small
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",  # Mamba / Kimi conv1d
    "shortconv.conv.weight",
    "indexer.k_proj.weight",  # MiniMax indexer
    "indexer.q_proj.weight",
    # RWKV small 2-D weights
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",  # T5 relative position bias
    # multimodal
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    # audio codebook
    "a.rvq.codebook",
    "mm.a.code_embd",
)

# LLM_TN(arch)(LLM_TENSOR_POS_EMBD / LLM_TENSOR_TOKEN_TYPES, "weight") (BERT & co.)
_NEVER_QUANTIZED_NAMES = frozenset({"position_embd.weight", "token_types.weight"})

# ---------------------------------------------------------------------------
# tensor_type_fallback(): type to use when ne0 is not a multiple of the block
# ---------------------------------------------------------------------------

_FALLBACK_TYPE: dict[str, str] = {
    # block size 256 -> block size 32
    "IQ1_S": "IQ4_NL",
    "IQ1_M": "IQ4_NL",
    "IQ2_XXS": "IQ4_NL",
    "IQ2_XS": "IQ4_NL",
    "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL",
    "IQ3_S": "IQ4_NL",
    "IQ4_XS": "IQ4_NL",
    "Q2_0": "Q4_0",
    "Q2_K": "Q4_0",
    "Q3_K": "Q4_0",
    "TQ1_0": "Q4_0",
    "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}

# tensor_category (enum class in llama-quant.cpp)
TOKEN_EMBD = "TOKEN_EMBD"
ATTENTION_Q = "ATTENTION_Q"
ATTENTION_V = "ATTENTION_V"
ATTENTION_K = "ATTENTION_K"
ATTENTION_QKV = "ATTENTION_QKV"
ATTENTION_KV_B = "ATTENTION_KV_B"
ATTENTION_OUTPUT = "ATTENTION_OUTPUT"
FFN_UP = "FFN_UP"
FFN_GATE = "FFN_GATE"
FFN_DOWN = "FFN_DOWN"
OUTPUT = "OUTPUT"
OTHER = "OTHER"

_BLK_RE = re.compile(r"blk\.\s*([+-]?\d+)")


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def _block_size(type_name: str) -> int:
    """ggml_blck_size(), from the package's ggml type table (no gguf import on this path)."""
    from fitplan.advisor.models.ggml_types import ggml_type_size

    try:
        return ggml_type_size(type_name)[0]
    except ValueError:
        if type_name in _EXTRA_BLOCK_SIZES:
            return _EXTRA_BLOCK_SIZES[type_name]
        raise ValueError(f"unknown ggml type {type_name!r}") from None


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _c_mod(a: int, b: int) -> int:
    """C remainder (sign of the dividend)."""
    return a - b * _c_div(a, b)


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """use_more_bits lambda of llama_tensor_get_type_impl()."""
    return (
        i_layer < _c_div(n_layers, 8)
        or i_layer >= _c_div(7 * n_layers, 8)
        or _c_mod(i_layer - _c_div(n_layers, 8), 3) == 2
    )


@lru_cache(maxsize=65536)  # pure in its argument; the solver asks per tensor for every format
def _parse_layer(name: str) -> int | None:
    """sscanf(name, "blk.%d.", &il): the block index, or None."""
    if not name.startswith("blk."):
        return None
    m = _BLK_RE.match(name)
    return int(m.group(1)) if m else None


def _weight_order_key(name: str) -> tuple[int, bytes]:
    """llama_model_loader::weight_name_comparer: by block, then by name."""
    layer = _parse_layer(name)
    return (-1 if layer is None else layer, name.encode())


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims(): trailing dimensions of size 1 do not count."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


def _ne(shape: tuple[int, ...], i: int) -> int:
    return shape[i] if i < len(shape) else 1


@lru_cache(maxsize=65536)  # pure in its argument; the solver asks per tensor for every format
def _tensor_category(name: str) -> str:
    """tensor_get_category()."""
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for needle, cat in (
        ("attn_qkv.weight", ATTENTION_QKV),
        ("attn_kv_b.weight", ATTENTION_KV_B),
        ("attn_v.weight", ATTENTION_V),
        ("attn_k.weight", ATTENTION_K),
        ("attn_q.weight", ATTENTION_Q),
        ("attn_output.weight", ATTENTION_OUTPUT),
        ("ffn_up", FFN_UP),
        ("ffn_gate", FFN_GATE),
        ("ffn_down", FFN_DOWN),
    ):
        if needle in name:
            return cat
    return OTHER


def _category_is_attn_v(cat: str) -> bool:
    """category_is_attn_v()."""
    return cat in (ATTENTION_V, ATTENTION_QKV, ATTENTION_KV_B)


@lru_cache(maxsize=65536)  # pure in its argument; the solver asks per tensor for every format
def _allows_quantization(t: RecipeTensor) -> bool:
    """tensor_allows_quantization() with default params (only_copy=false, quantize_output_tensor=true)."""
    if _n_dims(t.shape) < 2:  # quantize only 2D and 3D tensors (experts)
        return False
    name = t.name
    if not name.endswith("weight"):
        return False
    if name in _NEVER_QUANTIZED_NAMES:
        return False
    return _never_quantized_pattern().search(name) is None


@lru_cache(maxsize=1)
def _never_quantized_pattern() -> re.Pattern[str]:
    """One compiled alternation instead of a substring test per pattern (the solver asks per tensor)."""
    return re.compile("|".join(re.escape(s) for s in _NEVER_QUANTIZED_SUBSTRINGS))


# ---------------------------------------------------------------------------
# quantization state: quantize_state_impl + init_quantize_state_counters()
# ---------------------------------------------------------------------------


@dataclass
class _QuantizeState:
    arch: str
    n_expert: int
    n_gqa: int
    n_layer: int
    is_70b: bool
    has_imatrix: bool
    n_attention_wv: int = 0
    n_ffn_down: int = 0
    n_ffn_gate: int = 0
    n_ffn_up: int = 0
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0
    n_fallback: int = 0
    has_tied_embeddings: bool = True  # assume tied until we see output.weight
    fallbacks: list[str] = field(default_factory=list)

    def init_counters(self, names: list[str]) -> None:
        """init_quantize_state_counters()."""
        for name in names:
            cat = _tensor_category(name)
            if _category_is_attn_v(cat):
                self.n_attention_wv += 1
            if cat == OUTPUT:
                self.has_tied_embeddings = False
        # qs.n_ffn_down = qs.n_ffn_gate = qs.n_ffn_up = hparams.n_layer_all
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = self.n_layer

    def layer_info(self, i_layer: int, n_layer: int, name: str) -> tuple[int, int]:
        """layer_info lambda: with experts, the layer comes from the tensor name."""
        if max(1, self.n_expert) > 1:
            parsed = _parse_layer(name)
            if parsed is None:
                raise ValueError(f"Failed to determine layer for tensor {name}")
            if parsed < 0 or parsed >= n_layer:
                raise ValueError(f"Bad layer {parsed} for tensor {name}. Must be in [0, {n_layer})")
            i_layer = parsed
        return i_layer, n_layer


# ---------------------------------------------------------------------------
# llama_tensor_get_type_impl(), one helper per branch of its if/else chain
# ---------------------------------------------------------------------------


def _output_type(qs: _QuantizeState, new_type: str, t: RecipeTensor, ftype: str) -> str:
    """OUTPUT (or tied TOKEN_EMBD) branch."""
    nx = t.shape[0]
    if ftype == "MXFP4_MOE":
        return "Q8_0"
    if qs.arch == "falcon" or nx % _block_size(new_type) != 0:
        return "Q8_0"
    if ftype in _OUTPUT_Q5_K_FTYPES:
        return "Q5_K"
    if new_type != "Q8_0":
        return "Q6_K"
    return new_type


def _mxfp4_moe_type(qs: _QuantizeState, t: RecipeTensor, category: str) -> str:
    """MXFP4_MOE branch: expert (3-D) tensors -> MXFP4, the rest -> Q8_0."""
    is_bailingmoe3_expert = qs.arch == "bailingmoe3" and category in (FFN_UP, FFN_GATE, FFN_DOWN)
    if _ne(t.shape, 2) > 1 and (qs.arch != "bailingmoe3" or is_bailingmoe3_expert):
        return "MXFP4"
    return "Q8_0"


def _token_embd_type(new_type: str, ftype: str) -> str:
    """Untied TOKEN_EMBD branch."""
    if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
        return "Q2_K"
    if ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
        return "IQ3_S"
    if ftype in ("TQ1_0", "TQ2_0", "Q2_0"):
        return "Q4_K"
    return new_type


def _iq2_family_type(qs: _QuantizeState, new_type: str, ftype: str, category: str) -> str:
    """Branch for IQ2_XXS / IQ2_XS / IQ1_S / IQ2_S / IQ2_M / IQ1_M."""
    iq2_s_or_m = ftype in ("IQ2_S", "IQ2_M")
    if _category_is_attn_v(category):
        if qs.n_gqa >= 4 or qs.n_expert >= 4:
            new_type = "Q4_K"
        else:
            new_type = "IQ3_S" if iq2_s_or_m else "Q2_K"
        qs.i_attention_wv += 1
    elif qs.n_expert == 8 and category == ATTENTION_K:
        new_type = "Q4_K"
    elif category == FFN_DOWN:
        # note: uses the raw counter, not layer_info()
        if qs.i_ffn_down < _c_div(qs.n_ffn_down, 8):
            new_type = "IQ3_S" if iq2_s_or_m else "Q2_K"
        qs.i_ffn_down += 1
    elif category == ATTENTION_OUTPUT:
        if qs.n_expert == 8:
            new_type = "Q5_K"
        elif ftype in ("IQ1_S", "IQ1_M"):
            new_type = "IQ2_XXS"
        elif iq2_s_or_m:
            new_type = "IQ3_S"
    return new_type


def _attn_v_type(qs: _QuantizeState, new_type: str, ftype: str) -> str:
    """attn_v-like branch (ATTENTION_V, ATTENTION_QKV, ATTENTION_KV_B)."""
    gqa4 = qs.n_gqa >= 4
    if ftype == "Q2_K":
        new_type = "Q4_K" if gqa4 else "Q3_K"
    elif ftype == "Q2_K_S" and gqa4:
        new_type = "Q4_K"
    elif ftype == "IQ3_XXS":
        new_type = "Q4_K" if gqa4 else ("IQ3_S" if not qs.has_imatrix else "IQ3_XXS")
    elif ftype in ("IQ3_XS", "IQ3_S") and gqa4:
        new_type = "Q4_K"
    elif ftype == "IQ3_M":
        new_type = "Q4_K"
    elif ftype == "Q3_K_M":
        new_type = "Q5_K" if qs.i_attention_wv < 2 else "Q4_K"
    elif ftype == "Q3_K_L":
        new_type = "Q5_K"
    elif ftype in ("IQ4_NL", "IQ4_XS") and gqa4:
        new_type = "Q5_K"
    elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(qs.i_attention_wv, qs.n_attention_wv):
        new_type = "Q6_K"
    elif ftype == "Q4_K_S" and qs.i_attention_wv < 4:
        new_type = "Q5_K"
    if qs.is_70b and new_type in ("Q3_K", "Q4_K"):
        # 70B: 8 heads share attn_v, so more bits are cheap
        new_type = "Q5_K"
    if qs.n_expert == 8:
        new_type = "Q8_0"
    qs.i_attention_wv += 1
    return new_type


def _attn_k_type(qs: _QuantizeState, new_type: str, ftype: str) -> str:
    """ATTENTION_K branch."""
    if qs.n_expert == 8:
        return "Q8_0"
    if ftype == "IQ3_XS":
        return "IQ3_XXS"
    if ftype == "IQ3_XXS":
        return "IQ2_S"
    return new_type


def _attn_q_type(new_type: str, ftype: str) -> str:
    """ATTENTION_Q branch."""
    if ftype == "IQ3_XS":
        return "IQ3_XXS"
    if ftype == "IQ3_XXS":
        return "IQ2_S"
    return new_type


def _ffn_down_type(qs: _QuantizeState, new_type: str, ftype: str, name: str) -> str:
    """FFN_DOWN branch."""
    i_layer, n_layer = qs.layer_info(qs.i_ffn_down, qs.n_ffn_down, name)
    falcon = qs.arch == "falcon"
    first_eighth = i_layer < _c_div(n_layer, 8)
    more_bits = _use_more_bits(i_layer, n_layer)
    if ftype == "Q2_K":
        new_type = "Q3_K"
    elif ftype == "Q2_K_S":
        if first_eighth:
            new_type = "Q4_K"
    elif ftype == "IQ3_XXS" and not qs.has_imatrix:
        new_type = "Q4_K" if first_eighth else "Q3_K"
    elif ftype == "Q3_K_M":
        if i_layer < _c_div(n_layer, 16):
            new_type = "Q5_K"
        else:
            new_type = "Q4_K" if (not falcon or more_bits) else "Q3_K"
    elif ftype == "IQ3_M" and (first_eighth or (qs.n_expert == 8 and more_bits)):
        new_type = "Q4_K"
    elif ftype == "Q3_K_L":
        new_type = "Q4_K" if falcon else "Q5_K"
    elif ftype == "Q4_K_M":
        if falcon:
            if i_layer < _c_div(n_layer, 16):
                new_type = "Q6_K"
            else:
                new_type = "Q5_K" if more_bits else "Q4_K"
        elif more_bits:
            new_type = "Q6_K"
    elif first_eighth and ftype in ("IQ4_NL", "IQ4_XS") and not qs.has_imatrix:
        new_type = "Q5_K"
    elif ftype == "Q5_K_M" and more_bits:
        new_type = "Q6_K"
    elif ftype == "Q4_K_S" and not falcon and first_eighth:
        new_type = "Q5_K"
    elif ftype in ("Q4_0", "Q5_0") and qs.has_imatrix and first_eighth:
        # guard against craziness in the first ffn_down layers (imatrix only)
        new_type = "Q4_1" if ftype == "Q4_0" else "Q5_1"
    qs.i_ffn_down += 1
    return new_type


def _attn_output_type(qs: _QuantizeState, new_type: str, ftype: str) -> str:
    """ATTENTION_OUTPUT branch."""
    if qs.arch == "falcon":
        return "Q4_K" if ftype == "Q3_K_L" else new_type
    if qs.n_expert == 8:
        return "Q5_K" if ftype in _MOE8_ATTN_OUTPUT_Q5_K_FTYPES else new_type
    return {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(
        ftype, new_type
    )


def _ffn_gate_up_type(qs: _QuantizeState, new_type: str, ftype: str, name: str, category: str) -> str:
    """FFN_GATE and FFN_UP branches (identical apart from their counter)."""
    if category == FFN_GATE:
        i_layer, n_layer = qs.layer_info(qs.i_ffn_gate, qs.n_ffn_gate, name)
        qs.i_ffn_gate += 1
    else:
        i_layer, n_layer = qs.layer_info(qs.i_ffn_up, qs.n_ffn_up, name)
        qs.i_ffn_up += 1
    if ftype == "IQ3_XS" and _c_div(n_layer, 8) <= i_layer < _c_div(7 * n_layer, 8):
        new_type = "IQ3_XXS"
    return new_type


def _tensor_get_type_impl(qs: _QuantizeState, new_type: str, t: RecipeTensor, ftype: str, category: str) -> str:
    """llama_tensor_get_type_impl(): the branch order is significant."""
    if category == OUTPUT or (qs.has_tied_embeddings and category == TOKEN_EMBD):
        # tied embeddings: token_embd is quantized like the output tensor
        return _output_type(qs, new_type, t, ftype)
    if ftype == "MXFP4_MOE":
        return _mxfp4_moe_type(qs, t, category)
    if category == TOKEN_EMBD:
        return _token_embd_type(new_type, ftype)
    if ftype in _IQ2_FAMILY:
        return _iq2_family_type(qs, new_type, ftype, category)
    if _category_is_attn_v(category):
        return _attn_v_type(qs, new_type, ftype)
    if category == ATTENTION_K:
        return _attn_k_type(qs, new_type, ftype)
    if category == ATTENTION_Q:
        return _attn_q_type(new_type, ftype)
    if category == FFN_DOWN:
        return _ffn_down_type(qs, new_type, ftype, t.name)
    if category == ATTENTION_OUTPUT:
        return _attn_output_type(qs, new_type, ftype)
    # (the ATTENTION_QKV branch that follows in llama.cpp is unreachable:
    #  category_is_attn_v() already took ATTENTION_QKV above)
    if category in (FFN_GATE, FFN_UP):
        return _ffn_gate_up_type(qs, new_type, ftype, t.name, category)
    return new_type


def _tensor_type_fallback(qs: _QuantizeState, t: RecipeTensor, target_type: str) -> str:
    """tensor_type_fallback(): rows that are not a whole number of blocks."""
    ncols = t.shape[0]
    if ncols % _block_size(target_type) == 0:
        return target_type
    qs.n_fallback += 1
    qs.fallbacks.append(t.name)
    if target_type not in _FALLBACK_TYPE:
        raise ValueError(f"no tensor type fallback is defined for type {target_type} (tensor {t.name})")
    return_type = _FALLBACK_TYPE[target_type]
    if ncols % _block_size(return_type) != 0:
        return_type = "F16"  # "must use F16 due to unusual shape"
    return return_type


def _tensor_get_type(qs: _QuantizeState, t: RecipeTensor, default_type: str, ftype: str, category: str) -> str:
    """llama_tensor_get_type() with default params (no overrides, not --pure)."""
    if not _allows_quantization(t):
        return UNQUANTIZED_SOURCE_TYPE
    new_type = default_type
    if default_type not in _FLOAT_TYPES:  # ggml_is_quantized(default_type)
        new_type = _tensor_get_type_impl(qs, new_type, t, ftype, category)
        new_type = _tensor_type_fallback(qs, t, new_type)
    return new_type


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def _canonical_ftype(file_type: str) -> str:
    key = file_type.upper()
    key = _FTYPE_ALIASES.get(key, key)
    if key not in _FTYPE_DEFAULT_TYPE:
        raise ValueError(f"unknown file type {file_type!r}; expected one of {', '.join(FILE_TYPES)}")
    return key


def _infer_n_layer(tensors: list[RecipeTensor]) -> int:
    layers = [_parse_layer(t.name) for t in tensors]
    return max((il for il in layers if il is not None), default=-1) + 1


def assign_types(
    tensors: list[RecipeTensor],
    file_type: str,
    *,
    arch: str,
    n_expert: int = 0,
    n_gqa: int = 1,
    n_layer: int | None = None,
    has_imatrix: bool = False,
) -> dict[str, str]:
    """Map every tensor name to the ggml type name (e.g. "Q4_K", "Q6_K", "F32") llama-quantize would give it.

    ``arch`` is the GGUF ``general.architecture`` ("llama", "falcon", ...),
    ``n_expert`` the expert count (0 for dense models), ``n_gqa`` is
    ``n_head // n_head_kv`` and ``n_layer`` the block count (inferred from the
    ``blk.N.`` names when omitted). ``has_imatrix`` models ``llama-quantize --imatrix``,
    which changes only a few choices (IQ3_XXS attn_v / ffn_down, IQ4_NL / IQ4_XS
    ffn_down, Q4_0 / Q5_0 ffn_down of the first layers).
    Raises ``ValueError`` where llama-quantize would fail.
    """
    return _assign(tensors, file_type, arch=arch, n_expert=n_expert, n_gqa=n_gqa, n_layer=n_layer,
                   has_imatrix=has_imatrix)[0]


def fallback_tensors(tensors: list[RecipeTensor], file_type: str, *, arch: str, n_expert: int = 0, n_gqa: int = 1,
                     n_layer: int | None = None) -> list[str]:
    """The tensors whose rows are not a whole number of the type's blocks, so llama-quantize gives them
    another type (tensor_type_fallback: SmolLM2's 576-wide rows cannot hold K-quants' 256-blocks)."""
    return _assign(tensors, file_type, arch=arch, n_expert=n_expert, n_gqa=n_gqa, n_layer=n_layer)[1].fallbacks


def _assign(tensors: list[RecipeTensor], file_type: str, *, arch: str, n_expert: int = 0, n_gqa: int = 1,
            n_layer: int | None = None, has_imatrix: bool = False) -> tuple[dict[str, str], _QuantizeState]:
    ftype = _canonical_ftype(file_type)
    default_type = _FTYPE_DEFAULT_TYPE[ftype]
    if n_layer is None:
        n_layer = _infer_n_layer(tensors)
    qs = _QuantizeState(
        arch=arch,
        n_expert=n_expert,
        n_gqa=n_gqa,
        n_layer=n_layer,
        # llama_quant_model_from_metadata(): only LLM_TYPE_70B matters
        is_70b=arch == "llama" and n_layer == 80 and n_gqa != 1,
        has_imatrix=has_imatrix,
    )
    # weights are visited in llama_model_loader::weights_map order
    ordered = sorted(tensors, key=lambda t: _weight_order_key(t.name))
    qs.init_counters([t.name for t in ordered])
    return {t.name: _tensor_get_type(qs, t, default_type, ftype, _tensor_category(t.name)) for t in ordered}, qs
