"""Quality figures fitplan measured itself: KV-cache precision (llama.cpp) and magnitude pruning
(transformers), as perplexity over the first 2048 tokens of a local text on SmolLM2-135M.

Usage: python bench/quality_probes.py [--text /usr/share/common-licenses/GPL-3]
Writes nothing: prints the figures that strategies/data/kv_dtypes.toml and pruning.toml cite.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import smollm2_path  # noqa: E402

TOKENS = 2048


def kv_perplexities(path: str, text: str) -> dict[str, float]:
    import llama_cpp
    import numpy as np

    out = {}
    for kv, ggml_type in (("f16", 1), ("q8_0", 8), ("q4_0", 2)):
        llm = llama_cpp.Llama(path, n_ctx=TOKENS, n_batch=512, n_threads=2, logits_all=True, type_k=ggml_type,
                              type_v=ggml_type, flash_attn=True, verbose=False)
        tokens = llm.tokenize(text.encode())[:TOKENS]
        llm.reset()
        llm.eval(tokens)
        logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        out[kv] = math.exp(-np.mean([logp[i, tokens[i + 1]] for i in range(len(tokens) - 1)]))
        llm.close()
    return out


def pruning_perplexities(path: str, text: str) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fitplan.plan_spec import ModelSource
    from fitplan.strategies.runtimes.transformers.executor import TransformersExecutor
    from fitplan.strategies.runtimes.transformers.session import apply_pruning

    folder = TransformersExecutor().prepare(ModelSource("gguf", path)).path
    ids = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")["input_ids"][:, :TOKENS]
    out = {}
    for mode in ("dense", "unstructured 50%", "2:4"):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        if mode != "dense":  # the executor's own pruning (strategies/runtimes/transformers/session.py)
            apply_pruning(model, "2:4" if mode == "2:4" else "unstructured:0.5", sparse_kernels=False)
        with torch.inference_mode():
            out[mode] = math.exp(model(ids, labels=ids).loss.item())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    args = parser.parse_args()
    import os

    os.environ.setdefault("FITPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="fitplan-quality-"))
    text = Path(args.text).read_text(encoding="utf-8", errors="ignore")
    path = smollm2_path()
    for title, figures in (("KV cache (llama.cpp, flash attention)", kv_perplexities(path, text)),
                           ("magnitude pruning, no retraining (transformers fp32)", pruning_perplexities(path, text))):
        base = next(iter(figures.values()))
        print(f"## {title}: perplexity over {TOKENS} tokens of {args.text}")
        for name, value in figures.items():
            print(f"{name:>18}: {value:9.3f}  (x{value / base:.3f})")


if __name__ == "__main__":
    main()
