"""A plan's choices (Setup) and its predicted memory per device (DeviceMemory)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from fitplan.model_spec import TensorInfo

# The bounds of a plan's numbers: checked where a value enters (CLI, budget files, markers, profiles)
# and again by the plan file's schema, so nothing accepted at the door is refused when a plan is written.
MAX_CONTEXT = 2**24  # tokens per sequence
MAX_BATCH = 4096  # parallel sequences
MAX_THREADS = 4096  # CPU threads (and a profile's cores and threads)
MAX_DRAFT_TOKENS = 64  # tokens a draft proposes per step


@dataclass(frozen=True)
class Setup:
    """The discrete choices of one candidate plan."""

    runtime: str  # a registered runtime: "llama.cpp", "transformers" or "onnxruntime"
    weights: str  # a weight format name (formats.toml)
    kv_cache: str  # KV cache element type (kv_dtypes.toml)
    context: int  # tokens per sequence
    batch: int  # parallel sequences
    threads: int  # CPU threads
    gpu_layers: int  # transformer blocks on GPUs (the rest on the CPU)
    gpus: int = 0  # GPUs the blocks are spread over
    cpu_moe_layers: int = 0  # llama.cpp --n-cpu-moe: routed experts of the first N blocks stay on the CPU
    flash_attn: bool = False  # fused attention: no materialized KQ scores (llama.cpp needs it for a quantized V cache)
    # an explicit placement (the MILP's): the device of each block, and of each block's routed experts
    layer_map: tuple[str, ...] = ()
    expert_map: tuple[str, ...] = ()
    prune: str = ""  # "2:4" or "unstructured:RATIO" (strategies/pruning.py); "" when not pruned
    sparse_kernels: bool = False  # 2:4 weights held in torch's semi-structured layout (GPU, cc >= 8.0)
    disk_layers: int = 0  # transformers: the last N blocks stay on disk (accelerate offload), read per token


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
