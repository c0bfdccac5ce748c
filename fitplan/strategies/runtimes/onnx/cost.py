"""ONNX Runtime's cost model and executor: a model exported with optimum, run by onnxruntime.

Memory is laid out as transformers lays it out (the same weights in fp32, the same KV cache of
past_key_values tensors, activations of one block's forward); only the process constants differ,
measured in the ONNX environment (data/runtimes.toml [onnxruntime]).
"""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

from fitplan.datafiles import load_table
from fitplan.errors import BadValueError
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, WeightBytes
from fitplan.strategies.runtimes.transformers import cost as runtime_transformers

RUNTIME = "onnxruntime"


def constants() -> dict[str, int]:
    return load_table("fitplan.strategies.data", "runtimes.toml")["onnxruntime"]


def layer_device(spec: ModelSpec, setup: Setup, layer: int) -> str:
    return runtime_transformers.layer_device(spec, setup, layer)


def place(spec: ModelSpec, setup: Setup, weights: WeightBytes) -> dict[str, list[tuple[TensorInfo, int]]]:
    return runtime_transformers.place(spec, setup, weights)


def memory(spec: ModelSpec, setup: Setup, weights: WeightBytes, prompt_tokens: int | None = None
           ) -> dict[str, DeviceMemory]:
    """transformers' layout with onnxruntime's process constants; no dtype conversion at load (the
    export holds the plan's dtype)."""
    devices = runtime_transformers.memory(spec, replace(setup, weights="fp32"), weights, prompt_tokens)
    c = constants()
    devices["cpu"].overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"]
    devices["cpu"].load_transient = 0
    return devices


class OnnxRuntimeExecutor:
    """Exports the model with optimum once, then generates with onnxruntime."""

    name = RUNTIME

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

    def open(self, source: Any, setup: Any, *, layers: int) -> Any:
        raise BadValueError("fitplan verify does not run ONNX Runtime plans yet; use fitplan run")

    def session(self, plan: Any) -> Any:
        from fitplan.strategies.runtimes.onnx.session import OnnxSession, plan_export

        folder, onnx_dir = plan_export(plan)
        return OnnxSession(folder, str(onnx_dir), plan.plan)
