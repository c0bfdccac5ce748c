"""`fitplan export PLAN --to python|shell|llama-server|vllm`: the plan as code or a command line.

The Python and shell forms are built from the same argument builders the executors use
(`llama_kwargs`, `from_pretrained_kwargs`, `generate_kwargs`), so they load and generate exactly as
`fitplan run` does; the tests run them and compare the first tokens.
"""
from __future__ import annotations

import os
import shlex
from fitplan.advisor.plans.plan_file import PlanFile, local_weights
from fitplan.errors import BadValueError
from fitplan.strategies.speculative import PROMPT_LOOKUP

TARGETS = ("python", "shell", "llama-server", "vllm", "tensorrt-llm")
DEFAULT_PORT = 8000


def export(plan: PlanFile, to: str, *, max_tokens: int = 128, port: int = DEFAULT_PORT) -> str:
    if to not in TARGETS:
        raise BadValueError(f"unknown export target {to!r} (--to); known: {', '.join(TARGETS)}")
    if to in ("vllm", "tensorrt-llm"):
        from fitplan.strategies.registry import executor

        return shlex.join(executor(to).serve_args(plan, port=port, host="127.0.0.1"))
    if plan.plan.runtime == "llama.cpp":
        if to == "python":
            return _llamacpp_python(plan, max_tokens)
        return shlex.join(llama_server_args(plan, port=port, binary=to == "llama-server"))
    if to == "llama-server":
        raise BadValueError(f"--to llama-server takes a llama.cpp plan (GGUF); this plan runs on {plan.plan.runtime}")
    code = _onnx_python(plan, max_tokens) if plan.plan.runtime == "onnxruntime" else _transformers_python(plan, max_tokens)
    return code if to == "python" else f"python - \"${{1:-Hello}}\" <<'PY'\n{code}PY"


def _llamacpp_python(plan: PlanFile, max_tokens: int) -> str:
    from fitplan.strategies.runtimes.llamacpp.cost import llama_kwargs

    kwargs = llama_kwargs(local_weights(plan), plan.plan, layers=plan.model.layers)
    lines = ["import sys", "", "from llama_cpp import Llama", ""]
    draft = ""
    spec = plan.plan.speculative
    if spec is not None and spec.used and spec.draft == PROMPT_LOOKUP:
        lines.insert(2, "from llama_cpp.llama_speculative import LlamaPromptLookupDecoding")
        draft = f", draft_model=LlamaPromptLookupDecoding(num_pred_tokens={spec.draft_tokens})"
    lines += [f"llm = Llama(**{kwargs!r}{draft})",
              'prompt = sys.argv[1] if len(sys.argv) > 1 else "Hello"',
              f"for chunk in llm.create_completion(prompt, max_tokens={max_tokens}, temperature=0.0, top_k=1, repeat_penalty=1.0, "
              "stream=True, seed=0):",
              '    print(chunk["choices"][0]["text"], end="", flush=True)',
              "print()", ""]
    return "\n".join(lines)


def _transformers_python(plan: PlanFile, max_tokens: int) -> str:
    from fitplan.strategies.runtimes.transformers.session import from_pretrained_kwargs, generate_kwargs

    path = local_weights(plan)
    kwargs = from_pretrained_kwargs(plan.plan, layers=plan.model.layers, tied=_tied_source(plan))
    dtype = kwargs.pop("dtype")
    bnb = kwargs.pop("bnb", None)
    where = repr(path)
    if plan.model.source == "gguf" and bnb is not None:  # bitsandbytes loads from safetensors, not a GGUF
        from fitplan.strategies.runtimes.transformers.cost import TransformersExecutor

        where = repr(TransformersExecutor().plan_folder(plan))
    elif plan.model.source == "gguf":  # transformers dequantizes the GGUF itself
        where = f"{os.path.dirname(os.path.abspath(path))!r}, gguf_file={os.path.basename(path)!r}"
    extra = generate_kwargs(plan.plan)
    spec = plan.plan.speculative
    quantized = ""
    if bnb is not None:
        settings = ", ".join(f"{k}=torch.{v}" if k == "bnb_4bit_compute_dtype" else f"{k}={v!r}" for k, v in bnb.items())
        quantized = f"quantization_config=BitsAndBytesConfig({settings}), "
    lines = ["import sys", "", "import torch",
             "from transformers import AutoModelForCausalLM, AutoTokenizer, " + ("BitsAndBytesConfig, " if bnb else "")
             + "TextStreamer", "",
             f"torch.set_num_threads({plan.plan.threads})",
             f"model = AutoModelForCausalLM.from_pretrained({where}, dtype=torch.{dtype}, {quantized}"
             + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ").eval()",
             f"tokenizer = AutoTokenizer.from_pretrained({where})"]
    if spec is not None and spec.used and spec.draft != PROMPT_LOOKUP:
        draft_where = repr(spec.draft) if os.path.isdir(spec.draft) else \
            f"{os.path.dirname(os.path.abspath(spec.draft))!r}, gguf_file={os.path.basename(spec.draft)!r}"
        from fitplan.strategies.runtimes.transformers.cost import TORCH_DTYPES

        draft_map = "auto" if plan.plan.gpus else "cpu"
        lines.append(f"draft = AutoModelForCausalLM.from_pretrained({draft_where}, "
                     f"dtype=torch.{TORCH_DTYPES[spec.draft_weights or plan.plan.weights]}, attn_implementation='sdpa', "
                     f"device_map={draft_map!r}).eval()")
        extra_text = ", assistant_model=draft"
    else:
        extra_text = "".join(f", {k}={v!r}" for k, v in extra.items())
    lines += ['prompt = sys.argv[1] if len(sys.argv) > 1 else "Hello"',
              'inputs = tokenizer(prompt, return_tensors="pt").to(model.device)',
              "with torch.inference_mode():",
              f"    model.generate(**inputs, max_new_tokens={max_tokens}, do_sample=False, "
              f"pad_token_id=tokenizer.eos_token_id, streamer=TextStreamer(tokenizer, skip_prompt=True, "
              f"skip_special_tokens=True){extra_text})", ""]
    return "\n".join(lines)


def _onnx_python(plan: PlanFile, max_tokens: int) -> str:
    """ORTModelForCausalLM over fitplan's cached export (made now if missing) with the plan's threads."""
    from fitplan.strategies.runtimes.onnx.session import GRAPH_OPTIMIZATION, plan_export, providers, session_settings

    folder, onnx_dir = plan_export(plan)
    return "\n".join([
        "import sys", "", "import onnxruntime", "from optimum.onnxruntime import ORTModelForCausalLM",
        "from transformers import AutoTokenizer, TextStreamer", "",
        "options = onnxruntime.SessionOptions()",
        *(f"options.{name} = {value!r}" for name, value in session_settings(plan.plan).items()),
        f"options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.{GRAPH_OPTIMIZATION}",
        f"model = ORTModelForCausalLM.from_pretrained({str(onnx_dir)!r}, provider={providers(plan.plan)[0]!r}, "
        "session_options=options)",
        f"tokenizer = AutoTokenizer.from_pretrained({folder!r})",
        'prompt = sys.argv[1] if len(sys.argv) > 1 else "Hello"',
        'inputs = tokenizer(prompt, return_tensors="pt")',
        f"model.generate(**inputs, max_new_tokens={max_tokens}, do_sample=False, pad_token_id=tokenizer.eos_token_id, "
        "streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))", ""])


def _tied_source(plan: PlanFile) -> bool:
    """Whether the model ties lm_head to the embedding (a device map must keep them together)."""
    from fitplan.advisor.models.resolve import resolve_model

    return resolve_model(plan.model.location).tied_embeddings


def llama_server_args(plan: PlanFile, *, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                      binary: bool = False) -> list[str]:
    """llama-cpp-python's server (`python -m llama_cpp.server`), or with binary=True the upstream
    llama-server's flags (tools/server/README.md): the same settings either way."""
    from fitplan.strategies.runtimes.llamacpp.cost import llama_kwargs

    k = llama_kwargs(local_weights(plan) if not binary else _gguf_path(plan), plan.plan, layers=plan.model.layers)
    s, spec = plan.plan, plan.plan.speculative
    lookup = spec is not None and spec.used and spec.draft == PROMPT_LOOKUP
    if not binary:
        args = ["python", "-m", "llama_cpp.server", "--model", k["model_path"], "--n_ctx", str(k["n_ctx"]),
                "--n_batch", str(k["n_batch"]), "--n_gpu_layers", str(k["n_gpu_layers"]), "--n_threads",
                str(k["n_threads"]), "--n_threads_batch", str(k["n_threads_batch"]), "--flash_attn",
                str(k["flash_attn"]), "--type_k", str(k["type_k"]), "--type_v", str(k["type_v"]), "--seed", "0",
                "--verbose", "False"]
        if lookup:
            args += ["--draft_model", "prompt-lookup-decoding", "--draft_model_num_pred_tokens", str(spec.draft_tokens)]
        return [*args, "--host", host, "--port", str(port)]
    args = ["llama-server", "--model", k["model_path"], "--ctx-size", str(k["n_ctx"]), "--batch-size",
            str(k["n_batch"]), "--n-gpu-layers", "all" if k["n_gpu_layers"] == -1 else str(k["n_gpu_layers"]),
            "--threads", str(k["n_threads"]), "--threads-batch", str(k["n_threads_batch"]),
            "--flash-attn", "on" if k["flash_attn"] else "off", "--cache-type-k", s.kv_cache,
            "--cache-type-v", s.kv_cache, "--parallel", str(s.batch), "--seed", "0"]
    if "tensor_split" in k:
        args += ["--tensor-split", ",".join(f"{v:g}" for v in k["tensor_split"])]
    if not k["use_mmap"]:
        args.append("--no-mmap")
    if k["use_mlock"]:
        args.append("--mlock")
    if s.cpu_moe_layers:
        args += ["--n-cpu-moe", str(s.cpu_moe_layers)]
    for rule in s.tensor_overrides:
        args += ["--override-tensor", rule]
    return [*args, "--host", host, "--port", str(port)]


def _gguf_path(plan: PlanFile) -> str:
    """The GGUF a llama-server command loads: the plan's file, or the name of the file its weights
    source says to make or fetch (a command to copy; the runnable forms need the file on disk)."""
    try:
        return local_weights(plan)
    except BadValueError:
        return f"{plan.model.name}-{plan.plan.weights}.gguf"


def serve_args(plan: PlanFile, *, port: int, host: str, server: str | None = None) -> list[str]:
    """What `fitplan run --serve` starts: the runtime's own OpenAI-compatible server (llama-cpp-python's
    `llama_cpp.server`, `transformers serve` with the plan's model preloaded), or with `server` vLLM or
    TensorRT-LLM, which say in one line when they cannot run here."""
    import sys

    if server in ("vllm", "tensorrt-llm"):
        from fitplan.errors import RuntimeMissingError
        from fitplan.strategies.registry import executor

        runner = executor(server)
        missing = runner.missing()
        if missing:
            raise RuntimeMissingError(missing)
        return runner.serve_args(plan, port=port, host=host)
    if server not in (None, plan.plan.runtime):
        raise BadValueError(f"unknown --server {server!r}; known: the plan's runtime, vllm, tensorrt-llm")
    if plan.plan.runtime == "llama.cpp":
        _require_server_packages()
        return [sys.executable, *llama_server_args(plan, port=port, host=host)[1:]]
    if plan.plan.runtime == "onnxruntime":
        raise BadValueError("--serve has no OpenAI-compatible server to start for ONNX Runtime plans; use fitplan.load "
                            "or `fitplan export --to python`")
    return transformers_serve_args(plan, port=port, host=host)


LLAMA_SERVER_PACKAGES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def _require_server_packages() -> None:
    """llama-cpp-python's server and its [server] extras, checked before this process is replaced by it
    (a missing one would otherwise end in Python's own two-line 'No module named' from runpy)."""
    import importlib.util

    from fitplan.errors import RuntimeMissingError

    missing = [name for name in LLAMA_SERVER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeMissingError(f"--serve runs llama-cpp-python's server, which needs {', '.join(missing)}: "
                                  "pip install 'fitplan[llamacpp]'")


def transformers_serve_args(plan: PlanFile, *, port: int, host: str) -> list[str]:
    from pathlib import Path
    import sys

    from fitplan.strategies.runtimes.transformers.cost import TransformersExecutor
    from fitplan.strategies.runtimes.transformers.session import from_pretrained_kwargs

    s = plan.plan
    if s.disk_layers or s.prune or (s.gpus and s.gpu_layers < plan.model.layers) or \
            (s.speculative is not None and s.speculative.used):
        raise BadValueError("transformers serve loads the whole model on one device, unpruned and without a draft: "
                            "this plan's placement / pruning / speculation is not expressible there; use fitplan.load")
    kwargs = from_pretrained_kwargs(s, layers=plan.model.layers)
    folder = TransformersExecutor().plan_folder(plan)  # a GGUF: the folder it is converted into, as `fitplan run` loads
    args = [str(Path(sys.executable).with_name("transformers")), "serve", folder, "--device",
            "cpu" if kwargs["device_map"] == "cpu" else "auto", "--dtype", kwargs["dtype"],
            "--attn-implementation", kwargs["attn_implementation"]]
    if "bnb" in kwargs:
        args += ["--quantization", "bnb-8bit" if kwargs["bnb"].get("load_in_8bit") else "bnb-4bit"]
    return [*args, "--host", host, "--port", str(port)]
