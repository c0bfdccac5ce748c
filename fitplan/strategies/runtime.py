"""The runtimes: their cost models by the name plans use, and the runtime strategy's options."""
from __future__ import annotations

from types import ModuleType

from fitplan.errors import BadValueError
from fitplan.strategies.runtimes.llamacpp import cost as runtime_llamacpp
from fitplan.strategies.runtimes.onnx import cost as runtime_onnx
from fitplan.strategies.runtimes.transformers import cost as runtime_transformers
from fitplan.strategies.strategy import TableStrategy, table_options

_MODELS: dict[str, ModuleType] = {"llama.cpp": runtime_llamacpp, "transformers": runtime_transformers,
                                  "onnxruntime": runtime_onnx}


def runtime_model(name: str) -> ModuleType:
    """The module with `place`, `layer_device` and `memory` for runtime `name`."""
    if name not in _MODELS:
        raise BadValueError(f"no cost model for runtime {name!r}; known: {', '.join(_MODELS)}")
    return _MODELS[name]


STRATEGY = TableStrategy("runtime", "llama.cpp, transformers (+accelerate), vLLM for multi-GPU / multi-node",
                         lambda: table_options("runtime", "runtime"))
