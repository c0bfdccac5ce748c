"""Loading a GGUF with llama-cpp-python: the generating session of `fitplan run` / `fitplan.load`
(greedy, streamed piece by piece) and the timed model of `fitplan verify`.

The Llama object is built from `llama_kwargs`, the same arguments `fitplan export --to python`
prints; prompt-lookup speculation is llama-cpp-python's LlamaPromptLookupDecoding (greedy output
is unchanged: drafted tokens are kept only where the target agrees).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from fitplan.errors import BadValueError
from fitplan.plan_spec import RunTiming, Setup
from fitplan.strategies.runtimes.llamacpp.cost import constants
from fitplan.strategies.speculative import PROMPT_LOOKUP

if TYPE_CHECKING:
    from llama_cpp import Llama

# ggml type ids for llama-cpp-python's type_k / type_v (ggml.h enum ggml_type)
_GGML_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
FILLER = "The quick brown fox jumps over the lazy dog while the patient cat watches from the wall. "


def llama_kwargs(path: str, setup: Setup, *, layers: int) -> dict[str, Any]:
    """llama_cpp.Llama's arguments for a plan: `fitplan run`, verify and the exported code share them."""
    kwargs = {
        "model_path": path, "n_ctx": setup.context * setup.batch, "n_batch": constants()["n_ubatch"],
        # the head is llama.cpp's last layer slot: -ngl blocks + 1 offloads it with them (cost.py _slot_device)
        "n_gpu_layers": _n_gpu_layers(setup, layers),
        "n_threads": setup.threads, "n_threads_batch": setup.threads, "type_k": _GGML_KV_TYPES[setup.kv_cache],
        "type_v": _GGML_KV_TYPES[setup.kv_cache], "flash_attn": setup.flash_attn, "seed": 0, "verbose": False,
        "use_mmap": setup.use_mmap, "use_mlock": setup.use_mlock, "swa_full": setup.swa_full,
    }
    if not setup.op_offload:  # named only when off: llama-cpp-python took op_offload later than the rest
        kwargs["op_offload"] = False
    if setup.gpus > 1 and setup.gpu_layers:  # the plan's shares (equal if none), whatever memory is free
        kwargs["tensor_split"] = list(setup.tensor_split) or [1.0] * setup.gpus
    return kwargs


def _n_gpu_layers(setup: Setup, layers: int) -> int:
    if not setup.gpus or not setup.gpu_layers:
        return 0
    return -1 if setup.gpu_layers >= layers else setup.gpu_layers + 1


class LlamaCppSession:
    def __init__(self, path: str, setup: Setup, *, layers: int) -> None:
        import llama_cpp

        kwargs = llama_kwargs(path, setup, layers=layers)
        speculative = setup.speculative
        if speculative is not None and speculative.used:
            if speculative.draft != PROMPT_LOOKUP:
                raise BadValueError(f"llama-cpp-python drafts by prompt lookup only; the plan's draft is {speculative.draft}")
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            kwargs["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=speculative.draft_tokens)
        self.llm = llama_cpp.Llama(**kwargs)

    def count_tokens(self, text: str, *, prompt: bool) -> int:
        """Tokens of a prompt as llama.cpp evaluates it (with BOS), or of generated text."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=prompt, special=prompt))

    def stream(self, prompt: str, max_tokens: int) -> Iterator[tuple[str, int]]:
        """(text piece, tokens it stands for): llama-cpp-python streams one chunk per token, then a
        last chunk that only carries the finish reason."""
        self.llm.reset()
        chunks = self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                            stream=True, seed=0)
        for chunk in cast(Iterator[dict[str, Any]], chunks):
            choice = chunk["choices"][0]
            yield choice["text"], 0 if choice["finish_reason"] else 1

    def close(self) -> None:
        self.llm.close()


class LlamaCppModel:
    def __init__(self, llm: Llama) -> None:
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
