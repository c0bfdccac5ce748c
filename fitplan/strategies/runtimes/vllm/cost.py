"""vLLM for models one machine cannot hold: tensor parallel within a node, pipeline across nodes.

Per GPU: weights / (TP x PP); the KV cache of the context split by pipeline stage and by KV heads
across the tensor-parallel ranks (heads replicate when there are fewer than ranks); the profiling
forward's activations; the CUDA context. vLLM preallocates gpu_memory_utilization of each card and
gives the rest to KV blocks, so a plan fits when its need is within that reservation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec
from fitplan.plan_spec import WeightBytes
from fitplan.strategies.kv_cache import layer_kv_bytes

if TYPE_CHECKING:
    from fitplan.hardware_spec import GPUSpec

RUNTIME = "vllm"


@dataclass(frozen=True)
class ScaleOut:
    gpu: str
    gpus: int
    nodes: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    weights: str
    need_per_gpu_bytes: int
    reserved_per_gpu_bytes: int
    command: str

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": RUNTIME, **self.__dict__}


def per_gpu_bytes(spec: ModelSpec, weights: WeightBytes, context: int, tp: int, pp: int, gpu_context: int) -> int:
    c = load_table("fitplan.strategies.data", "runtimes.toml")["vllm"]
    total_weights = sum(b for _, b in weights)
    kv_total = sum(layer_kv_bytes(spec, i, context, "bf16", "transformers") for i in range(spec.layers))
    kv_share = math.ceil(spec.kv_heads / tp) / spec.kv_heads if spec.kv_heads else 1 / tp
    tokens = c["max_num_batched_tokens"]
    activations = tokens * (4 * spec.hidden_size + 3 * spec.intermediate_size // tp) * 2 \
        + c["max_num_seqs"] * spec.vocab_size * 4
    return int(total_weights / (tp * pp) + kv_total / pp * kv_share + activations + gpu_context)


def reserved_bytes(gpu: GPUSpec) -> int:
    """What vLLM takes of a card: gpu_memory_utilization of it, for the model and its KV blocks."""
    c = load_table("fitplan.strategies.data", "runtimes.toml")["vllm"]
    return int(gpu.memory_bytes * c["gpu_memory_utilization"])


def scale_out(spec: ModelSpec, weights: WeightBytes, fmt_name: str, context: int, gpu: GPUSpec,
              gpu_context: int) -> ScaleOut | None:
    """The fewest GPUs of this kind (powers of two; up to gpus_per_node per node) that hold the model."""
    c = load_table("fitplan.strategies.data", "runtimes.toml")["vllm"]
    reserved = reserved_bytes(gpu)
    for gpus in (2**k for k in range(0, 11)):
        tp = min(gpus, c["gpus_per_node"])
        pp = gpus // tp
        if pp > spec.layers:
            return None
        need = per_gpu_bytes(spec, weights, context, tp, pp, gpu_context)
        if need <= reserved:
            model = spec.hub_id or spec.location
            command = (f"vllm serve {model} --tensor-parallel-size {tp} --pipeline-parallel-size {pp} "
                       f"--max-model-len {context} --gpu-memory-utilization {c['gpu_memory_utilization']}")
            if pp > 1:
                command += f" --distributed-executor-backend ray  # on a Ray cluster of {pp} nodes x {tp} GPUs"
            return ScaleOut(gpu.name, gpus, pp, tp, pp, fmt_name, need, reserved, command)
    return None
