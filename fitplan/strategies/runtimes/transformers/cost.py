"""transformers (+accelerate): where its bytes go, per device.

Placement follows accelerate's device_map="auto" (utils/modeling.py infer_auto_device_map): modules
fill GPU 0, then the next GPU, then the CPU, in order: embeddings, blocks 0..n-1, final norm and
lm_head; a tied lm_head shares the embedding's storage. The KV cache (DynamicCache) lives beside
each block, in the compute dtype; sliding-window layers keep `window` tokens.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from fitplan.cachedir import cache_dir
from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, ModelSource, RunTiming, Setup, WeightBytes, gpu_name
from fitplan.strategies.kv_cache import kv_bytes_per_element, layer_kv_bytes

RUNTIME = "transformers"


def constants() -> dict[str, int]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["transformers"]


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
            devices[embed_device if tensor.role == "embed" else head_device(spec, setup)].append((tensor, nbytes))
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
    for name, device in devices.items():
        if name == "disk":
            continue
        if name in running:
            device.activations = _forward_bytes(spec, setup.batch, prompt, width)
        if name == head_device(spec, setup):
            device.activations += setup.batch * spec.vocab_size * 4  # fp32 logits of the last position
        device.overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"] if name == "cpu" \
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
    """
    stored = spec.native_dtype if spec.source != "gguf" else "fp32"
    if stored == setup.weights:
        return 0
    width = {"fp32": 4, "bf16": 2, "fp16": 2}.get(stored, 2)
    return sum(t.numel * width for t, _ in on_cpu)


def _forward_bytes(spec: ModelSpec, batch: int, prompt: int, width: float) -> int:
    """Live tensors of one block's forward over a whole-context prompt (estimated, SDPA attention).

    Residual stream, normed input, attention output and queries (4 x hidden per token) plus the MLP's
    gate, up and activation (3 x intermediate per token); SDPA's fused kernels keep the scores out
    of memory. Checked against measured runs by `fitplan verify` (issue 3).
    """
    per_token = 4 * spec.hidden_size + 3 * spec.intermediate_size
    return int(batch * prompt * per_token * width)


# --- how to execute --------------------------------------------------------------------------

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # plan format -> torch dtype name
FILLER = "The quick brown fox jumps over the lazy dog while the patient cat watches from the wall. "


class TransformersExecutor:
    """Loads a safetensors folder (or a GGUF converted once into one) and times greedy decoding."""

    name = RUNTIME

    def missing(self) -> str | None:
        for package in ("torch", "transformers"):
            if importlib.util.find_spec(package) is None:
                return f"{package} is not installed: pip install 'fitplan[torch]'"
        return None

    def prepare(self, source: ModelSource) -> ModelSource:
        """A folder transformers can load quickly: GGUF files are dequantized once and cached."""
        if source.kind == "folder":
            return source
        folder = cache_dir("converted", _file_fingerprint(source.path))
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return ModelSource("folder", str(folder))
        _convert_gguf(source.path, folder)
        return ModelSource("folder", str(folder))

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> "TransformersModel":
        if setup.weights not in TORCH_DTYPES:
            raise BadValueError(f"the transformers executor runs fp32/bf16/fp16 plans here, not {setup.weights}")
        if source.kind != "folder":
            raise BadValueError(f"transformers needs a prepared folder, got {source.path}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(setup.threads)
        device_map = "auto" if setup.gpus and setup.gpu_layers else "cpu"
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=getattr(torch, TORCH_DTYPES[setup.weights]), attn_implementation="sdpa",
            device_map=device_map,
        )
        model.eval()
        return TransformersModel(model, AutoTokenizer.from_pretrained(source.path))


    def plan_folder(self, plan: Any) -> str:
        """The safetensors folder a plan's model loads from: its own folder, or its GGUF converted once."""
        from fitplan.advisor.plans.plan_file import local_weights

        return self.prepare(ModelSource(plan.model.source, local_weights(plan))).path

    def session(self, plan: Any) -> Any:
        """A generating session for `fitplan run` / `fitplan.load` (strategies/runtimes/transformers/session.py);
        a GGUF is dequantized once into a cached folder, as for verify."""
        from fitplan.strategies.runtimes.transformers.session import TransformersSession
        from fitplan.strategies.speculative import PROMPT_LOOKUP

        folder = self.plan_folder(plan)
        draft, draft_folder = plan.plan.speculative, None
        if draft is not None and draft.used and draft.draft != PROMPT_LOOKUP:
            if not os.path.exists(draft.draft):
                raise BadValueError(f"the plan's draft {draft.draft} is not a local file or folder")
            kind = "folder" if os.path.isdir(draft.draft) else "gguf"
            draft_folder = self.prepare(ModelSource(kind, draft.draft)).path
        return TransformersSession(folder, plan.plan, layers=plan.model.layers, draft_folder=draft_folder,
                                   draft_weights=draft.draft_weights if draft is not None else None)


class TransformersModel:
    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def prompt(self, n_tokens: int) -> list[int]:
        ids = self.tokenizer(FILLER * (n_tokens // 8 + 8), add_special_tokens=False)["input_ids"]
        return list(ids[:n_tokens])

    def run(self, prompt_tokens: int, gen_tokens: int) -> RunTiming:
        import torch

        tokens = self.prompt(prompt_tokens)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            start = time.perf_counter()
            # logits of the last position only, as generate() asks (logits_to_keep=1)
            out = self.model(torch.tensor([tokens], device=device), use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1)
            first = time.perf_counter()
            generated, past = [int(token)], out.past_key_values
            for _ in range(gen_tokens - 1):
                out = self.model(token[:, None], past_key_values=past, use_cache=True)
                past, token = out.past_key_values, out.logits[:, -1].argmax(-1)
                generated.append(int(token))
            _synchronize(torch)
            end = time.perf_counter()
        return RunTiming(len(tokens), len(generated), first - start, first - start, end - first, tuple(generated[:16]))

    def close(self) -> None:
        del self.model


def _synchronize(torch: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _file_fingerprint(path: str) -> str:
    """Size, mtime and the first MiB: enough to tell one GGUF from another without hashing 100 GB."""
    stat = os.stat(path)
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(2**20))
    return digest.hexdigest()[:16]


def _convert_gguf(path: str, folder: Path) -> None:
    """Dequantize a GGUF with transformers' own loader and save it as safetensors (atomically).

    transformers refuses save_pretrained on a GGUF-loaded model until its quantizer and
    quantization_config are dropped (docs/evidence.md, "transformers and GGUF files").
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(os.path.abspath(path))
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(staging)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
