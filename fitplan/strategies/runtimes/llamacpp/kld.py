"""Quality measured with llama.cpp itself: write a format with its own quantizer, run the reference and
the candidate over the same tokens, and compare their next-token distributions.

The scoring follows llama.cpp's `llama-perplexity --kl-divergence`: the text is cut into chunks of
N_CTX tokens, each evaluated from a fresh context, and only the second half of each chunk is scored
(every scored token then has at least N_CTX / 2 tokens before it). The reference's log-probabilities
are kept on disk (float32, one row of the vocabulary per scored token) so that the reference and a
candidate are never loaded at once.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fitplan.errors import BadValueError, RunFailedError

if TYPE_CHECKING:
    import numpy as np

N_CTX = 512  # llama-perplexity's default context, the one its published KLD tables use
DECODE_TOKENS = 32  # single-token steps in one timed run of the decode rate
DECODE_RUNS = 3  # timed runs, after a warm-up; the median is the rate
MIN_TOKENS = 16


@dataclass(frozen=True)
class Scored:
    """What one model gives over the scored tokens: perplexity, and against the reference the mean and
    99th percentile of the KL divergence and how often both put the same token first."""

    tokens: int
    ppl: float
    kld_mean: float = 0.0
    kld_p99: float = 0.0
    top1_agreement: float = 1.0


def quantize(source: str, target: str, file_type: str, threads: int) -> None:
    """Write `target` in `file_type` with llama.cpp's quantizer (llama_model_quantize), requantizing a
    quantized source as llama-quantize --allow-requantize does. One line on failure, llama.cpp's reason
    in it; the quantizer's log goes nowhere else."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}", None) if file_type not in ("F32",) else \
        llama_cpp.LLAMA_FTYPE_ALL_F32
    if ftype is None:
        raise BadValueError(f"llama.cpp has no file type {file_type!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    with _captured_stderr() as log, _captured_llama_log() as messages:
        rc = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if rc != 0:
        with contextlib.suppress(OSError):
            os.unlink(target)
        lines = "".join(messages).splitlines() + log
        reason = next((line.strip(" =") for line in reversed(lines) if "error" in line.lower()), "")
        raise BadValueError(f"llama.cpp cannot write {file_type} from {source}" + (f": {reason}" if reason else ""))


class Model:
    """One GGUF loaded for scoring (every position's logits kept) on the CPU."""

    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp

        try:
            self.llm = llama_cpp.Llama(path, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=threads,
                                       n_threads_batch=threads, logits_all=True, n_gpu_layers=0, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise RunFailedError(f"llama.cpp could not load {path}: {exc}") from None
        self.vocab = self.llm.n_vocab()
        self.add_bos = str(self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def chunk_logprobs(self, tokens: list[int], first: int) -> np.ndarray:
        """log p(next token) rows for positions first .. len(tokens) - 2 of one chunk, from a fresh context."""
        import numpy as np

        chunk = list(tokens)
        if self.add_bos:
            chunk[0] = self.llm.token_bos()  # as llama-perplexity does at each chunk's start
        self.llm.reset()
        self.llm.eval(chunk)
        logits = np.asarray(self.llm.scores[first:len(chunk) - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def decode_rate(self) -> float:
        """Tokens a second of single-token steps after a short prompt (llama.cpp's decode, this machine):
        the median of DECODE_RUNS runs after a warm-up, as a single short run varies by a third here."""
        prompt = self.tokenize("The quick brown fox jumps over the lazy dog.")[:16] or [0]
        rates = []
        for run in range(DECODE_RUNS + 1):
            self.llm.reset()
            self.llm.eval(prompt)
            start = time.perf_counter()
            for _ in range(DECODE_TOKENS if run else 8):
                self.llm.eval([prompt[-1]])
            if run:
                rates.append(DECODE_TOKENS / (time.perf_counter() - start))
        return sorted(rates)[len(rates) // 2]

    def close(self) -> None:
        self.llm.close()


def chunks(tokens: list[int], wanted: int) -> list[tuple[list[int], int, int]]:
    """(chunk tokens, first scored position, positions scored) for at most `wanted` scored tokens; a text
    shorter than one chunk is one chunk whose second half is scored."""
    if len(tokens) < MIN_TOKENS:
        raise BadValueError(f"the text is {len(tokens)} tokens long; fitplan quality needs at least {MIN_TOKENS}")
    size = min(N_CTX, len(tokens))
    first = size // 2
    out, left = [], wanted
    for start in range(0, len(tokens) - size + 1, size):
        scored = min(size - first - 1, left)
        out.append((tokens[start:start + size], first, scored))
        left -= scored
        if left <= 0:
            break
    return out


def score_reference(model: Model, plan: list[tuple[list[int], int, int]], store: np.ndarray) -> Scored:
    """The reference's perplexity; its log-probabilities go to `store` (scored tokens x vocabulary)."""
    row, nll = 0, 0.0
    for tokens, first, scored in plan:
        logp = model.chunk_logprobs(tokens, first)[:scored]
        store[row:row + scored] = logp
        nll -= sum(logp[i, tokens[first + i + 1]] for i in range(scored))
        row += scored
    return Scored(row, math.exp(nll / row))


def score_candidate(model: Model, plan: list[tuple[list[int], int, int]], store: np.ndarray) -> Scored:
    """A candidate against the stored reference: KL(reference || candidate) per scored token."""
    import numpy as np

    row, nll, same = 0, 0.0, 0
    klds = []
    for tokens, first, scored in plan:
        logq = model.chunk_logprobs(tokens, first)[:scored]
        logp = np.asarray(store[row:row + scored], dtype=np.float64)
        klds.append((np.exp(logp) * (logp - logq)).sum(axis=1))
        same += int((logp.argmax(axis=1) == logq.argmax(axis=1)).sum())
        nll -= sum(logq[i, tokens[first + i + 1]] for i in range(scored))
        row += scored
    kld = np.maximum(np.concatenate(klds), 0.0)  # rounding leaves -1e-12 where the two agree
    return Scored(row, math.exp(nll / row), float(kld.mean()), float(np.percentile(kld, 99)), same / row)


@contextlib.contextmanager
def reference_store(folder: Path, rows: int, vocab: int) -> Iterator[np.ndarray]:
    """A float32 memory map of rows x vocab in `folder`, removed afterwards."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".reference-", suffix=".f32", dir=folder)
    os.close(fd)
    try:
        yield np.lib.format.open_memmap(name, mode="w+", dtype=np.float32, shape=(max(rows, 1), vocab))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


@contextlib.contextmanager
def _captured_llama_log() -> Iterator[list[str]]:
    """llama.cpp's log (llama_log_set) into a list for the block, then back to llama-cpp-python's handler."""
    import llama_cpp
    from llama_cpp import _logger

    messages: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        messages.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield messages
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Route the C library's stderr (fd 2) to a temp file for the block; the list it yields holds the
    lines written once the block ends."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        saved = os.dup(2)
        try:
            os.dup2(log.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines.extend(log.read().splitlines())
