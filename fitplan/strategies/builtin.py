"""fitplan's own implementations of the hooks in hookspecs.py.

Plain functions, so that finding the built-ins costs no pluggy import; the registry marks them as
hook implementations when it builds a plugin manager for installed plugins.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def fitplan_register_strategies(register: Callable[[Any], None]) -> None:
    from fitplan.strategies import (
        attention,
        batching,
        kv_cache,
        offload,
        pruning,
        quantization,
        runtime,
        speculative,
    )

    for module in (quantization, offload, pruning, attention, speculative, kv_cache, batching, runtime):
        register(module.STRATEGY)


def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    """Each runtime's cost model (what advise plans with) and executor (what runs the plan)."""
    register_cost_models(register)
    register_executors(register)


def register_cost_models(register: Callable[[Any], None]) -> None:
    from fitplan.strategies.runtimes.llamacpp.cost import COST_MODEL as LLAMACPP
    from fitplan.strategies.runtimes.onnx.cost import COST_MODEL as ONNX
    from fitplan.strategies.runtimes.transformers.cost import COST_MODEL as TRANSFORMERS

    for item in (LLAMACPP, TRANSFORMERS, ONNX):
        register(item)


def register_executors(register: Callable[[Any], None]) -> None:
    from fitplan.strategies.runtimes.llamacpp.executor import LlamaCppExecutor
    from fitplan.strategies.runtimes.onnx.executor import OnnxRuntimeExecutor
    from fitplan.strategies.runtimes.tensorrt_llm.executor import TensorRTLLMExecutor
    from fitplan.strategies.runtimes.transformers.executor import TransformersExecutor
    from fitplan.strategies.runtimes.vllm.executor import VllmExecutor

    for item in (LlamaCppExecutor(), TransformersExecutor(), OnnxRuntimeExecutor(), VllmExecutor(), TensorRTLLMExecutor()):
        register(item)


# the parts of the runtime hook the registry may ask for alone (no plugin installed)
PARTS = {"cost models": register_cost_models, "executors": register_executors}
