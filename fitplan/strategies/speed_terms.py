"""What a runtime's kernels get of a GPU's spec sheet, per backend and architecture generation.

The roofline gives a device's ceilings (spec-sheet bandwidth and dense FLOP/s); these terms say how a
runtime's kernels fall short of them, so that a GPU with no measurement of its own is predicted from
its spec sheet and its generation's terms. Each term multiplies one cost, so a step's time is a sum
of features x terms (linear in the terms, which is how bench/published.py fits them on published
llama-bench results):

  decode step  = sum over devices of  weight bytes / bandwidth x weight_read[type class]
                                     + KV bytes read / bandwidth x kv_read
                                     + layers x layer_step_s          (kernel launches, syncs)
                 + device switches x hop_s + token_s                  (graph build, sampling)
  prefill chunk = matmul FLOPs / kernel FLOP/s x matmul[type class]       (kernel_tflops: the FP16-
                 + attention FLOPs / kernel FLOP/s x attention            accumulate rate, not fp16_tflops)
                 + attention score bytes / bandwidth x scores (without flash attention)
                 + weight bytes / bandwidth x weight_read + layers x layer_ubatch_s
                 (the FLOP terms at least FLOPs x joules_per_flop / board power: a long GEMM runs at the
                 power limit, which is why a 300 W RTX 6000 Ada prefills slower than a 450 W RTX 4090
                 built on the same chip)

Terms are keyed by (runtime, backend, generation) in data/speed_terms.toml, never by a GPU's name;
a generation without a row of its own takes its backend's "*" row, and a backend without any is
predicted by the spec sheet alone (speed_defaults in runtimes.toml).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fitplan.hardware_spec import GPUSpec

TYPE_CLASSES = ("float", "legacy", "kquant", "iquant")


@dataclass(frozen=True)
class SpeedTerms:
    key: str  # "llama.cpp/CUDA/ada"
    weight_read: Mapping[str, float]  # 1 / the share of spec bandwidth weight reads get, per type class
    kv_read: float
    layer_step_s: float
    hop_s: float
    token_s: float
    matmul: Mapping[str, float]  # 1 / the share of spec FLOP/s prefill matmuls get, per type class
    attention: float
    scores: float
    layer_ubatch_s: float
    joules_per_flop: Mapping[str, float]  # energy per prompt matmul FLOP, per type class (dequantizing costs
    # energy too): with the board's power limit, a ceiling on the prompt rate
    provenance: str  # "calibrated (published: N points, held-out p10-p90 a-b)"

    def read(self, type_class: str) -> float:
        return self.weight_read.get(type_class) or self.weight_read["kquant"]

    def mm(self, type_class: str) -> float:
        return self.matmul.get(type_class) or self.matmul["kquant"]

    def energy(self, type_class: str) -> float:
        return self.joules_per_flop.get(type_class) or self.joules_per_flop.get("kquant", 0.0)


def type_class(weights: str) -> str:
    """The kernel family of a weight type: dequantization costs differ between them."""
    name = weights.upper()
    if name in ("F16", "BF16", "F32", "FP16", "FP32") or name.startswith(("F16", "BF16")):
        return "float"
    if name.startswith("IQ"):
        return "iquant"
    if re.match(r"^Q\d_K", name) or name.startswith("TQ"):
        return "kquant"
    if re.match(r"^Q\d_\d|^Q\d_0|^MXFP4", name):
        return "legacy"
    return "kquant"


def backend(gpu: GPUSpec) -> str:
    """The profile's backend (the vendor's own unless it names another, e.g. Vulkan on an AMD card)."""
    return gpu.backend


def generation(gpu: GPUSpec) -> str:
    """An architecture generation: the compute capability (NVIDIA: sm80 A100 and sm86 GeForce Ampere differ
    in memory and kernels) or the chip family (Apple M1-M5)."""
    if gpu.vendor.lower() == "nvidia" and gpu.compute_capability:
        return f"sm{gpu.compute_capability.replace('.', '')}"
    if gpu.vendor.lower() == "apple":
        m = re.search(r"\bM(\d)\b", gpu.name)
        return f"m{m[1]}" if m else "*"
    return "*"


def kernel_tflops(gpu: GPUSpec) -> float | None:
    """The dense tensor rate the fitted matmul terms are relative to: FP16 inputs with FP16
    accumulation, half the dense int8 rate on NVIDIA Turing and later. llama.cpp multiplies F16 and
    dequantized weights by cuBLAS with CUBLAS_COMPUTE_16F (ggml_cuda_op_mul_mat_cublas) and quantized
    ones by int8 MMA: GeForce and professional cards of one chip run these alike, where fp16_tflops
    (FP32 accumulate, half rate on GeForce) ranks an RTX A6000 twice an RTX 3090."""
    if gpu.vendor.lower() == "nvidia" and gpu.int8_tops and gpu.compute_capability:
        major, _, minor = gpu.compute_capability.partition(".")
        if (int(major), int(minor or 0)) >= (7, 5):
            return gpu.int8_tops / 2
    return gpu.fp16_tflops


def terms_for(runtime: str, gpu: GPUSpec) -> SpeedTerms | None:
    """The fitted terms for `gpu` under `runtime`: its generation's row, else its backend's, else None."""
    rows = _rows()
    kind = backend(gpu)
    for key in (f"{runtime}/{kind}/{generation(gpu)}", f"{runtime}/{kind}/*"):
        if key in rows:
            return rows[key]
    return None


@cache
def _rows() -> dict[str, SpeedTerms]:
    from fitplan.datafiles import load_table

    table = load_table("fitplan.strategies.data", "speed_terms.toml")
    return {f"{r['runtime']}/{r['backend']}/{r['generation']}": _terms(r) for r in table.get("terms", [])}


def _terms(row: Mapping[str, Any]) -> SpeedTerms:
    key = f"{row['runtime']}/{row['backend']}/{row['generation']}"
    return SpeedTerms(key, dict(row["weight_read"]), row["kv_read"], row["layer_step_s"], row["hop_s"], row["token_s"],
                      dict(row["matmul"]), row["attention"], row["scores"], row["layer_ubatch_s"],
                      dict(row.get("joules_per_flop", {})), row["provenance"])
