"""What the executors of servers fitplan starts but does not run in-process share: vLLM and
TensorRT-LLM (NVIDIA GPUs only; runtimes/vllm/executor.py, runtimes/tensorrt_llm/executor.py).

Each says in one line why it cannot run here (package absent, no NVIDIA GPU) and builds the
runtime's own OpenAI-compatible server command from a plan, the command `fitplan export --to
vllm|tensorrt-llm` prints.
"""
from __future__ import annotations

import importlib.util
import shlex

from fitplan.errors import BadValueError
from fitplan.plan_spec import ModelSource, RunTarget, Setup
from fitplan.strategies.runtimes.contract import ServeCommand, Session, TimedModel


def server_missing(package: str, module: str, install: str, name: str, plan_hint: str) -> str | None:
    from fitplan.profiles.detect import detect_gpus

    reasons = []
    if importlib.util.find_spec(module) is None:
        reasons.append(f"{package} is not installed ({install})")
    if not any(g.vendor == "nvidia" for g in detect_gpus()):
        reasons.append("it needs an NVIDIA GPU and this machine has none")
    if not reasons:
        return None
    return f"{name} cannot run here: {' and '.join(reasons)}; {plan_hint}"


def hf_model(target: RunTarget) -> str:
    """What vLLM and TensorRT-LLM load: the model's Hugging Face repository, or its local folder."""
    found = target.hub_id or (target.location if target.source == "folder" else None)
    if found is None:
        raise BadValueError(f"no Hugging Face repository is known for {target.name}: vLLM and TensorRT-LLM need one "
                            "(or a local safetensors folder)")
    return found


class ServerExecutor:
    """An executor whose runtime is a server: it serves and exports its command, nothing in-process."""

    name: str
    exports: tuple[str, ...]

    def prepare(self, source: ModelSource) -> ModelSource:
        return source

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> TimedModel:
        raise BadValueError(f"fitplan verify does not run {self.name}: it is a server (fitplan run --serve --server {self.name})")

    def session(self, target: RunTarget) -> Session:
        raise BadValueError(f"{self.name} is a server: start it with fitplan run PLAN --serve --server {self.name}")

    def serve_args(self, target: RunTarget, *, port: int, host: str) -> list[str]:
        raise NotImplementedError

    def serve(self, target: RunTarget, *, port: int, host: str) -> ServeCommand:
        args = self.serve_args(target, port=port, host=host)
        return ServeCommand(args, args[2])  # it answers to the model it loaded, by that name

    def export(self, target: RunTarget, to: str, *, max_tokens: int, port: int) -> str:
        return shlex.join(self.serve_args(target, port=port, host="127.0.0.1"))
