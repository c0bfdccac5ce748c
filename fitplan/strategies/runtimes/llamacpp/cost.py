"""llama.cpp (through llama-cpp-python): where its bytes go, per device.

Placement follows llama.cpp (src/llama-model.cpp load_tensors): with n_gpu_layers = g the last g
blocks go to the GPUs, split evenly; token_embd always stays on the CPU (its get_rows runs there);
the output head joins the GPUs only when every block does, and a tied embedding is then loaded a
second time as the output. The model file is memory-mapped: CPU-resident weights are page cache
counted in the process's RSS, offloaded ones are copied to the GPU and unmapped.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import replace
from typing import Any

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, ModelSource, RunTiming, Setup, WeightBytes, gpu_name
from fitplan.strategies.kv_cache import layer_kv_bytes

RUNTIME = "llama.cpp"
_F32 = 4
# bytes per element of the type ggml converts kq to for mul_mat with V (type_traits_cpu vec_dot_type)
_VEC_DOT_BYTES = {"f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 1.0625, "q4_0": 1.0625}


def constants() -> dict[str, int]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["llama_cpp"]


def layer_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    if setup.layer_map:
        return setup.layer_map[layer]
    first_gpu_layer = spec.layers - setup.gpu_layers
    if layer < first_gpu_layer:
        return "cpu"
    return gpu_name((layer - first_gpu_layer) * setup.gpus // setup.gpu_layers)


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
    """The output head joins the GPUs only when every block is there (n_gpu_layers > n_layer);
    an explicit map runs with every layer offloaded and tensor overrides, so the head is on a GPU."""
    if setup.layer_map:
        return gpu_name(setup.gpus - 1) if setup.gpus else "cpu"
    return gpu_name(setup.gpus - 1) if setup.gpus and setup.gpu_layers == spec.layers else "cpu"


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
            spec, layer, n_ctx, setup.kv_cache, RUNTIME, swa_extra=c["n_ubatch"], pad=c["kv_pad"])

    # The CPU touches attention pages for the cells in use (padded to 256) and the last prompt chunk;
    # a GPU buffer is allocated whole, for the full context.
    used = n_ctx if prompt_tokens is None else min(n_ctx, -(-prompt_tokens // c["kv_pad"]) * c["kv_pad"])
    ubatch = min(c["n_ubatch"], n_ctx if prompt_tokens is None else prompt_tokens)
    for name, device in devices.items():
        if name == "cpu":
            has_layers = any(layer_device(spec, setup, i) == "cpu" for i in range(spec.layers))
            device.activations = _cpu_compute_bytes(spec, setup, used, ubatch) if has_layers else ubatch * spec.hidden_size * _F32
            if experts_on_cpu(spec, setup):  # the experts' gate/up/down outputs for a chunk, on the CPU
                device.activations += ubatch * spec.experts_per_token * _expert_width(spec) * 3 * _F32
            device.overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"]
        else:
            device.activations = _gpu_compute_bytes(spec, setup, n_ctx, min(c["n_ubatch"], n_ctx), holds_output=name == head)
            device.overhead = c["gpu_context_bytes"]
    return devices


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
    """A GPU compute buffer is allocated whole: the largest of the attention, MLP and logits phases
    (with flash attention only the f16 mask of the attention phase remains)."""
    logits = spec.vocab_size * ubatch * _F32 if holds_output else 0
    attention = n_ctx * ubatch * 2 if setup.flash_attn else _attention_scores_bytes(spec, n_ctx, ubatch)
    return max(attention, logits, _mlp_phase_bytes(spec, ubatch))


# --- how to execute --------------------------------------------------------------------------

# ggml type ids for llama-cpp-python's type_k / type_v (ggml.h enum ggml_type)
_GGML_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
FILLER = "The quick brown fox jumps over the lazy dog while the patient cat watches from the wall. "


class LlamaCppExecutor:
    """Loads a GGUF file with llama-cpp-python and times greedy generation."""

    name = RUNTIME

    def missing(self) -> str | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed: pip install 'fitplan[llamacpp]'"
        return None

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> "LlamaCppModel":
        if source.kind != "gguf":
            raise BadValueError(f"llama.cpp runs GGUF files; {source.path} is a {source.kind}")
        import llama_cpp

        llm = llama_cpp.Llama(**llama_kwargs(source.path, setup, layers=layers))
        return LlamaCppModel(llm)

    def session(self, plan: Any) -> Any:
        """A generating session for `fitplan run` / `fitplan.load` (strategies/runtimes/llamacpp/session.py)."""
        from fitplan.advisor.plans.plan_file import local_weights
        from fitplan.strategies.runtimes.llamacpp.session import LlamaCppSession

        path = local_weights(plan)
        if plan.model.source != "gguf":
            raise BadValueError(f"llama.cpp runs GGUF files; the plan's model is a {plan.model.source} ({path})")
        return LlamaCppSession(path, plan.plan, layers=plan.model.layers)


def llama_kwargs(path: str, setup: Any, *, layers: int) -> dict[str, Any]:
    """llama_cpp.Llama's arguments for a plan: `fitplan run`, verify and the exported code share them."""
    kwargs = {
        "model_path": path, "n_ctx": setup.context * setup.batch, "n_batch": constants()["n_ubatch"],
        # -1 offloads the output head too, as a plan with every block on the GPU assumes
        "n_gpu_layers": -1 if setup.gpus and setup.gpu_layers >= layers else setup.gpu_layers if setup.gpus else 0,
        "n_threads": setup.threads, "n_threads_batch": setup.threads, "type_k": _GGML_KV_TYPES[setup.kv_cache],
        "type_v": _GGML_KV_TYPES[setup.kv_cache], "flash_attn": setup.flash_attn, "seed": 0, "verbose": False,
        "use_mmap": getattr(setup, "use_mmap", True), "use_mlock": getattr(setup, "use_mlock", False),
    }
    if setup.gpus > 1 and setup.gpu_layers:  # blocks per GPU, in the proportions layer_device assigns them
        kwargs["tensor_split"] = [float(n) for n in gpu_block_counts(setup)]
    return kwargs


def gpu_block_counts(setup: Any) -> list[int]:
    """How many of the GPU blocks each GPU holds (contiguous runs, as layer_device places them)."""
    counts = [0] * setup.gpus
    for i in range(setup.gpu_layers):
        counts[i * setup.gpus // setup.gpu_layers] += 1
    return counts


class LlamaCppModel:
    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def prompt(self, n_tokens: int) -> list[int]:
        """A deterministic prompt of exactly n_tokens (after the BOS the model adds, if any)."""
        text = FILLER * (n_tokens // 8 + 8)
        return self.llm.tokenize(text.encode("utf-8"))[:n_tokens]

    def _greedy(self) -> int:
        """argmax of the last position's logits: greedy, with no sampler state built per token."""
        import llama_cpp
        import numpy

        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return int(numpy.ctypeslib.as_array(logits, shape=(self.llm.n_vocab(),)).argmax())

    def run(self, prompt_tokens: int, gen_tokens: int) -> RunTiming:
        llm, tokens = self.llm, self.prompt(prompt_tokens)
        llm.reset()  # no prompt-cache reuse between repeats
        start = time.perf_counter()
        llm.eval(tokens)
        prefilled = time.perf_counter()
        token = self._greedy()
        first = time.perf_counter()
        generated = [token]
        for _ in range(gen_tokens - 1):
            llm.eval([token])
            token = self._greedy()
            generated.append(token)
        end = time.perf_counter()
        return RunTiming(len(tokens), len(generated), prefilled - start, first - start, end - first, tuple(generated[:16]))

    def close(self) -> None:
        self.llm.close()
