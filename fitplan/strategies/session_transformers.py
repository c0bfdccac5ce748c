"""Generating text from a plan with transformers: greedy, streamed as it is produced.

generate() runs in a worker thread and hands text to a TextIteratorStreamer; closing the stream
early (a stop string, Ctrl-C) sets a flag a stopping criterion reads, so the thread ends within a
token. Speculative decoding uses transformers' own `assistant_model` (a draft model, e.g. a
lower-precision copy) or `prompt_lookup_num_tokens`; greedy output equals plain greedy.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from fitplan.errors import BadValueError
from fitplan.strategies.speculative import PROMPT_LOOKUP

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def from_pretrained_kwargs(setup: Any) -> dict[str, Any]:
    """AutoModelForCausalLM.from_pretrained's arguments for a plan (dtype given by name)."""
    if setup.weights not in TORCH_DTYPES:
        raise BadValueError(f"the transformers executor runs fp32/bf16/fp16 plans here, not {setup.weights}")
    attention = "flash_attention_2" if setup.flash_attn else "sdpa"
    device_map = "auto" if setup.gpus and setup.gpu_layers else "cpu"
    return {"dtype": TORCH_DTYPES[setup.weights], "attn_implementation": attention, "device_map": device_map}


def generate_kwargs(setup: Any) -> dict[str, Any]:
    speculative = getattr(setup, "speculative", None)
    if speculative is not None and speculative.used and speculative.draft == PROMPT_LOOKUP:
        return {"prompt_lookup_num_tokens": speculative.draft_tokens}
    return {}


class TransformersSession:
    def __init__(self, folder: str, setup: Any, *, draft_folder: str | None = None, draft_weights: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(setup.threads)
        kwargs = from_pretrained_kwargs(setup)
        self.model = AutoModelForCausalLM.from_pretrained(folder, **{**kwargs, "dtype": getattr(torch, kwargs["dtype"])})
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.extra = generate_kwargs(setup)
        if draft_folder is not None:
            dtype = getattr(torch, TORCH_DTYPES[draft_weights or setup.weights])
            self.extra["assistant_model"] = AutoModelForCausalLM.from_pretrained(
                draft_folder, dtype=dtype, attn_implementation="sdpa", device_map=kwargs["device_map"]).eval()

    def count_tokens(self, text: str, *, prompt: bool) -> int:
        return len(self.tokenizer(text, add_special_tokens=prompt)["input_ids"])

    def stream(self, prompt: str, max_tokens: int) -> Iterator[tuple[str, int]]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
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
        self.model = self.extra = None
