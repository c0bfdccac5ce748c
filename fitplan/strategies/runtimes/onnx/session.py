"""Generating text from a plan with ONNX Runtime: the model exported once with optimum's exporter
(`text-generation-with-past`: decoding reuses the KV cache), cached under the fitplan cache keyed by
the source's fingerprint, and run by optimum's ORTModelForCausalLM with the plan's threads and
provider (CPU, CUDA, or TensorRT where the plan asks and onnxruntime-gpu offers it).

optimum-onnx 0.1.0 requires transformers < 4.58: this path lives in its own environment
(pip install 'fitplan[onnx]' in a separate venv); nothing here is imported by the other runtimes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fitplan.atomic_file import replace_folder
from fitplan.plan_spec import RunTarget, Setup
from fitplan.strategies.runtimes.transformers.executor import TransformersExecutor
from fitplan.strategies.runtimes.transformers.session import GenerateSession
from fitplan.user_files import weights_fingerprint

EXPORT_TASK = "text-generation-with-past"


def providers(setup: Setup) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if setup.gpus else ["CPUExecutionProvider"]


def exported(folder: str, fingerprint: str) -> Path:
    """The ONNX export of a safetensors folder, made once (atomically) and reused while the source's
    fingerprint and the exporter's version are unchanged."""
    from importlib.metadata import version

    from fitplan.cachedir import cache_dir

    stamp = {"source": fingerprint, "optimum-onnx": version("optimum-onnx"), "task": EXPORT_TASK}
    target = cache_dir("onnx") / fingerprint.replace(":", "-")[-32:]
    stamp_file = target / "fitplan-export.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return target
    from optimum.exporters.onnx import main_export

    def build(staging: Path) -> None:
        main_export(folder, output=staging, task=EXPORT_TASK, device="cpu")
        (staging / "fitplan-export.json").write_text(json.dumps(stamp))

    replace_folder(target, build)
    return target


def quantized(export: Path) -> Path:
    """The int8 copy of an fp32 export (onnx-int8): onnxruntime's quantize_dynamic, every MatMul weight
    int8 with one scale per output channel and the embedding's Gather uint8; made once, atomically, beside
    the export and keyed by it and onnxruntime's version."""
    import onnxruntime

    stamp = {"export": json.loads((export / "fitplan-export.json").read_text()), "onnxruntime": onnxruntime.__version__,
             "quantize_dynamic": {"per_channel": True, "weight_type": "QInt8"}}
    target = export.with_name(export.name + "-int8")
    stamp_file = target / "fitplan-export.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def build(staging: Path) -> None:
        for item in export.iterdir():  # the configs beside the graph; the graph itself is rewritten
            if item.is_file() and not item.name.startswith(("model.onnx", "fitplan-")):
                shutil.copy2(item, staging / item.name)
        large = sum(f.stat().st_size for f in export.iterdir()) > 2**31 - 2**27  # protobuf's 2 GB limit, less a margin
        quantize_dynamic(export / "model.onnx", staging / "model.onnx", per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=large)
        (staging / "fitplan-export.json").write_text(json.dumps(stamp))

    replace_folder(target, build)
    return target


def plan_export(target: RunTarget) -> tuple[str, Path]:
    """(the safetensors folder, the ONNX graph the plan runs) of a plan's model, each made once and cached:
    the fp32 export, or its int8 copy for an onnx-int8 plan."""
    from fitplan.strategies.quantization import is_dynamic_int8

    folder = TransformersExecutor().folder(target)
    export = exported(folder, target.fingerprint or weights_fingerprint(target.weights().path))
    if is_dynamic_int8(target.setup.weights, "onnxruntime"):
        return folder, quantized(export)
    return folder, export


GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


def session_settings(setup: Setup) -> dict[str, int]:
    """The SessionOptions attributes a plan sets (the session and the exported code share them)."""
    return {"intra_op_num_threads": setup.threads, "inter_op_num_threads": 1}


def session_options(setup: Setup) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    for name, value in session_settings(setup).items():
        setattr(options, name, value)
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, GRAPH_OPTIMIZATION)
    return options


class OnnxSession(GenerateSession):
    def __init__(self, folder: str, onnx_dir: str, setup: Setup) -> None:
        from optimum.onnxruntime import ORTModelForCausalLM
        from transformers import AutoTokenizer

        self.model = ORTModelForCausalLM.from_pretrained(onnx_dir, provider=providers(setup)[0],
                                                         session_options=session_options(setup))
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.extra = {}
