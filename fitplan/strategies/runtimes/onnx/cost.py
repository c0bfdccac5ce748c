"""ONNX Runtime's cost model: a model exported with optimum, run by onnxruntime.

Memory is laid out as transformers lays it out (the same weights in fp32, the same KV cache of
past_key_values tensors, activations of one block's forward); only the process constants differ,
measured in the ONNX environment (data/runtimes.toml [onnxruntime]).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import DeviceMemory, Setup, WeightBytes
from fitplan.strategies.kv_cache import offered_kv_types
from fitplan.strategies.runtimes.contract import SPLIT
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
    devices = runtime_transformers.memory(spec, setup.with_(weights="fp32"), weights, prompt_tokens)
    c = constants()
    devices["cpu"].overhead = c["cpu_process_baseline_bytes"] + c["cpu_context_fixed_bytes"]
    devices["cpu"].load_transient = 0
    return devices


def default_kv_cache(fmt: WeightFormat, hw: HardwareSpec, gpu_layers: int) -> str:
    return "f32"  # the export's past_key_values hold the fp32 compute dtype


def flash_attn(wanted: bool | None, kv_cache: str, hw: HardwareSpec, all_on_gpu: bool) -> bool:
    return False  # the exported graph's attention is what optimum wrote


def flash_attn_unmet(hw: HardwareSpec) -> str:
    return ""


def refuse(setup: Setup) -> str:
    return ""


class OnnxRuntimeCost:
    """ONNX Runtime's CostModel (strategies/runtimes/contract.py): the functions of this module."""

    name = RUNTIME
    aliases = ("onnx", "ort")
    # the blocks split over GPU and CPU as transformers' would be (its layout); ORT's CUDA provider placing
    # them so is not measured yet
    features = frozenset({SPLIT})
    preallocates_kv = False  # the KV cache grows with the tokens of a run
    smaller_kv_cache = ""
    formats: Mapping[str, Mapping[str, Any]] = {}  # its formats are formats.toml's onnx-* rows
    strategy_row: Mapping[str, Any] = {}  # its option is strategies.toml's [runtime.onnxruntime]

    @property
    def kv_cache_types(self) -> tuple[str, ...]:
        return offered_kv_types(RUNTIME)

    constants = staticmethod(constants)
    layer_device = staticmethod(layer_device)
    place = staticmethod(place)
    memory = staticmethod(memory)
    default_kv_cache = staticmethod(default_kv_cache)
    flash_attn = staticmethod(flash_attn)
    flash_attn_unmet = staticmethod(flash_attn_unmet)
    refuse = staticmethod(refuse)


COST_MODEL = OnnxRuntimeCost()
