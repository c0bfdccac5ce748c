"""What the cost models know about a model: its shape, and every weight tensor.

Tensors use llama.cpp's GGUF names and axis order (shape[0] is the row length, i.e. the input
features of a linear layer) whatever the source, so one quantization recipe serves catalog
entries, config folders and GGUF files alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Literal

# embed: the token embedding (a row lookup, or the head when tied); lookup: another table only read by
# rows, never the head (Gemma 3n's per-layer embeddings); output: the head; global: other tensors
# outside the blocks.
Role = Literal["embed", "lookup", "output", "block", "global"]
# What a layer keeps per sequence between steps: a KV cache over every token (full), over at most a
# window (sliding, or chunked: Llama 4 attends within fixed chunks), a fixed-size state (recurrent:
# Mamba, gated DeltaNet, short convolutions), or nothing (an MLP-only layer). A layer that reads an
# earlier layer's cache (Gemma 3n's last layers) keeps its kind and is marked `shared`.
CacheKind = Literal["full", "sliding", "chunked", "recurrent", "none"]
STATE_BYTES_PER_ELEMENT = 4  # recurrent states are kept in f32 (llama.cpp's default type_r / type_s)


@dataclass(frozen=True)
class TensorInfo:
    """One weight tensor; `dtype`/`nbytes` are set only where a file header gives them exactly."""

    name: str
    shape: tuple[int, ...]
    role: Role
    layer: int | None = None
    experts: int = 0  # >0: a stacked tensor holding this many routed experts
    dtype: str | None = None
    nbytes: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_matrix(self) -> bool:
        """Only 2-D and higher tensors are ever quantized; norms and biases stay as they are."""
        return len(self.shape) >= 2


@dataclass(frozen=True)
class LayerCache:
    """What one layer caches per sequence: K/V widths per token, or a recurrent state's elements."""

    kind: CacheKind
    kv_heads: int = 0
    key_dim: int = 0  # per head
    value_dim: int = 0  # per head (differs from key_dim under MLA and in some hybrids)
    window: int | None = None  # tokens a sliding or chunked layer attends over
    state_elements: int = 0  # conv + SSM (or DeltaNet) state elements per sequence: a recurrent layer's,
    # or a Mamba mixer's beside the attention (Falcon-H1)
    shared: bool = False  # attends over an earlier layer's K/V (Gemma 3n's num_kv_shared_layers): reads
    # a cache of this shape each step but stores none

    @property
    def attends(self) -> bool:
        return self.kind in ("full", "sliding", "chunked")

    @property
    def windowed(self) -> bool:
        return self.kind in ("sliding", "chunked") and bool(self.window)


@dataclass(frozen=True)
class ModelSpec:
    """A model's architecture, as the memory and speed models need it."""

    name: str
    source: str  # "catalog", "gguf", "folder" or "hub"
    location: str  # catalog name, file or folder path, or hub id
    architecture: str  # transformers model_type, or GGUF general.architecture
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int  # per-head width of keys (and queries)
    v_head_dim: int  # per-head width of values (differs under MLA)
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    attention_bias: bool
    max_context: int
    native_dtype: str  # "bf16", "fp16", "fp32", or the GGUF file type such as "Q4_1"
    tensors: tuple[TensorInfo, ...]
    experts: int = 0
    experts_per_token: int = 0
    sliding_window: int | None = None
    sliding_layers: frozenset[int] = field(default_factory=frozenset)
    kv_lora_rank: int = 0  # MLA (DeepSeek-V2/V3): compressed KV width
    qk_rope_head_dim: int = 0  # MLA: decoupled RoPE key width, cached beside the latent
    stored_tensors: tuple[TensorInfo, ...] = ()  # exact bytes as stored in the files, if any
    hub_id: str | None = None
    layer_caches: tuple[LayerCache, ...] = ()  # per layer; empty: every layer as the fields above say
    counted_parts: str = ""  # what `parameters` leaves out, where a checkpoint holds more (MTP, vision)
    notes: tuple[str, ...] = ()  # one line each a reader should know of how the model was read (a cache term
    # a GGUF of an unknown architecture does not give, a merged model's origin)
    mtp_layers: int = 0  # multi-token-prediction layers stored after the last block, not counted or loaded
    multimodal: bool = False  # the text model of a checkpoint that also stores vision/audio towers
    # (Gemma 3, Gemma 3n, Llama 4, Mistral 3): their tensors, outside `language_model`, are not planned

    def __hash__(self) -> int:
        """The dataclass hash of the fields, computed once: the cost models' caches hash a spec on every
        call, and its tensor tuples make each hash walk hundreds of entries."""
        value = self.__dict__.get("_hash")
        if value is None:
            value = hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))
            object.__setattr__(self, "_hash", value)
        return value

    @cached_property
    def caches(self) -> tuple[LayerCache, ...]:
        """Every layer's cache: as given, else full attention with the model's KV shape, sliding on
        sliding_layers."""
        if self.layer_caches:
            return self.layer_caches
        full = LayerCache("full", self.kv_heads, self.head_dim, self.v_head_dim)
        sliding = LayerCache("sliding", self.kv_heads, self.head_dim, self.v_head_dim, self.sliding_window)
        return tuple(sliding if self.sliding_window and i in self.sliding_layers else full
                     for i in range(self.layers))

    @property
    def recurrent_layers(self) -> int:
        return sum(1 for c in self.caches if c.kind == "recurrent")

    @property
    def parameters(self) -> int:
        """Every parameter, each counted once (a tied output head adds nothing)."""
        return sum(t.numel for t in self.tensors)

    @property
    def active_parameters(self) -> int:
        """Parameters used for one token: routed experts count only the ones a token is sent to."""
        total = 0
        for t in self.tensors:
            if t.experts:
                total += t.numel // t.experts * self.experts_per_token
            else:
                total += t.numel
        return total

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def stored_bytes(self) -> int | None:
        """Exact weight bytes of the files the model was read from, if it was read from files."""
        return sum(t.nbytes or 0 for t in self.stored_tensors) if self.stored_tensors else None
