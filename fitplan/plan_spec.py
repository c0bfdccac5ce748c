"""A plan's choices (Setup), its predicted memory per device (DeviceMemory), the weights a runtime
loads (ModelSource, RunTarget) and one timed run (RunTiming)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fitplan.errors import FitplanError
from fitplan.model_spec import TensorInfo

# The bounds of a plan's numbers: checked where a value enters (CLI, budget files, markers, profiles)
# and again by the plan file's schema, so nothing accepted at the door is refused when a plan is written.
MAX_CONTEXT = 2**24  # tokens per sequence
MAX_BATCH = 4096  # parallel sequences
MAX_THREADS = 4096  # CPU threads (and a profile's cores and threads)
MAX_DRAFT_TOKENS = 64  # tokens a draft proposes per step


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Speculative(_Strict):
    # speculative decoding in a plan: the draft, how many tokens it proposes, its acceptance and gain

    draft: str  # a model (catalog name or local file) or "prompt-lookup"
    draft_weights: str | None = None  # the draft's format, e.g. bf16 for a lower-precision copy (transformers)
    draft_tokens: int = Field(gt=0, le=MAX_DRAFT_TOKENS)
    acceptance: float = Field(ge=0, lt=1)
    acceptance_source: str = ""
    cost_ratio: float | None = None
    speedup: float | None = None
    used: bool = True


Placement = Literal["gpu", "split", "cpu", "experts-cpu", "exact", "disk"]


class Setup(_Strict):
    """Every choice of one plan: what the solver weighs, the plan file stores and the executors carry out.

    The solver makes them (`placement` and the descriptive fields last stay unset there); the plan
    file validates one against the registered runtimes (advisor/plans/plan_file.py)."""

    runtime: str  # a registered runtime (strategies/registry.py runtime_names())
    weights: str  # a weight format name (formats.toml)
    kv_cache: str  # KV cache element type (kv_dtypes.toml)
    context: int = Field(gt=0, le=MAX_CONTEXT)  # tokens per sequence
    batch: int = Field(gt=0, le=MAX_BATCH)  # parallel sequences
    threads: int = Field(gt=0, le=MAX_THREADS)  # CPU threads
    gpu_layers: int = Field(ge=0)  # transformer blocks on GPUs (the rest on the CPU)
    gpus: int = Field(default=0, ge=0)  # GPUs the blocks are spread over
    # llama.cpp --tensor-split: each GPU's share of the offloaded layers ((): equal shares; 0: none); the
    # solver sets it for unequal cards, by memory (llama.cpp's own default) or by speed
    tensor_split: tuple[float, ...] = ()
    cpu_moe_layers: int = Field(default=0, ge=0)  # llama.cpp --n-cpu-moe: routed experts of the first N blocks stay on the CPU
    flash_attn: bool = False  # fused attention: no materialized KQ scores (llama.cpp needs it for a quantized V cache)
    use_mmap: bool = True  # llama.cpp maps the file (pages load on demand, the page cache is shared)
    use_mlock: bool = False  # llama.cpp locks the weights in RAM (no swapping; needs RLIMIT_MEMLOCK)
    # llama.cpp: sliding-window layers cache the whole context (llama_context_default_params, what
    # llama-cpp-python runs); False: only the window (llama-server's default)
    swa_full: bool = True
    # llama.cpp: prompt batches of >= 32 tokens run the CPU-resident layers on the GPU, their weights sent over
    # the host link for each batch (its default, "op offload"); False: --no-op-offload, the host computes them
    op_offload: bool = True
    placement: Placement | None = None  # how the blocks are placed, as the plan file records it
    disk_layers: int = Field(default=0, ge=0)  # transformers: the last N blocks stay on disk (accelerate offload)
    # an explicit placement (the MILP's): the device of each block, and of each block's routed experts
    layer_map: tuple[str, ...] = ()
    expert_map: tuple[str, ...] = ()
    tensor_overrides: tuple[str, ...] = ()  # llama.cpp --override-tensor rules that carry out the maps
    prune: str = ""  # "2:4" or "unstructured:RATIO" (strategies/pruning.py); "" when not pruned
    sparse_kernels: bool = False  # 2:4 weights held in torch's semi-structured layout (GPU, cc >= 8.0)
    speculative: Speculative | None = None
    # what the plan file records about the choices (never read by an executor)
    context_note: str = ""
    weights_source: dict[str, Any] = {}
    pruning: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _split_per_gpu(self) -> Setup:
        """A plan file's tensor_split names one positive, finite share per GPU, or none."""
        if self.tensor_split and (len(self.tensor_split) != self.gpus or not sum(self.tensor_split) > 0
                                  or not all(0 <= v < float("inf") for v in self.tensor_split)):
            raise ValueError(f"tensor_split needs a share >= 0 per GPU ({self.gpus}), not all 0; "
                             f"got {list(self.tensor_split)}")
        return self

    def with_(self, **changes: Any) -> Setup:
        """A copy with `changes` (the solver's variations of a candidate; values it made itself)."""
        return self.model_copy(update=changes)


@dataclass
class DeviceMemory:
    """Bytes on one device; every tensor is counted on exactly one device."""

    weights: int = 0
    kv_cache: int = 0
    activations: int = 0
    overhead: int = 0
    # stored weights mapped while a runtime converts them to another dtype (peak during loading)
    load_transient: int = 0
    # speculative decoding: the draft model's own weights and KV cache (weights/kv_cache stay the target's)
    draft_weights: int = 0
    draft_kv_cache: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.kv_cache + self.activations + self.overhead + self.load_transient
                + self.draft_weights + self.draft_kv_cache)

    def as_dict(self) -> dict[str, int]:
        out = {f.name: int(getattr(self, f.name)) for f in fields(self)}
        out["total"] = int(self.total)
        return out


def gpu_name(index: int) -> str:
    return f"gpu{index}"


@dataclass(frozen=True)
class ModelSource:
    """Local weights a runtime can load: a GGUF file or a folder with config.json + safetensors."""

    kind: str  # "gguf" | "folder"
    path: str


@dataclass(frozen=True)
class RunTarget:
    """What an executor runs: a plan's choices and its model, the local weights already checked
    against the plan's fingerprint (advisor/plans/plan_file.py `run_target`)."""

    setup: Setup
    name: str  # the model's name
    layers: int  # its transformer blocks
    source: str  # where it came from: "catalog" | "gguf" | "folder" | "hub"
    location: str
    hub_id: str | None = None
    fingerprint: str | None = None
    local: ModelSource | None = None  # the weights on disk; None when there are none (why: `no_local`)
    no_local: FitplanError | None = None

    def weights(self) -> ModelSource:
        """The local weights, or the one-line reason there are none."""
        if self.local is None:
            raise self.no_local or FitplanError(f"the plan's model {self.name} has no local weights")
        return self.local


@dataclass(frozen=True)
class RunTiming:
    """One measured generation: a prompt of `prompt_tokens`, then `generated` greedy tokens."""

    prompt_tokens: int
    generated: int
    prefill_s: float  # evaluating the prompt
    ttft_s: float  # prompt start to the first generated token
    decode_s: float  # the tokens after the first
    first_tokens: tuple[int, ...] = ()

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s

    @property
    def decode_tokens_per_s(self) -> float:
        return (self.generated - 1) / self.decode_s if self.generated > 1 and self.decode_s > 0 else 0.0


# every weight tensor with its exact bytes in the plan's format (strategies.quantization.tensor_bytes)
WeightBytes = Sequence[tuple[TensorInfo, int]]
