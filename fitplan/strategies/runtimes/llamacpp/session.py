"""Generating text from a plan with llama-cpp-python: greedy, streamed piece by piece.

The Llama object is built from `llama_kwargs`, the same arguments `fitplan export --to python`
prints; prompt-lookup speculation is llama-cpp-python's LlamaPromptLookupDecoding (greedy output
is unchanged: drafted tokens are kept only where the target agrees).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fitplan.errors import BadValueError
from fitplan.strategies.runtimes.llamacpp.cost import llama_kwargs
from fitplan.strategies.speculative import PROMPT_LOOKUP


class LlamaCppSession:
    def __init__(self, path: str, setup: Any, *, layers: int) -> None:
        import llama_cpp

        kwargs = llama_kwargs(path, setup, layers=layers)
        speculative = getattr(setup, "speculative", None)
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
        for chunk in self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                                stream=True, seed=0):
            choice = chunk["choices"][0]
            yield choice["text"], 0 if choice["finish_reason"] else 1

    def close(self) -> None:
        self.llm.close()
