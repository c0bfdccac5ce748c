"""llama.cpp's Executor (strategies/runtimes/contract.py): runs GGUF plans with llama-cpp-python,
serves them with its OpenAI-compatible server, and writes them as code or llama-server flags.

Every form is built from `llama_kwargs`, so `fitplan run`, the exported script and the server load
exactly alike (the tests run them and compare the first tokens).
"""
from __future__ import annotations

import importlib.util
import shlex
import sys
from typing import TYPE_CHECKING

from fitplan.errors import BadValueError, RuntimeMissingError
from fitplan.plan_spec import ModelSource, RunTarget, Setup
from fitplan.strategies.runtimes.contract import ServeCommand
from fitplan.strategies.runtimes.llamacpp.cost import RUNTIME
from fitplan.strategies.speculative import PROMPT_LOOKUP

if TYPE_CHECKING:  # the session module is imported when a model is opened, not when advise starts
    from fitplan.strategies.runtimes.llamacpp.session import LlamaCppModel, LlamaCppSession

SERVER_PACKAGES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
EXPORTS = ("python", "shell", "llama-server")


class LlamaCppExecutor:
    """Loads a GGUF file with llama-cpp-python."""

    name = RUNTIME
    exports = EXPORTS

    def missing(self) -> str | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed: pip install 'fitplan[llamacpp]'"
        return None

    def prepare(self, source: ModelSource) -> ModelSource:
        return source  # llama.cpp maps the GGUF itself

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> LlamaCppModel:
        if source.kind != "gguf":
            raise BadValueError(f"llama.cpp runs GGUF files; {source.path} is a {source.kind}")
        import llama_cpp

        from fitplan.strategies.runtimes.llamacpp.session import LlamaCppModel, llama_kwargs

        return LlamaCppModel(llama_cpp.Llama(**llama_kwargs(source.path, setup, layers=layers)))

    def session(self, target: RunTarget) -> LlamaCppSession:
        from fitplan.strategies.runtimes.llamacpp.session import LlamaCppSession

        return LlamaCppSession(_gguf(target), target.setup, layers=target.layers)

    def serve(self, target: RunTarget, *, port: int, host: str) -> ServeCommand:
        """llama-cpp-python's server, checked for its [server] extras first (a missing one would end in
        Python's own two-line 'No module named' from runpy, after this process was replaced)."""
        missing = [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise RuntimeMissingError(f"--serve runs llama-cpp-python's server, which needs {', '.join(missing)}: "
                                      "pip install 'fitplan[llamacpp]'")
        return ServeCommand([sys.executable, *server_args(target, port=port, host=host)[1:]], target.name)

    def export(self, target: RunTarget, to: str, *, max_tokens: int, port: int) -> str:
        if to == "python":
            return python_code(target, max_tokens)
        if to in ("shell", "llama-server"):
            return shlex.join(server_args(target, port=port, binary=to == "llama-server"))
        raise BadValueError(f"--to {to} does not take a llama.cpp plan; it takes: {', '.join(EXPORTS)}")


def _gguf(target: RunTarget) -> str:
    source = target.weights()
    if source.kind != "gguf":
        raise BadValueError(f"llama.cpp runs GGUF files; the plan's model is a {source.kind} ({source.path})")
    return source.path


def python_code(target: RunTarget, max_tokens: int) -> str:
    from fitplan.strategies.runtimes.llamacpp.session import llama_kwargs

    kwargs = llama_kwargs(target.weights().path, target.setup, layers=target.layers)
    lines = ["import sys", "", "from llama_cpp import Llama", ""]
    draft = ""
    spec = target.setup.speculative
    if spec is not None and spec.used and spec.draft == PROMPT_LOOKUP:
        lines.insert(2, "from llama_cpp.llama_speculative import LlamaPromptLookupDecoding")
        draft = f", draft_model=LlamaPromptLookupDecoding(num_pred_tokens={spec.draft_tokens})"
    lines += [f"llm = Llama(**{kwargs!r}{draft})",
              'prompt = sys.argv[1] if len(sys.argv) > 1 else "Hello"',
              f"for chunk in llm.create_completion(prompt, max_tokens={max_tokens}, temperature=0.0, top_k=1, "
              "repeat_penalty=1.0, stream=True, seed=0):",
              '    print(chunk["choices"][0]["text"], end="", flush=True)',
              "print()", ""]
    return "\n".join(lines)


def server_args(target: RunTarget, *, port: int, host: str = "127.0.0.1", binary: bool = False) -> list[str]:
    """llama-cpp-python's server (`python -m llama_cpp.server`), or with binary=True the upstream
    llama-server's flags (tools/server/README.md): the same settings either way."""
    from fitplan.strategies.runtimes.llamacpp.session import llama_kwargs

    k = llama_kwargs(target.weights().path if not binary else _gguf_name(target), target.setup, layers=target.layers)
    s, spec = target.setup, target.setup.speculative
    lookup = spec is not None and spec.used and spec.draft == PROMPT_LOOKUP
    if not binary:
        if not s.swa_full:
            raise BadValueError("llama_cpp.server keeps the sliding-window cache at full size; the plan has swa_full "
                                "off: serve it with llama-server (fitplan export --to llama-server) or plan with --swa-full on")
        if not s.op_offload:
            raise BadValueError("llama_cpp.server has no --no-op-offload; the plan has op_offload off: serve it with "
                                "llama-server (fitplan export --to llama-server) or plan with --op-offload on")
        args = ["python", "-m", "llama_cpp.server", "--model", k["model_path"], "--n_ctx", str(k["n_ctx"]),
                "--n_batch", str(k["n_batch"]), "--n_gpu_layers", str(k["n_gpu_layers"]), "--n_threads",
                str(k["n_threads"]), "--n_threads_batch", str(k["n_threads_batch"]), "--flash_attn",
                str(k["flash_attn"]), "--type_k", str(k["type_k"]), "--type_v", str(k["type_v"]), "--seed", "0",
                "--verbose", "False"]
        if lookup and spec is not None:
            args += ["--draft_model", "prompt-lookup-decoding", "--draft_model_num_pred_tokens", str(spec.draft_tokens)]
        return [*args, "--host", host, "--port", str(port)]
    args = ["llama-server", "--model", k["model_path"], "--ctx-size", str(k["n_ctx"]), "--batch-size",
            str(k["n_batch"]), "--n-gpu-layers", "all" if k["n_gpu_layers"] == -1 else str(k["n_gpu_layers"]),
            "--threads", str(k["n_threads"]), "--threads-batch", str(k["n_threads_batch"]),
            "--flash-attn", "on" if k["flash_attn"] else "off", "--cache-type-k", s.kv_cache,
            "--cache-type-v", s.kv_cache, "--parallel", str(s.batch), "--seed", "0"]
    if "tensor_split" in k:
        args += ["--tensor-split", ",".join(f"{v:g}" for v in k["tensor_split"])]
    if s.swa_full:
        args.append("--swa-full")
    if not s.op_offload:
        args.append("--no-op-offload")
    if not k["use_mmap"]:
        args.append("--no-mmap")
    if k["use_mlock"]:
        args.append("--mlock")
    if s.cpu_moe_layers:
        args += ["--n-cpu-moe", str(s.cpu_moe_layers)]
    for rule in s.tensor_overrides:
        args += ["--override-tensor", rule]
    return [*args, "--host", host, "--port", str(port)]


def _gguf_name(target: RunTarget) -> str:
    """The GGUF a llama-server command loads: the plan's file, or the name of the file its weights
    source says to make or fetch (a command to copy; the runnable forms need the file on disk)."""
    if target.local is not None:
        return target.local.path
    if target.no_local is not None and not isinstance(target.no_local, BadValueError):
        raise target.no_local  # a damaged file, not one still to be made
    return f"{target.name}-{target.setup.weights}.gguf"
