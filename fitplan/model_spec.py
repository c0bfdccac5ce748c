"""What the cost models know about a model: its shape, and every weight tensor.

Tensors use llama.cpp's GGUF names and axis order (shape[0] is the row length, i.e. the input
features of a linear layer) whatever the source, so one quantization recipe serves catalog
entries, config folders and GGUF files alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["embed", "output", "block", "global"]


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
