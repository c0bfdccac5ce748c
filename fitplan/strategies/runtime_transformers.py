"""transformers (+accelerate): where its bytes go, per device.

Placement follows accelerate's device_map="auto" (utils/modeling.py infer_auto_device_map): modules
fill GPU 0, then the next GPU, then the CPU, in order: embeddings, blocks 0..n-1, final norm and
lm_head; a tied lm_head shares the embedding's storage. The KV cache (DynamicCache) lives beside
each block, in the compute dtype; sliding-window layers keep `window` tokens.
"""
from __future__ import annotations

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, gpu_name
from fitplan.strategies.kv_cache import kv_bytes_per_element, layer_kv_bytes

RUNTIME = "transformers"


def constants() -> dict[str, int]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["transformers"]


def layer_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    if layer >= setup.gpu_layers:
        return "cpu"
    return gpu_name(layer * setup.gpus // setup.gpu_layers)


def memory(spec: ModelSpec, setup: Setup, weights: list[tuple[TensorInfo, int]]) -> dict[str, DeviceMemory]:
    c = constants()
    used_gpus = setup.gpus if setup.gpu_layers else 0
    devices: dict[str, DeviceMemory] = {"cpu": DeviceMemory()}
    for i in range(used_gpus):
        devices[gpu_name(i)] = DeviceMemory()
    embed_device = gpu_name(0) if used_gpus else "cpu"
    head_device = gpu_name(used_gpus - 1) if used_gpus and setup.gpu_layers == spec.layers else "cpu"

    for tensor, nbytes in weights:
        if tensor.role == "block":
            devices[layer_device(spec, setup, tensor.layer or 0)].weights += nbytes
        elif tensor.role == "embed":
            devices[embed_device].weights += nbytes
        else:
            devices[head_device].weights += nbytes

    for layer in range(spec.layers):
        devices[layer_device(spec, setup, layer)].kv_cache += layer_kv_bytes(
            spec, layer, setup.context, setup.kv_cache, RUNTIME, setup.batch)

    width = kv_bytes_per_element(setup.kv_cache, RUNTIME)  # the compute dtype's width
    for name, device in devices.items():
        holds_layers = any(layer_device(spec, setup, i) == name for i in range(spec.layers))
        if holds_layers:
            device.activations = _forward_bytes(spec, setup, width)
        if name == head_device:
            device.activations += setup.batch * spec.vocab_size * 4  # fp32 logits of the last position
        device.overhead = c["cpu_process_baseline_bytes"] if name == "cpu" else c["gpu_context_bytes"]
    return devices


def _forward_bytes(spec: ModelSpec, setup: Setup, width: float) -> int:
    """Live tensors of one block's forward over a whole-context prompt (estimated, SDPA attention).

    Residual stream, normed input, attention output and queries (4 x hidden per token) plus the MLP's
    gate, up and activation (3 x intermediate per token); SDPA's fused kernels keep the scores out
    of memory. Checked against measured runs by `fitplan verify` (issue 3).
    """
    per_token = 4 * spec.hidden_size + 3 * spec.intermediate_size
    return int(setup.batch * setup.context * per_token * width)
