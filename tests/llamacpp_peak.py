"""Run llama-cpp-python for real and print the process's peak RSS (VmHWM) as JSON.

Usage: python tests/llamacpp_peak.py MODEL.gguf N_CTX [FLASH_ATTN 0|1]. The prompt fills the context but for 32
generated tokens: the worst case the memory model predicts (a full KV cache and the largest
attention scores). Runs in its own process so VmHWM is this run's alone.
"""
from __future__ import annotations

import json
import sys


def vm_hwm_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(path: str, n_ctx: int, flash_attn: bool, generate: int = 32) -> None:
    import llama_cpp

    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=1, n_threads_batch=2, flash_attn=flash_attn, verbose=False)
    filler = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * (n_ctx // 4))
    prompt = filler[: n_ctx - generate]
    out = llm.create_completion(prompt, max_tokens=generate, temperature=0.0)
    print(json.dumps({"n_ctx": n_ctx, "prompt_tokens": len(prompt),
                      "generated": out["usage"]["completion_tokens"], "peak_rss_bytes": vm_hwm_bytes()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "1")
