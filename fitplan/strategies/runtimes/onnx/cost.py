"""ONNX Runtime's cost model: a model exported with optimum, run by onnxruntime.

Memory is laid out as transformers lays it out (the same weights in fp32, the same KV cache of
past_key_values tensors, activations of one block's forward); only the process constants differ,
measured in the ONNX environment (data/runtimes.toml [onnxruntime]).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, WeightBytes
from fitplan.strategies.runtimes.contract import SPLIT, ModuleCostModel
from fitplan.strategies.runtimes.transformers import cost as runtime_transformers

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.strategies.quantization import WeightFormat

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
    from fitplan.strategies.quantization import is_dynamic_int8

    devices = runtime_transformers.memory(spec, setup.with_(weights="fp32"), weights, prompt_tokens)
    c = constants()
    devices["cpu"].overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"]
    devices["cpu"].load_transient = 0
    if spec.tied_embeddings and is_dynamic_int8(setup.weights, RUNTIME):  # the head reads the uint8 table through Transpose +
        head = next(t for t, _ in weights if t.role == "embed")  # DequantizeLinear: an fp32 copy of it
        devices[runtime_transformers.head_device(spec, setup)].weights += head.numel * 4
    return devices


def default_kv_cache(fmt: WeightFormat, hw: HardwareSpec, gpu_layers: int) -> str:
    return "f32"  # the export's past_key_values hold the fp32 compute dtype


def flash_attn(wanted: bool | None, kv_cache: str, hw: HardwareSpec, all_on_gpu: bool) -> bool:
    return False  # the exported graph's attention is what optimum wrote


def flash_attn_unmet(hw: HardwareSpec) -> str:
    return ""


def refuse(setup: Setup) -> str:
    return ""


# this runtime's CostModel (strategies/runtimes/contract.py): the functions above
# the blocks split over GPU and CPU as transformers' would be (its layout); ORT's CUDA provider placing
# them so is not measured yet
COST_MODEL = ModuleCostModel(sys.modules[__name__], aliases=("onnx", "ort"), features=frozenset({SPLIT}),
                             preallocates_kv=False)
