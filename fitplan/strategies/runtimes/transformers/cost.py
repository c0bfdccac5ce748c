"""transformers (+accelerate): where its bytes go, per device.

Placement follows accelerate's device_map="auto" (utils/modeling.py infer_auto_device_map): modules
fill GPU 0, then the next GPU, then the CPU, in order: embeddings, blocks 0..n-1, final norm and
lm_head; a tied lm_head shares the embedding's storage. The KV cache (DynamicCache) lives beside
each block, in the compute dtype; sliding-window layers keep `window` tokens.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, WeightBytes, gpu_name
from fitplan.strategies.attention import flash_attention_2_unmet
from fitplan.strategies.kv_cache import kv_bytes_per_element, layer_kv_bytes
from fitplan.strategies.runtimes.contract import DISK, PRUNE, SPLIT, ModuleCostModel

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.strategies.quantization import WeightFormat

RUNTIME = "transformers"
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # plan format -> torch dtype name


def constants() -> dict[str, int]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["transformers"]


def default_kv_cache(fmt: WeightFormat, hw: HardwareSpec, gpu_layers: int) -> str:
    """The compute dtype: fp32 for fp32 and dynamic int8 weights, else bf16 where every GPU holding blocks has it (cc >= 8.0)."""
    if fmt.name == "fp32" or fmt.family == "dynint8":  # dynamic int8 computes in fp32 between its int8 matmuls
        return "f32"
    bf16 = gpu_layers == 0 or all(_bf16_gpu(g.compute_capability) for g in hw.gpus)
    return "bf16" if bf16 else "f16"


def _bf16_gpu(capability: str | None) -> bool:
    try:
        return capability is not None and float(capability) >= 8.0
    except ValueError:
        return False


def flash_attn(wanted: bool | None, kv_cache: str, hw: HardwareSpec, all_on_gpu: bool) -> bool:
    """FlashAttention-2 only when asked for, with every block on GPUs that meet its requirement (else sdpa)."""
    return bool(wanted) and all_on_gpu and flash_attention_2_unmet(hw) is None


def flash_attn_unmet(hw: HardwareSpec) -> str:
    why = flash_attention_2_unmet(hw)
    return f"--flash-attn on transformers means flash_attention_2, which {why}" if why else ""


def refuse(setup: Setup) -> str:
    return ""


def layer_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    """GPUs first, then the CPU; with disk offload the last `disk_layers` blocks stay on disk."""
    if layer >= spec.layers - setup.disk_layers:
        return "disk"
    if layer >= setup.gpu_layers:
        return "cpu"
    return gpu_name(layer * setup.gpus // setup.gpu_layers)


def place(spec: ModelSpec, setup: Setup, weights: WeightBytes) -> dict[str, list[tuple[TensorInfo, int]]]:
    """Every weight tensor on its device, in accelerate's fill order."""
    used_gpus = setup.gpus if setup.gpu_layers else 0
    devices: dict[str, list[tuple[TensorInfo, int]]] = {"cpu": []}
    for i in range(used_gpus):
        devices[gpu_name(i)] = []
    if setup.disk_layers:
        devices["disk"] = []
    embed_device = gpu_name(0) if used_gpus else "cpu"
    for tensor, nbytes in weights:
        if tensor.role == "block":
            devices[layer_device(spec, setup, tensor.layer or 0)].append((tensor, nbytes))
        else:
            devices[embed_device if tensor.role in ("embed", "lookup") else head_device(spec, setup)].append((tensor, nbytes))
    return devices


def compute_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    """Where a block runs: its own device, or the CPU for a block kept on disk (accelerate's offload
    hooks read it into memory for each forward)."""
    device = layer_device(spec, setup, layer)
    return "cpu" if device == "disk" else device


def head_device(spec: ModelSpec, setup: Setup) -> str:
    """Final norm and lm_head run where the last block runs; a tied lm_head shares the embedding's storage."""
    return compute_device(spec, setup, spec.layers - 1)


def memory(
    spec: ModelSpec, setup: Setup, weights: WeightBytes, prompt_tokens: int | None = None,
) -> dict[str, DeviceMemory]:
    """Bytes per device; `prompt_tokens` None is the worst case, a prompt that fills the context."""
    c = constants()
    prompt = setup.context if prompt_tokens is None else min(prompt_tokens, setup.context)
    placed = place(spec, setup, weights)
    devices = {name: DeviceMemory(weights=sum(b for _, b in items)) for name, items in placed.items()}

    running = [compute_device(spec, setup, layer) for layer in range(spec.layers)]
    for layer, device in enumerate(running):  # DynamicCache at its largest, where each block runs
        devices[device].kv_cache += layer_kv_bytes(spec, layer, setup.context, setup.kv_cache, RUNTIME, setup.batch)

    width = kv_bytes_per_element(setup.kv_cache, RUNTIME)  # the compute dtype's width
    for name, held in devices.items():
        if name == "disk":
            continue
        if name in running:
            held.activations = _forward_bytes(spec, setup.batch, prompt, width)
        if name == head_device(spec, setup):
            held.activations += setup.batch * spec.vocab_size * 4  # fp32 logits of the last position
        held.overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"] if name == "cpu" \
            else c["gpu_context_bytes"]
    if "disk" in placed:  # read into the CPU one block at a time (accelerate's disk offload hooks)
        devices["cpu"].activations += _largest_block(placed["disk"])
    devices["cpu"].load_transient = _conversion_transient(spec, setup, placed["cpu"])
    return devices


def _largest_block(weights: WeightBytes) -> int:
    per_block: dict[int, int] = {}
    for tensor, nbytes in weights:
        per_block[tensor.layer or 0] = per_block.get(tensor.layer or 0, 0) + nbytes
    return max(per_block.values(), default=0)


def _conversion_transient(spec: ModelSpec, setup: Setup, on_cpu: WeightBytes) -> int:
    """Stored bytes mapped while CPU-resident weights are converted to another dtype.

    from_pretrained memory-maps the safetensors files: weights loaded in their stored dtype are
    the mapped pages themselves (no copy), but a conversion (fp32 file -> bf16 plan) touches every
    stored page while it builds the converted copy, and those pages count in RSS until unmapped.
    Measured: SmolLM2-135M fp32 file loaded as bf16 peaks ~513 MiB above a bf16-file load.
    A GGUF is converted once into an fp32 safetensors folder, so fp32 is its stored dtype here.
    int8-dynamic loads fp32 and then quantizes: from a 16-bit file that is an fp32 copy beside the mapped
    pages (estimated; measured only from an fp32 file, where the copy is the mapped file: docs/accuracy.md).
    """
    stored = spec.native_dtype if spec.source != "gguf" else "fp32"
    if stored == setup.weights:
        return 0
    width = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}.get(stored, 2)
    mapped = sum(t.numel * width for t, _ in on_cpu)
    from fitplan.strategies.quantization import is_dynamic_int8

    if is_dynamic_int8(setup.weights, RUNTIME) and stored != "fp32":  # quantized from a whole fp32 copy, built from the
        return mapped + sum(t.numel * 4 for t, _ in on_cpu)  # mapped pages (an fp32 file is that copy itself)
    return mapped


def _forward_bytes(spec: ModelSpec, batch: int, prompt: int, width: float) -> int:
    """Live tensors of one block's forward over a whole-context prompt (estimated, SDPA attention).

    Residual stream, normed input, attention output and queries (4 x hidden per token) plus the MLP's
    gate, up and activation (3 x intermediate per token); SDPA's fused kernels keep the scores out
    of memory. Checked against measured runs by `fitplan verify` (issue 3).
    """
    per_token = 4 * spec.hidden_size + 3 * spec.intermediate_size
    return int(batch * prompt * per_token * width)


# this runtime's CostModel (strategies/runtimes/contract.py): the functions above
COST_MODEL = ModuleCostModel(sys.modules[__name__], aliases=("hf",), features=frozenset({SPLIT, DISK, PRUNE}),
                             preallocates_kv=False)
