"""llama.cpp (through llama-cpp-python): where its bytes go, per device.

Placement follows llama.cpp (src/llama-model.cpp load_tensors): with n_gpu_layers = g the last g
blocks go to the GPUs, split evenly; token_embd always stays on the CPU (its get_rows runs there);
the output head joins the GPUs only when every block does, and a tied embedding is then loaded a
second time as the output. The model file is memory-mapped: CPU-resident weights are page cache
counted in the process's RSS, offloaded ones are copied to the GPU and unmapped.
"""
from __future__ import annotations

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, gpu_name
from fitplan.strategies.kv_cache import kv_bytes_per_element, layer_kv_bytes

RUNTIME = "llama.cpp"
_F32 = 4
# bytes per element of the type ggml converts kq to for mul_mat with V (type_traits_cpu vec_dot_type)
_VEC_DOT_BYTES = {"f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 1.0625, "q4_0": 1.0625}


def constants() -> dict[str, int]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["llama_cpp"]


def layer_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    first_gpu_layer = spec.layers - setup.gpu_layers
    if layer < first_gpu_layer:
        return "cpu"
    return gpu_name((layer - first_gpu_layer) * setup.gpus // setup.gpu_layers)


def memory(spec: ModelSpec, setup: Setup, weights: list[tuple[TensorInfo, int]]) -> dict[str, DeviceMemory]:
    c = constants()
    devices: dict[str, DeviceMemory] = {"cpu": DeviceMemory()}
    for i in range(setup.gpus if setup.gpu_layers else 0):
        devices[gpu_name(i)] = DeviceMemory()
    all_on_gpu = setup.gpu_layers == spec.layers and setup.gpus > 0
    head_device = gpu_name(setup.gpus - 1) if all_on_gpu else "cpu"

    for tensor, nbytes in weights:
        if tensor.role == "block":
            devices[layer_device(spec, setup, tensor.layer or 0)].weights += nbytes
        elif tensor.role == "embed":
            devices["cpu"].weights += nbytes
            if spec.tied_embeddings and all_on_gpu:
                devices[head_device].weights += nbytes  # the tied output is a second copy on the GPU
        else:
            devices[head_device].weights += nbytes

    n_ctx = setup.context * setup.batch  # one unified cache holds every sequence's tokens
    for layer in range(spec.layers):
        devices[layer_device(spec, setup, layer)].kv_cache += layer_kv_bytes(
            spec, layer, n_ctx, setup.kv_cache, RUNTIME, swa_extra=c["n_ubatch"], pad=c["kv_pad"])

    ubatch = min(c["n_ubatch"], n_ctx)
    for name, device in devices.items():
        if name == "cpu":
            has_layers = setup.gpu_layers < spec.layers
            device.activations = _cpu_compute_bytes(spec, setup, n_ctx, ubatch) if has_layers else ubatch * spec.hidden_size * _F32
            device.overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"]
        else:
            device.activations = _gpu_compute_bytes(spec, n_ctx, ubatch, holds_output=name == head_device)
            device.overhead = c["gpu_context_bytes"]
    return devices


def _attention_scores_bytes(spec: ModelSpec, n_ctx: int, ubatch: int) -> int:
    """KQ scores (f32, one row per head and token) plus the f32 KQ mask, at a full context.

    llm_graph_context::build_attn_mha without flash attention (llama-cpp-python's default):
    kq = mul_mat(k, q) is [n_kv, n_tokens, n_head] f32, soft_max runs in place, the mask is
    [n_kv, n_tokens] f32. Checked against llama.cpp's own log: n_ctx 8192, n_ubatch 512, 9 heads
    gives 160 MiB of a reported 166.38 MiB compute buffer (SmolLM2-135M).
    """
    return n_ctx * ubatch * (spec.heads + 1) * _F32


def _cpu_compute_bytes(spec: ModelSpec, setup: Setup, n_ctx: int, ubatch: int) -> int:
    """Pages the CPU backend touches for a full-context prompt chunk.

    The attention scores, plus ggml's CPU work buffer where mul_mat(v, kq) converts kq to the V
    cache's dot-product type (f16 for an f16 cache: ggml-cpu.c ggml_graph_plan). The logits
    reservation (n_vocab x n_ubatch) is never touched: llama-cpp-python asks for one output row.
    """
    work = int(n_ctx * ubatch * spec.heads * _VEC_DOT_BYTES[setup.kv_cache])
    return _attention_scores_bytes(spec, n_ctx, ubatch) + work


def _gpu_compute_bytes(spec: ModelSpec, n_ctx: int, ubatch: int, *, holds_output: bool) -> int:
    """A GPU compute buffer is allocated whole: the larger of the attention and logits phases."""
    logits = spec.vocab_size * ubatch * _F32 if holds_output else 0
    return max(_attention_scores_bytes(spec, n_ctx, ubatch), logits)
