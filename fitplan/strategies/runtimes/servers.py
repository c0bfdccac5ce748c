"""Servers fitplan starts but does not run in-process: vLLM and TensorRT-LLM (NVIDIA GPUs only).

Each is an executor registered through the runtime hook: `missing()` says in one line why it cannot
run here (package absent, no NVIDIA GPU), and `serve_args` builds the runtime's own OpenAI-compatible
server command from a plan, the same command `fitplan export --to vllm|tensorrt-llm` prints.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from fitplan.errors import BadValueError


def _missing(package: str, module: str, install: str, name: str, plan_hint: str) -> str | None:
    from fitplan.profiles.detect import detect_gpus

    reasons = []
    if importlib.util.find_spec(module) is None:
        reasons.append(f"{package} is not installed ({install})")
    if not any(g.vendor == "nvidia" for g in detect_gpus()):
        reasons.append("it needs an NVIDIA GPU and this machine has none")
    if not reasons:
        return None
    return f"{name} cannot run here: {' and '.join(reasons)}; {plan_hint}"


def hf_model(plan: Any) -> str:
    """What vLLM and TensorRT-LLM load: the model's Hugging Face repository, or its local folder."""
    m = plan.model
    target = m.hub_id or (m.location if m.source == "folder" else None)
    if target is None:
        raise BadValueError(f"no Hugging Face repository is known for {m.name}: vLLM and TensorRT-LLM need one "
                            "(or a local safetensors folder)")
    return target


class VllmExecutor:
    name = "vllm"

    def missing(self) -> str | None:
        return _missing("vllm", "vllm", "pip install vllm", "vLLM", "`fitplan export PLAN --to vllm` prints the command")

    def serve_args(self, plan: Any, *, port: int, host: str) -> list[str]:
        from fitplan.strategies.runtimes.transformers.cost import TORCH_DTYPES

        s = plan.plan
        return ["vllm", "serve", hf_model(plan), "--dtype", TORCH_DTYPES.get(s.weights, "bfloat16"), "--max-model-len", str(s.context),
                "--tensor-parallel-size", str(max(1, s.gpus)), "--max-num-seqs", str(s.batch),
                "--host", host, "--port", str(port)]


class TensorRTLLMExecutor:
    name = "tensorrt-llm"

    def missing(self) -> str | None:
        return _missing("tensorrt-llm", "tensorrt_llm", "pip install tensorrt-llm", "TensorRT-LLM",
                        "`fitplan export PLAN --to tensorrt-llm` prints the command")

    def serve_args(self, plan: Any, *, port: int, host: str) -> list[str]:
        """trtllm-serve on the Hugging Face checkpoint (its PyTorch backend builds no engine first)."""
        s = plan.plan
        return ["trtllm-serve", hf_model(plan), "--backend", "pytorch", "--tp_size", str(max(1, s.gpus)),
                "--pp_size", "1", "--max_batch_size", str(s.batch), "--max_seq_len", str(s.context),
                "--host", host, "--port", str(port)]
