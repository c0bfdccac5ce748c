"""llama.cpp (through llama-cpp-python): where its bytes go, per device.

Placement follows llama.cpp (src/llama-model.cpp load_tensors): the output head is the last of
n_layer + 1 layer slots and -ngl N offloads the last N slots, split over the GPUs by tensor_split
(_slot_device); token_embd always stays on the CPU (its get_rows runs there); a tied embedding whose
head is offloaded is loaded a second time as the output. The model file is memory-mapped: CPU-resident weights are page cache
counted in the process's RSS, offloaded ones are copied to the GPU and unmapped.
"""
from __future__ import annotations

import struct
import sys
from bisect import bisect_right
from dataclasses import replace
from functools import cache
from typing import TYPE_CHECKING, Any

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, WeightBytes, gpu_name
from fitplan.strategies.kv_cache import layer_kv_bytes
from fitplan.strategies.runtimes.contract import EXACT, EXPERTS_CPU, KV_FALLBACK, SPLIT, UNEVEN, ModuleCostModel

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.strategies.quantization import WeightFormat

RUNTIME = "llama.cpp"
QUANTIZED_KV = ("q8_0", "q4_0")  # llama.cpp refuses a quantized V cache without flash attention
_F32 = 4
_RESIDUAL_TENSORS = 4  # f32 rows of the residual stream alive through attention (fitted to the logs, see below)
PIPELINE_COPIES = 4  # GGML_SCHED_MAX_COPIES (ggml-backend.h), what llama.cpp's pipeline parallelism uses
# bytes per element of the type ggml converts kq to for mul_mat with V (type_traits_cpu vec_dot_type)
_VEC_DOT_BYTES = {"f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 1.0625, "q4_0": 1.0625}


def constants() -> dict[str, Any]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["llama_cpp"]


def default_kv_cache(fmt: WeightFormat, hw: HardwareSpec, gpu_layers: int) -> str:
    return "f16"


def flash_attn(wanted: bool | None, kv_cache: str, hw: HardwareSpec, all_on_gpu: bool) -> bool:
    """On unless the user turned it off; a quantized V cache needs it."""
    if kv_cache in QUANTIZED_KV:
        if wanted is False:
            raise BadValueError(f"a {kv_cache} KV cache needs flash attention in llama.cpp; drop --no-flash-attn")
        return True
    return True if wanted is None else wanted


def flash_attn_unmet(hw: HardwareSpec) -> str:
    return ""  # the CPU and every GPU backend have it


def refuse(setup: Setup) -> str:
    if setup.kv_cache in QUANTIZED_KV and not setup.flash_attn:
        return f"a {setup.kv_cache} KV cache needs flash_attn in llama.cpp"
    return ""


def layer_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    if setup.layer_map:
        return setup.layer_map[layer]
    return _slot_device(setup.gpus, setup.gpu_layers, spec.layers, layer, setup.tensor_split)


@cache
def _slot_device(gpus: int, gpu_layers: int, n_layer: int, slot: int, split: tuple[float, ...] = ()) -> str:
    """llama.cpp's layer split (src/llama-model.cpp load_tensors): n_layer + 1 slots, the last one the
    output head; -ngl N puts the last N slots on the GPUs, and slot i of them goes to the first GPU whose
    cumulative tensor_split share exceeds (i - i_gpu_start) / N, in float32 as there. fitplan's
    gpu_layers counts blocks, so -ngl is gpu_layers + 1 (the head rides with the blocks), and the
    session always passes tensor_split (equal where the plan has none), so free memory does not move it."""
    if not gpus or not gpu_layers:
        return "cpu"
    ngl = min(gpu_layers + 1, n_layer + 1)
    start = n_layer + 1 - ngl
    if slot < start:
        return "cpu"
    x = _f32(_f32(slot - start) / _f32(ngl))
    return gpu_name(min(bisect_right(split_points(split or (1.0,) * gpus), x), gpus - 1))


def split_points(split: tuple[float, ...]) -> list[float]:
    """The cumulative, normalized shares llama.cpp compares each slot with, in float32 as there."""
    total, points = _f32(0.0), []
    for share in split:
        total = _f32(total + _f32(share))
        points.append(total)
    return [_f32(p / total) for p in points]


def layer_counts(n_layer: int, gpu_layers: int, split: tuple[float, ...]) -> list[int]:
    """How many of the offloaded slots (blocks + the head) each GPU gets under `split`."""
    devices = [_slot_device(len(split), gpu_layers, n_layer, slot, split) for slot in range(n_layer + 1)]
    return [devices.count(gpu_name(i)) for i in range(len(split))]


def _f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def place(spec: ModelSpec, setup: Setup, weights: WeightBytes) -> dict[str, list[tuple[TensorInfo, int]]]:
    """Every weight tensor on its device; a tied embedding on the GPUs appears a second time, as the output."""
    devices: dict[str, list[tuple[TensorInfo, int]]] = {"cpu": []}
    for i in range(setup.gpus if setup.gpu_layers else 0):
        devices[gpu_name(i)] = []
    head = head_device(spec, setup)
    blocks = [layer_device(spec, setup, i) for i in range(spec.layers)]  # once per layer, not per tensor
    experts = [expert_device(spec, setup, i) for i in range(spec.layers)] if spec.is_moe else blocks
    for tensor, nbytes in weights:
        if tensor.experts:
            devices[experts[tensor.layer or 0]].append((tensor, nbytes))
        elif tensor.role == "block":
            devices[blocks[tensor.layer or 0]].append((tensor, nbytes))
        elif tensor.role == "lookup":  # LLM_TENSOR_LAYER_INPUT, gathered on the CPU like token_embd
            devices["cpu"].append((tensor, nbytes))
        elif tensor.role == "embed":
            devices["cpu"].append((tensor, nbytes))
            if spec.tied_embeddings and head != "cpu":
                devices[head].append((replace(tensor, role="output"), nbytes))
        else:
            devices[head].append((tensor, nbytes))
    return devices


def expert_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    """Routed experts: where the explicit map puts them, on the CPU for the first --n-cpu-moe
    blocks, else with their block."""
    if setup.expert_map:
        return setup.expert_map[layer]
    return "cpu" if layer < setup.cpu_moe_layers else layer_device(spec, setup, layer)


def head_device(spec: ModelSpec, setup: Setup) -> str:
    """The output head is llama.cpp's last layer slot: on the last GPU whenever any block is offloaded
    (fitplan passes -ngl blocks + 1); an explicit map runs with every layer offloaded and tensor
    overrides, so the head is on a GPU."""
    if setup.layer_map:
        return gpu_name(setup.gpus - 1) if setup.gpus else "cpu"
    return _slot_device(setup.gpus, setup.gpu_layers, spec.layers, spec.layers, setup.tensor_split)


def experts_on_cpu(spec: ModelSpec, setup: Setup) -> bool:
    return any(expert_device(spec, setup, i) == "cpu" and layer_device(spec, setup, i) != "cpu"
               for i in range(spec.layers)) if spec.is_moe else False


def memory(
    spec: ModelSpec, setup: Setup, weights: WeightBytes, prompt_tokens: int | None = None,
) -> dict[str, DeviceMemory]:
    """Bytes per device; `prompt_tokens` None is the worst case, a prompt that fills the context."""
    c = constants()
    placed = place(spec, setup, weights)
    devices = {name: DeviceMemory(weights=sum(b for _, b in items)) for name, items in placed.items()}
    head = head_device(spec, setup)

    n_ctx = setup.context * setup.batch  # one unified cache holds every sequence's tokens
    for layer in range(spec.layers):
        devices[layer_device(spec, setup, layer)].kv_cache += layer_kv_bytes(
            spec, layer, n_ctx, setup.kv_cache, RUNTIME, swa_extra=c["n_ubatch"], pad=c["kv_pad"],
            windowed=not setup.swa_full)

    # The CPU touches attention pages for the cells in use (padded to 256) and the last prompt chunk;
    # a GPU buffer is allocated whole, for the full context.
    used = n_ctx if prompt_tokens is None else min(n_ctx, -(-prompt_tokens // c["kv_pad"]) * c["kv_pad"])
    ubatch = min(c["n_ubatch"], n_ctx if prompt_tokens is None else prompt_tokens)
    for name, device in devices.items():
        if name == "cpu":
            has_layers = any(layer_device(spec, setup, i) == "cpu" for i in range(spec.layers))
            device.activations = (_cpu_compute_bytes(spec, setup, used, ubatch) if has_layers
                                  else _host_compute_bytes(spec, setup, n_ctx, min(c["n_ubatch"], n_ctx)))
            if experts_on_cpu(spec, setup):  # the experts' gate/up/down outputs for a chunk, on the CPU
                device.activations += ubatch * spec.experts_per_token * _expert_width(spec) * 3 * _F32
            device.overhead = (c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"]
                               + c["vocab_entry_bytes"] * spec.vocab_size)
            if setup.use_mmap:
                device.weights += repacked_bytes(placed["cpu"], c["cpu_repack_types"])
        else:
            device.activations = _gpu_compute_bytes(spec, setup, n_ctx, min(c["n_ubatch"], n_ctx), holds_output=name == head)
            device.overhead = c["gpu_context_bytes"]
    return devices


def repacked_bytes(items: list[tuple[TensorInfo, int]], types: list[str]) -> int:
    """The CPU_REPACK copy of the CPU's matrices of repackable types (token_embd is gathered, not
    multiplied, so it stays as mapped); their mapped pages stay resident beside it."""
    return sum(nbytes for t, nbytes in items
               if t.role in ("block", "output") and len(t.shape) == 2 and (t.dtype or "").upper() in types
               and t.shape[1] % 8 == 0)


def _expert_width(spec: ModelSpec) -> int:
    """The intermediate width of one routed expert (from its stacked ffn_down tensor)."""
    for tensor in spec.tensors:
        if tensor.experts and "ffn_down" in tensor.name:
            return tensor.shape[0]
    return spec.intermediate_size


def _attention_scores_bytes(spec: ModelSpec, n_ctx: int, ubatch: int) -> int:
    """KQ scores (f32, one row per head and token) plus the f32 KQ mask, at a full context.

    llm_graph_context::build_attn_mha without flash attention (llama-cpp-python's default):
    kq = mul_mat(k, q) is [n_kv, n_tokens, n_head] f32, soft_max runs in place, the mask is
    [n_kv, n_tokens] f32. Checked against llama.cpp's own log: n_ctx 8192, n_ubatch 512, 9 heads
    gives 160 MiB of a reported 166.38 MiB compute buffer (SmolLM2-135M).
    """
    return n_ctx * ubatch * (spec.heads + 1) * _F32


def _cpu_compute_bytes(spec: ModelSpec, setup: Setup, n_ctx: int, ubatch: int) -> int:
    """Pages the CPU backend touches for a full-context prompt chunk: the larger of its phases.

    Without flash attention: the KQ scores, plus ggml's CPU work buffer where mul_mat(v, kq)
    converts kq to the V cache's dot-product type (f16 for an f16 cache: ggml-cpu.c
    ggml_graph_plan). With it: only the f32 mask (fused kernel, no scores). The MLP phase of the
    chunk (gate, up, activation and the residual stream) can be larger at short contexts.
    The logits reservation (n_vocab x n_ubatch) is never touched: llama-cpp-python asks for one row.
    Measured with flash attention (SmolLM2-135M, full context): 180.4 MiB at 512, 217.8 at 2048.
    """
    if setup.flash_attn:
        attention = n_ctx * ubatch * _F32
    else:
        work = int(n_ctx * ubatch * spec.heads * _VEC_DOT_BYTES[setup.kv_cache])
        attention = _attention_scores_bytes(spec, n_ctx, ubatch) + work
    return max(attention, _mlp_phase_bytes(spec, ubatch))


def _mlp_phase_bytes(spec: ModelSpec, ubatch: int) -> int:
    return ubatch * (3 * spec.intermediate_size + 4 * spec.hidden_size) * _F32


def _gpu_compute_bytes(spec: ModelSpec, setup: Setup, n_ctx: int, ubatch: int, *, holds_output: bool) -> int:
    """A GPU compute buffer is allocated whole: the largest of the attention, MLP and logits phases,
    each with the residual-width f32 tensors alive beside it. Without flash attention the attention
    phase holds the f32 KQ scores and the f32 mask; with it only the f16 mask. Checked against
    published llama.cpp logs (bench/published.py): Llama-3-8B at n_ctx 8192 logs 560.00 MiB
    (512 scores + 16 mask + 4 x 8 residual), at n_ctx 512 258.50 MiB (250.5 logits + 8).
    With pipeline parallelism (several GPUs holding every layer) the scheduler keeps
    PIPELINE_COPIES copies of each split's inputs: the mask and the incoming activations."""
    row = ubatch * spec.hidden_size * _F32
    mask = _mask_bytes(setup, n_ctx, ubatch)
    scores = 0 if setup.flash_attn else n_ctx * ubatch * spec.heads * _F32
    logits = spec.vocab_size * ubatch * _F32 + row if holds_output else 0
    attention = scores + mask + _RESIDUAL_TENSORS * row
    biggest = max(attention, logits, _mlp_phase_bytes(spec, ubatch))
    if _pipelined(spec, setup):
        biggest += (PIPELINE_COPIES - 1) * mask + PIPELINE_COPIES * row
    return biggest


def _mask_bytes(setup: Setup, n_ctx: int, ubatch: int) -> int:
    """The KQ mask of a chunk: f32, or f16 where flash attention reads it."""
    return n_ctx * ubatch * (2 if setup.flash_attn else _F32)


def _pipelined(spec: ModelSpec, setup: Setup) -> bool:
    """llama.cpp pipelines prompt chunks over GPUs that hold every layer (split mode layer)."""
    return setup.gpus > 1 and setup.gpu_layers >= spec.layers and not setup.layer_map


def _host_compute_bytes(spec: ModelSpec, setup: Setup, n_ctx: int, ubatch: int) -> int:
    """The CPU side of a plan with every block offloaded: the embedding rows it gathers and the masks it
    fills (two where sliding-window layers have their own), the masks once per pipeline copy. Published
    logs: Llama-3-8B at n_ctx 8192 24.01 MiB on one GPU (8 + 16), 72.02 on 2-8 (8 + 4 x 16); Llama-3-70B
    on 2 GPUs 80.02 (16 + 4 x 16); Gemma-2-9B at 2048 on 2 GPUs 39.02 (7 + 4 x 2 x 4)."""
    masks = 2 if any(c.windowed for c in spec.caches) else 1  # sliding and chunked (Llama 4) layers alike
    mask = _mask_bytes(setup, n_ctx, ubatch) * masks
    copies = PIPELINE_COPIES if _pipelined(spec, setup) else 1
    return ubatch * spec.hidden_size * _F32 + copies * mask + output_bytes(spec, setup)


def output_bytes(spec: ModelSpec, setup: Setup) -> int:
    """The host output buffer: one f32 row of logits per sequence (0.49 MiB for a 128256-token vocabulary)."""
    return spec.vocab_size * _F32 * setup.batch


# this runtime's CostModel (strategies/runtimes/contract.py): the functions above
# (the KV cache is allocated whole at load; a q8_0 cache, measured lossless in kv_dtypes.toml, may keep
# every layer of an overflowing plan on the GPU)
COST_MODEL = ModuleCostModel(sys.modules[__name__], aliases=("llamacpp", "llama-cpp", "llama_cpp"),
                             features=frozenset({SPLIT, EXPERTS_CPU, EXACT, KV_FALLBACK, UNEVEN}), preallocates_kv=True,
                             smaller_kv_cache="q8_0")
