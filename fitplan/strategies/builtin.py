"""fitplan's own implementations of the hooks in hookspecs.py.

Plain functions, so that finding the built-ins costs no pluggy import; the registry marks them as
hook implementations when it builds a plugin manager for installed plugins.
"""
from __future__ import annotations

from typing import Any, Callable


def fitplan_register_strategies(register: Callable[[Any], None]) -> None:
    from fitplan.strategies import (attention, batching, kv_cache, offload, pruning, quantization, runtime,
                                    speculative)

    for module in (quantization, offload, pruning, attention, speculative, kv_cache, batching, runtime):
        register(module.STRATEGY)


def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    from fitplan.strategies.runtimes.llamacpp.cost import LlamaCppExecutor
    from fitplan.strategies.runtimes.onnx.cost import OnnxRuntimeExecutor
    from fitplan.strategies.runtimes.servers import TensorRTLLMExecutor, VllmExecutor
    from fitplan.strategies.runtimes.transformers.cost import TransformersExecutor

    register(LlamaCppExecutor())
    register(TransformersExecutor())
    register(OnnxRuntimeExecutor())
    register(VllmExecutor())
    register(TensorRTLLMExecutor())
