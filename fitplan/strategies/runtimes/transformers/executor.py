"""transformers' Executor (strategies/runtimes/contract.py): loads a safetensors folder (or a GGUF
converted once into one), serves it with `transformers serve`, and writes a plan as a script.

The script and the session are built from the same `from_pretrained_kwargs` and `generate_kwargs`,
so they load and generate alike (the tests run both and compare the first tokens).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fitplan.atomic_file import replace_folder
from fitplan.cachedir import cache_dir
from fitplan.errors import BadValueError
from fitplan.plan_spec import ModelSource, RunTarget, Setup
from fitplan.strategies.runtimes.contract import ServeCommand
from fitplan.strategies.runtimes.transformers.cost import RUNTIME, TORCH_DTYPES
from fitplan.strategies.speculative import PROMPT_LOOKUP
from fitplan.user_files import weights_fingerprint

if TYPE_CHECKING:  # the session module is imported when a model is opened, not when advise starts
    from fitplan.strategies.runtimes.transformers.session import TransformersModel, TransformersSession

EXPORTS = ("python", "shell")
DYNAMIC_INT8 = "int8-dynamic"  # formats.toml: quantized after loading (session.quantize_dynamic_int8)


class TransformersExecutor:
    """Loads a safetensors folder (or a GGUF converted once into one)."""

    name = RUNTIME
    exports = EXPORTS

    def missing(self) -> str | None:
        for package in ("torch", "transformers"):
            if importlib.util.find_spec(package) is None:
                return f"{package} is not installed: pip install 'fitplan[torch]'"
        return None

    def prepare(self, source: ModelSource) -> ModelSource:
        """A folder transformers can load quickly: GGUF files are dequantized once and cached."""
        if source.kind == "folder":
            return source
        folder = cache_dir("converted", weights_fingerprint(source.path).partition(":")[2][:16])
        if not ((folder / "config.json").is_file() and any(folder.glob("*.safetensors"))):
            replace_folder(folder, lambda staging: convert_gguf(source.path, staging))
        return ModelSource("folder", str(folder))

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> TransformersModel:
        from fitplan.strategies.quantization import is_dynamic_int8

        dynamic = is_dynamic_int8(setup.weights, RUNTIME)
        if setup.weights not in TORCH_DTYPES and not dynamic:
            raise BadValueError(f"the transformers executor times fp32/bf16/fp16/{DYNAMIC_INT8} plans here, "
                                f"not {setup.weights}")
        if source.kind != "folder":
            raise BadValueError(f"transformers needs a prepared folder, got {source.path}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from fitplan.strategies.runtimes.transformers.session import TransformersModel, quantize_dynamic_int8

        torch.set_num_threads(setup.threads)
        device_map = "auto" if setup.gpus and setup.gpu_layers else "cpu"
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=torch.float32 if dynamic else getattr(torch, TORCH_DTYPES[setup.weights]),
            attn_implementation="sdpa", device_map=device_map,
        )
        model.eval()
        if dynamic:
            quantize_dynamic_int8(model)
        return TransformersModel(model, AutoTokenizer.from_pretrained(source.path))

    def folder(self, target: RunTarget) -> str:
        """The safetensors folder a plan's model loads from: its own folder, or its GGUF converted once."""
        return self.prepare(target.weights()).path

    def session(self, target: RunTarget) -> TransformersSession:
        """A GGUF is dequantized once into a cached folder, as for verify; a draft model likewise."""
        from fitplan.strategies.runtimes.transformers.session import TransformersSession

        folder = self.folder(target)
        draft, draft_folder = target.setup.speculative, None
        if draft is not None and draft.used and draft.draft != PROMPT_LOOKUP:
            if not os.path.exists(draft.draft):
                raise BadValueError(f"the plan's draft {draft.draft} is not a local file or folder")
            kind = "folder" if os.path.isdir(draft.draft) else "gguf"
            draft_folder = self.prepare(ModelSource(kind, draft.draft)).path
        return TransformersSession(folder, target.setup, layers=target.layers, draft_folder=draft_folder,
                                   draft_weights=draft.draft_weights if draft is not None else None)

    def serve(self, target: RunTarget, *, port: int, host: str) -> ServeCommand:
        """`transformers serve` with the plan's model preloaded; it answers to the folder it loaded."""
        s = target.setup
        if s.disk_layers or s.prune or (s.gpus and s.gpu_layers < target.layers) or \
                (s.speculative is not None and s.speculative.used):
            raise BadValueError("transformers serve loads the whole model on one device, unpruned and without a draft: "
                                "this plan's placement / pruning / speculation is not expressible there; use fitplan.load")
        from fitplan.strategies.runtimes.transformers.session import from_pretrained_kwargs

        kwargs = from_pretrained_kwargs(s, layers=target.layers)
        if kwargs.get("dynamic_int8"):
            raise BadValueError(f"transformers serve has no {DYNAMIC_INT8} option: use fitplan run, or fitplan.load")
        folder = self.folder(target)  # a GGUF: the folder it is converted into, as `fitplan run` loads
        args = [str(Path(sys.executable).with_name("transformers")), "serve", folder, "--device",
                "cpu" if kwargs["device_map"] == "cpu" else "auto", "--dtype", kwargs["dtype"],
                "--attn-implementation", kwargs["attn_implementation"]]
        if "bnb" in kwargs:
            args += ["--quantization", "bnb-8bit" if kwargs["bnb"].get("load_in_8bit") else "bnb-4bit"]
        return ServeCommand([*args, "--host", host, "--port", str(port)], folder)

    def export(self, target: RunTarget, to: str, *, max_tokens: int, port: int) -> str:
        if to not in EXPORTS:
            raise BadValueError(f"--to {to} takes a llama.cpp plan (GGUF); this plan runs on {RUNTIME}")
        code = python_code(target, max_tokens, self)
        return code if to == "python" else shell_heredoc(code)


def shell_heredoc(code: str) -> str:
    """A script as a shell command: `python -` reading it from a here-document, the prompt as $1."""
    return f"python - \"${{1:-Hello}}\" <<'PY'\n{code}PY"


def python_code(target: RunTarget, max_tokens: int, executor: TransformersExecutor) -> str:
    from fitplan.strategies.runtimes.transformers.session import (
        DYNAMIC_INT8_CODE,
        from_pretrained_kwargs,
        generate_kwargs,
    )

    path = target.weights().path
    kwargs = from_pretrained_kwargs(target.setup, layers=target.layers, tied=_tied_source(target))
    dtype = kwargs.pop("dtype")
    bnb = kwargs.pop("bnb", None)
    dynamic = kwargs.pop("dynamic_int8", False)
    where = repr(path)
    if target.source == "gguf" and bnb is not None:  # bitsandbytes loads from safetensors, not a GGUF
        where = repr(executor.folder(target))
    elif target.source == "gguf":  # transformers dequantizes the GGUF itself
        where = f"{os.path.dirname(os.path.abspath(path))!r}, gguf_file={os.path.basename(path)!r}"
    extra = generate_kwargs(target.setup)
    spec = target.setup.speculative
    quantized = ""
    if bnb is not None:
        settings = ", ".join(f"{k}=torch.{v}" if k == "bnb_4bit_compute_dtype" else f"{k}={v!r}" for k, v in bnb.items())
        quantized = f"quantization_config=BitsAndBytesConfig({settings}), "
    lines = ["import sys", "", "import torch",
             "from transformers import AutoModelForCausalLM, AutoTokenizer, " + ("BitsAndBytesConfig, " if bnb else "")
             + "TextStreamer", "",
             f"torch.set_num_threads({target.setup.threads})",
             f"model = AutoModelForCausalLM.from_pretrained({where}, dtype=torch.{dtype}, {quantized}"
             + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ").eval()",
             *(DYNAMIC_INT8_CODE if dynamic else ()),
             f"tokenizer = AutoTokenizer.from_pretrained({where})"]
    if spec is not None and spec.used and spec.draft != PROMPT_LOOKUP:
        draft_where = repr(spec.draft) if os.path.isdir(spec.draft) else \
            f"{os.path.dirname(os.path.abspath(spec.draft))!r}, gguf_file={os.path.basename(spec.draft)!r}"
        draft_map = "auto" if target.setup.gpus else "cpu"
        draft_dtype = TORCH_DTYPES.get(spec.draft_weights or target.setup.weights, "float32")
        lines.append(f"draft = AutoModelForCausalLM.from_pretrained({draft_where}, dtype=torch.{draft_dtype}, "
                     f"attn_implementation='sdpa', device_map={draft_map!r}).eval()")
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


def _tied_source(target: RunTarget) -> bool:
    """Whether the model ties lm_head to the embedding (a device map must keep them together)."""
    from fitplan.advisor.models.resolve import resolve_model

    return resolve_model(target.location).tied_embeddings


def convert_gguf(path: str, folder: Path) -> None:
    """Dequantize a GGUF with transformers' own loader and save it as safetensors into `folder`.

    transformers refuses save_pretrained on a GGUF-loaded model until its quantizer and
    quantization_config are dropped (docs/evidence.md, "transformers and GGUF files").
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(os.path.abspath(path))
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(folder)
