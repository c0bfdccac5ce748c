"""fitplan's own implementations of the hooks in hookspecs.py.

Plain functions, so that finding the built-ins costs no pluggy import; the registry marks them as
hook implementations when it builds a plugin manager for installed plugins.
"""
from __future__ import annotations

from typing import Any, Callable


def fitplan_register_strategies(register: Callable[[Any], None]) -> None:
    from fitplan.strategies import (attention, batching, kv_cache, offload, pruning, quantization, runtimes,
                                    speculative)

    for module in (quantization, offload, pruning, attention, speculative, kv_cache, batching, runtimes):
        register(module.STRATEGY)


def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    from fitplan.strategies.runtime_llamacpp import LlamaCppExecutor
    from fitplan.strategies.runtime_onnx import OnnxRuntimeExecutor
    from fitplan.strategies.runtime_server import TensorRTLLMExecutor, VllmExecutor
    from fitplan.strategies.runtime_transformers import TransformersExecutor

    register(LlamaCppExecutor())
    register(TransformersExecutor())
    register(OnnxRuntimeExecutor())
    register(VllmExecutor())
    register(TensorRTLLMExecutor())
