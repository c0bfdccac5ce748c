"""The acceptance-rate probe of speculative decoding: how often the draft's next token is the target's.

Under greedy decoding a drafted token is accepted exactly when it equals the target's own choice,
so the rate is measured without a speculative runtime: the target writes a greedy continuation of a
prompt, both models score that one sequence (logits for every position), and a = the share of
generated positions where the draft's argmax equals the target's. Runs llama.cpp on two local GGUF
files in a worker process; a draft may be another model of the same tokenizer or a lower-precision
copy of the target.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from fitplan.errors import RunFailedError

_WORKER = """
import json, sys
import numpy as np
import llama_cpp

job = json.loads(sys.stdin.read())
def model(path):
    return llama_cpp.Llama(path, n_ctx=job["n_ctx"], n_batch=512, n_threads=job["threads"], logits_all=True,
                           flash_attn=True, verbose=False)
target = model(job["target"])
filler = "The quick brown fox jumps over the lazy dog while the patient cat watches from the wall. "
prompt = target.tokenize((filler * (job["prompt_tokens"] // 8 + 8)).encode())[: job["prompt_tokens"]]
sequence = list(prompt)
target.reset(); target.eval(prompt)
for _ in range(job["gen_tokens"]):
    token = int(np.argmax(target.scores[target.n_tokens - 1]))
    sequence.append(token); target.eval([token])
def argmaxes(llm):
    llm.reset(); llm.eval(sequence[:-1])
    return np.argmax(np.asarray(llm.scores[: len(sequence) - 1]), axis=1)
wanted = argmaxes(target)[len(prompt) - 1:]
target.close()
draft = model(job["draft"])
got = argmaxes(draft)[len(prompt) - 1:]
print(json.dumps({"acceptance": float(np.mean(wanted == got)), "positions": int(len(wanted))}))
"""


def measure_acceptance(target: str, draft: str, *, prompt_tokens: int = 64, gen_tokens: int = 128,
                       threads: int = 2, timeout_s: float = 600) -> dict[str, Any]:
    """{"acceptance": a, "positions": n} for two local GGUF files sharing a tokenizer."""
    job = {"target": target, "draft": draft, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
           "threads": threads, "n_ctx": prompt_tokens + gen_tokens + 8}
    try:
        done = subprocess.run([sys.executable, "-c", _WORKER], input=json.dumps(job), capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RunFailedError(f"acceptance probe timed out after {timeout_s:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict) or "acceptance" not in result:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise RunFailedError(f"acceptance probe failed: {why}")
    return result
