"""Loading a model with transformers: the generating session of `fitplan run` / `fitplan.load`
(greedy, streamed as it is produced) and the timed model of `fitplan verify`.

generate() runs in a worker thread and hands text to a TextIteratorStreamer; closing the stream
early (a stop string, Ctrl-C) sets a flag a stopping criterion reads, so the thread ends within a
token. Speculative decoding uses transformers' own `assistant_model` (a draft model, e.g. a
lower-precision copy) or `prompt_lookup_num_tokens`; greedy output equals plain greedy.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fitplan.errors import BadValueError
from fitplan.plan_spec import RunTiming, Setup
from fitplan.strategies.runtimes.transformers.cost import TORCH_DTYPES
from fitplan.strategies.speculative import PROMPT_LOOKUP

if TYPE_CHECKING:
    from types import ModuleType

    import torch
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.utils import ModelOutput

FILLER = "The quick brown fox jumps over the lazy dog while the patient cat watches from the wall. "
_KV_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def from_pretrained_kwargs(setup: Setup, *, layers: int, tied: bool = False,
                           offload_folder: str = "fitplan-offload") -> dict[str, Any]:
    """AutoModelForCausalLM.from_pretrained's arguments for a plan (dtypes given by name; `bnb`:
    the BitsAndBytesConfig arguments of a bitsandbytes plan, quantized at load)."""
    from fitplan.strategies.quantization import weight_format

    fmt = weight_format(setup.weights, source="plan.weights", runtime="transformers")
    attention = "flash_attention_2" if setup.flash_attn else "sdpa"
    if fmt.family == "dense":
        out: dict[str, Any] = {"dtype": TORCH_DTYPES[setup.weights]}
    elif fmt.family in ("bnb8", "bnb4"):
        compute = _KV_DTYPES.get(setup.kv_cache, "bfloat16")  # the dtype of what is not quantized
        out = {"dtype": compute, "bnb": {"load_in_8bit": True} if fmt.family == "bnb8" else {
            "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": fmt.double_quant,
            "bnb_4bit_compute_dtype": compute}}
    elif fmt.family == "dynint8":  # loaded in fp32, then quantized (quantize_dynamic_int8)
        out = {"dtype": "float32", "dynamic_int8": True}
    else:  # GPTQ / AWQ: a pre-quantized checkpoint; transformers reads its quantization_config itself
        out = {"dtype": "float16"}
    out.update(attn_implementation=attention, device_map=device_map(setup, layers, tied))
    if setup.disk_layers:
        out["offload_folder"] = offload_folder
    return out


def device_map(setup: Setup, layers: int, tied: bool) -> str | dict[str, Any]:
    """accelerate's placement: whole-model strings where they say it all, else block by block as the
    plan places them (GPUs first, then the CPU, the last `disk_layers` blocks on disk), for the
    decoder layout of Llama-family models (model.embed_tokens, model.layers.N, model.norm, lm_head)."""
    split = setup.gpus and 0 < setup.gpu_layers < layers
    if not setup.disk_layers and not split:
        return "auto" if setup.gpus and setup.gpu_layers else "cpu"

    def device(i: int) -> Any:
        if i >= layers - setup.disk_layers:
            return "disk"
        return i * setup.gpus // setup.gpu_layers if i < setup.gpu_layers else "cpu"

    first = device(0) if device(0) != "disk" else "cpu"
    last = first if tied or device(layers - 1) == "disk" else device(layers - 1)  # a tied head shares the embedding
    placed: dict[str, Any] = {"model.embed_tokens": first, "model.rotary_emb": first, "model.norm": last, "lm_head": last}
    placed.update({f"model.layers.{i}": device(i) for i in range(layers)})
    return placed


def generate_kwargs(setup: Setup) -> dict[str, Any]:
    speculative = setup.speculative
    if speculative is not None and speculative.used and speculative.draft == PROMPT_LOOKUP:
        return {"prompt_lookup_num_tokens": speculative.draft_tokens}
    return {}


class GenerateSession:
    """Greedy, streamed generation through Hugging Face's generate(): transformers models and
    optimum's ONNX Runtime models alike (they share generate, the tokenizer and the streamer)."""

    model: Any
    tokenizer: Any
    extra: dict[str, Any]
    offload: str | None = None
    in_caller: bool = False

    def count_tokens(self, text: str, *, prompt: bool) -> int:
        return len(self.tokenizer(text, add_special_tokens=prompt)["input_ids"])

    def stream(self, prompt: str, max_tokens: int) -> Iterator[tuple[str, int]]:
        """Text pieces as generated, then ("", tokens generated). generate() runs in a worker thread; a
        session marked `in_caller` steps greedily in the calling thread instead: torch's quantized kernels
        pay for an OpenMP team at every parallel region outside the main thread (quantizing a 2,048-wide
        input: 110 us there, 12 us in the main thread; SmolLM2 int8-dynamic decoded at 13.7 tok/s in a worker
        against 24 in the main thread, 2 threads)."""
        if self.in_caller and not self.extra:
            yield from greedy_stream(self.model, self.tokenizer, prompt, max_tokens)
            return
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
                return stop.is_set()

        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["ids"] = self.model.generate(
                    **inputs, max_new_tokens=max_tokens, do_sample=False, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Stop()]), pad_token_id=self.tokenizer.eos_token_id,
                    **self.extra)
            except BaseException as exc:  # handed to the reading thread
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                yield piece, 0
        finally:
            stop.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        yield "", int(result["ids"].shape[-1] - inputs["input_ids"].shape[-1])

    def close(self) -> None:
        self.model, self.extra = None, {}
        if self.offload:
            shutil.rmtree(self.offload, ignore_errors=True)


_PROCESSORS = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
               "encoder_no_repeat_ngram_size": 0, "min_new_tokens": None, "min_length": 0, "bad_words_ids": None,
               "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
               "forced_eos_token_id": None, "sequence_bias": None, "exponential_decay_length_penalty": None}


def plain_greedy(config: GenerationConfig) -> bool:
    """Whether generate(do_sample=False) is a bare argmax for this config: none of the logits processors
    greedy decoding applies is set (Qwen2.5's repetition_penalty 1.05 is one)."""
    return all(getattr(config, name, default) in (default, None) for name, default in _PROCESSORS.items())


def greedy_stream(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_tokens: int
                  ) -> Iterator[tuple[str, int]]:
    """What generate(do_sample=False) gives, stepped here: the prompt in one forward, then one token a step
    over the KV cache until an end-of-sequence token (counted, as generate counts it) or `max_tokens`.
    Text comes through transformers' own streamer, so pieces split as generate's streamer splits them."""
    import torch
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    ends = model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, list) else [] if ends is None else [ends])
    streamer.put(inputs["input_ids"])  # the prompt: skipped
    generated, cache = 0, cache_argument(model)
    with torch.inference_mode():  # per forward: the caller's code between pieces runs in its own mode
        out = model(**inputs, use_cache=True, logits_to_keep=1)
    while generated < max_tokens:
        token = out.logits[:, -1].argmax(-1)
        generated += 1
        if int(token) in ends:
            break
        streamer.put(token)
        while not streamer.text_queue.empty():
            if piece := streamer.text_queue.get_nowait():
                yield piece, 0
        if generated < max_tokens:
            with torch.inference_mode():
                out = model(token[:, None], use_cache=True, **{cache: cache_of(out)})
    streamer.end()
    while not streamer.text_queue.empty():
        if piece := streamer.text_queue.get_nowait():  # the end's stop signal is None
            yield piece, 0
    yield "", generated


class TransformersSession(GenerateSession):
    """A transformers model loaded as the plan says."""

    def __init__(self, folder: str, setup: Setup, *, layers: int, draft_folder: str | None = None,
                 draft_weights: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the stream is the output: no progress bars or load notes
        hf_logging.disable_progress_bar()
        torch.set_num_threads(setup.threads)
        check_prequantized(folder, setup.weights)
        self.offload = tempfile.mkdtemp(prefix="fitplan-offload-") if setup.disk_layers else None
        kwargs = from_pretrained_kwargs(setup, layers=layers, tied=_tied(folder), offload_folder=self.offload or "")
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
        if "bnb" in kwargs:
            from transformers import BitsAndBytesConfig

            bnb = kwargs.pop("bnb")
            if "bnb_4bit_compute_dtype" in bnb:
                bnb["bnb_4bit_compute_dtype"] = getattr(torch, bnb["bnb_4bit_compute_dtype"])
            kwargs["quantization_config"] = BitsAndBytesConfig(**bnb)
        dynamic = kwargs.pop("dynamic_int8", False)
        self.model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        self.model.eval()
        if dynamic:
            quantize_dynamic_int8(self.model)
        # greedy steps in the calling thread (stream's docstring says why), where plain greedy is what
        # generate() would do: no logits processor in the model's generation_config
        self.in_caller = dynamic and plain_greedy(self.model.generation_config)
        if setup.prune:
            apply_pruning(self.model, setup.prune, sparse_kernels=setup.sparse_kernels)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.extra = generate_kwargs(setup)
        if draft_folder is not None:
            dtype = getattr(torch, TORCH_DTYPES.get(draft_weights or setup.weights, "float32"))
            self.extra["assistant_model"] = AutoModelForCausalLM.from_pretrained(
                draft_folder, dtype=dtype, attn_implementation="sdpa", device_map="auto" if setup.gpus else "cpu").eval()


DYNAMIC_INT8_CODE = (
    "from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic",
    "linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and '.layers.' in n}",
    "quantize_dynamic(model, dict.fromkeys(linears, per_channel_dynamic_qconfig), dtype=torch.qint8, inplace=True)")


def cache_argument(model: torch.nn.Module) -> str:
    """The name forward() takes the KV cache by: transformers 5.24 renamed `past_key_values` to `cache`
    (the old name warns, and goes in 5.40); the ONNX environment's 4.57 knows only the old one."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out: ModelOutput) -> Any:
    """The KV cache a forward returned, under either name (see cache_argument)."""
    name = "cache" if "cache" in getattr(type(out), "__dataclass_fields__", {}) else "past_key_values"
    return getattr(out, name)


def quantize_dynamic_int8(model: torch.nn.Module) -> int:
    """The blocks' nn.Linear layers to int8, one scale per output channel, activations quantized at each
    call (torch.ao.quantization.quantize_dynamic, as DYNAMIC_INT8_CODE writes it in an export). What stays
    fp32 (embeddings, norms, lm_head) is then copied out of the memory-mapped checkpoint: otherwise every
    page of the replaced fp32 weights stays mapped and counted (measured: 1,107 MB RSS against 704 MB).
    Returns the number of layers quantized."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    if not linears:  # another module layout (transformer.h.N, fused experts): nothing would be quantized
        raise BadValueError(f"int8-dynamic quantizes nn.Linear layers under '.layers.'; {type(model).__name__} has "
                            "none: plan fp32 or bf16 for it")
    with warnings.catch_warnings():  # torch points torch.ao.quantization users to torchao; it still runs
        warnings.simplefilter("ignore")
        quantize_dynamic(model, dict.fromkeys(linears, per_channel_dynamic_qconfig), dtype=torch.qint8, inplace=True)
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()
    return len(linears)


def apply_pruning(model: torch.nn.Module, prune: str, *, sparse_kernels: bool) -> int:
    """Zero weights of every block linear layer as the plan says (magnitude, no retraining) with
    torch.nn.utils.prune, made permanent; with sparse kernels, 2:4 weights become torch's
    semi-structured tensors. Returns the number of layers pruned."""
    import torch
    from torch.nn.utils import prune as torch_prune

    from fitplan.strategies.pruning import parse_prune

    pattern, ratio = parse_prune(prune)
    layers = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    for linear in layers:
        if pattern == "unstructured":
            torch_prune.l1_unstructured(linear, "weight", amount=ratio)
            torch_prune.remove(linear, "weight")
            continue
        with torch.no_grad():  # 2:4: keep the 2 largest of every 4 consecutive inputs
            weight = linear.weight
            groups = weight.abs().reshape(-1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(2, dim=1).indices, True)
            weight.mul_(keep.reshape(weight.shape))
        if sparse_kernels:
            from torch.sparse import to_sparse_semi_structured

            linear.weight = torch.nn.Parameter(to_sparse_semi_structured(linear.weight))
    return len(layers)


_PREQUANTIZED = {"gptq": ("gptqmodel", "gptqmodel (auto-gptq is archived)"), "awq": ("awq", "autoawq (archived)")}


def check_prequantized(folder: str, weights: str) -> None:
    """GPTQ/AWQ plans load a checkpoint quantized that way, through transformers' own integration,
    where its package is installed (auto-gptq and autoawq are archived: used only where present)."""
    from importlib.util import find_spec

    from fitplan.strategies.quantization import weight_format

    family = weight_format(weights, source="plan.weights", runtime="transformers").family
    if family not in _PREQUANTIZED:
        return
    module, package = _PREQUANTIZED[family]
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            method = (json.load(handle).get("quantization_config") or {}).get("quant_method")
    except (OSError, ValueError, AttributeError):
        method = None
    if method != family:
        raise BadValueError(f"a {weights} plan needs a {family.upper()} checkpoint (config.json quantization_config "
                            f"quant_method {family!r}); {folder} is not one, and fitplan does not quantize to {family.upper()}")
    if find_spec(module) is None:
        raise BadValueError(f"{family.upper()} checkpoints load through transformers' integration, which needs {package}: "
                            "not installed here")


def _tied(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return bool(json.load(handle).get("tie_word_embeddings", False))
    except (OSError, ValueError):
        return False


class TransformersModel:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model, self.tokenizer = model, tokenizer

    def prompt(self, n_tokens: int) -> list[int]:
        ids = self.tokenizer(FILLER * (n_tokens // 8 + 8), add_special_tokens=False)["input_ids"]
        if not ids:  # else torch builds a float tensor of nothing and the embedding fails far from the cause
            raise BadValueError(f"the model's tokenizer ({type(self.tokenizer).__name__}) turns English text into no "
                                "tokens: check its tokenizer files")
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
            generated, past, name = [int(token)], cache_of(out), cache_argument(self.model)
            for _ in range(gen_tokens - 1):
                out = self.model(token[:, None], use_cache=True, **{name: past})
                past, token = cache_of(out), out.logits[:, -1].argmax(-1)
                generated.append(int(token))
            _synchronize(torch)
            end = time.perf_counter()
        return RunTiming(len(tokens), len(generated), first - start, first - start, end - first, tuple(generated[:16]))

    def close(self) -> None:
        del self.model


def _synchronize(torch: ModuleType) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
