"""ONNX Runtime's Executor (strategies/runtimes/contract.py): exports the model with optimum once,
then generates with onnxruntime; writes a plan as a script over the same cached export."""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from fitplan.errors import BadValueError
from fitplan.plan_spec import ModelSource, RunTarget, Setup
from fitplan.strategies.runtimes.contract import ServeCommand, TimedModel
from fitplan.strategies.runtimes.onnx.cost import RUNTIME
from fitplan.strategies.runtimes.transformers.executor import shell_heredoc

if TYPE_CHECKING:  # the session module is imported when a model is opened, not when advise starts
    from fitplan.strategies.runtimes.onnx.session import OnnxSession

EXPORTS = ("python", "shell")


class OnnxRuntimeExecutor:
    """Exports the model with optimum once, then generates with onnxruntime."""

    name = RUNTIME
    exports = EXPORTS

    def missing(self) -> str | None:
        for module, package in (("onnxruntime", "onnxruntime"), ("optimum.exporters.onnx", "optimum-onnx")):
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return (f"{package} is not installed; it needs transformers < 4.58, so install it in its own "
                        "environment: python -m venv .venv-onnx && .venv-onnx/bin/pip install 'fitplan[torch,onnx]'")
        return None

    def prepare(self, source: ModelSource) -> ModelSource:
        return source

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> TimedModel:
        raise BadValueError("fitplan verify does not run ONNX Runtime plans yet; use fitplan run")

    def session(self, target: RunTarget) -> OnnxSession:
        from fitplan.strategies.runtimes.onnx.session import OnnxSession, plan_export

        folder, onnx_dir = plan_export(target)
        return OnnxSession(folder, str(onnx_dir), target.setup)

    def serve(self, target: RunTarget, *, port: int, host: str) -> ServeCommand:
        raise BadValueError("--serve has no OpenAI-compatible server to start for ONNX Runtime plans; use fitplan.load "
                            "or `fitplan export --to python`")

    def export(self, target: RunTarget, to: str, *, max_tokens: int, port: int) -> str:
        if to not in EXPORTS:
            raise BadValueError(f"--to {to} takes a llama.cpp plan (GGUF); this plan runs on {RUNTIME}")
        code = python_code(target, max_tokens)
        return code if to == "python" else shell_heredoc(code)


def python_code(target: RunTarget, max_tokens: int) -> str:
    """ORTModelForCausalLM over fitplan's cached export (made now if missing) with the plan's threads."""
    from fitplan.strategies.runtimes.onnx.session import GRAPH_OPTIMIZATION, plan_export, providers, session_settings

    folder, onnx_dir = plan_export(target)
    return "\n".join([
        "import sys", "", "import onnxruntime", "from optimum.onnxruntime import ORTModelForCausalLM",
        "from transformers import AutoTokenizer, TextStreamer", "",
        "options = onnxruntime.SessionOptions()",
        *(f"options.{name} = {value!r}" for name, value in session_settings(target.setup).items()),
        f"options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.{GRAPH_OPTIMIZATION}",
        f"model = ORTModelForCausalLM.from_pretrained({str(onnx_dir)!r}, provider={providers(target.setup)[0]!r}, "
        "session_options=options)",
        f"tokenizer = AutoTokenizer.from_pretrained({folder!r})",
        'prompt = sys.argv[1] if len(sys.argv) > 1 else "Hello"',
        'inputs = tokenizer(prompt, return_tensors="pt")',
        f"model.generate(**inputs, max_new_tokens={max_tokens}, do_sample=False, pad_token_id=tokenizer.eos_token_id, "
        "streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))", ""])
