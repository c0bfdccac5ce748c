"""The speed model: roofline estimates per device, calibrated by probes where the user ran them.

decode, per step: each device takes max(bytes it reads / bandwidth, FLOPs / matmul rate); devices
holding layers run one after another, so their times add. Bytes read = the active weights on the
device (a routed expert counts k/n) + the KV cache read at the current position. prefill of P
tokens: the same per device with P x the FLOPs (plus attention's P^2 term) and the weights read
once per n_ubatch chunk. TTFT = prefill + one decode step. Efficiencies scale the device rates:
defaults from runtimes.toml ("estimated"), or fitted to a real run of this model on this machine
("calibrated"); `fitplan verify` gives "measured".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import Setup, WeightBytes

if TYPE_CHECKING:
    from fitplan.hardware_spec import GPUSpec, HardwareSpec
    from fitplan.profiles.probes import MachineProbes


@dataclass(frozen=True)
class DeviceRates:
    """What one device sustains for this plan (threads considered), before efficiency."""

    bandwidth_GB_per_s: float
    matmul_GFLOP_per_s: float  # matrix-matrix; a matrix-vector product is bandwidth-bound instead
    source: str  # "probe", "spec sheet", "assumed"


@dataclass(frozen=True)
class Efficiency:
    decode: float
    prefill: float
    provenance: str  # "estimated" | "calibrated"


@dataclass(frozen=True)
class SpeedPrediction:
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    ttft_s: float
    batch_tokens_per_s: float
    provenance: str
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return {"decode_tokens_per_s": round(self.decode_tokens_per_s, 3),
                "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 3), "ttft_s": round(self.ttft_s, 4),
                "batch_tokens_per_s": round(self.batch_tokens_per_s, 3)}


Placement = dict[str, list[tuple[TensorInfo, int]]]


def _reads(spec: ModelSpec, placed: Placement, batch: int) -> dict[str, tuple[float, float]]:
    """(weight bytes read, weight FLOPs) per device for one decode step of `batch` sequences."""
    has_output = any(t.role == "output" for items in placed.values() for t, _ in items)
    out: dict[str, tuple[float, float]] = {}
    for device, items in placed.items():
        nbytes = flops = 0.0
        for tensor, size in items:
            if tensor.role == "embed" and (has_output or not spec.tied_embeddings):
                continue  # an input embedding is a row lookup: negligible reads, no FLOPs
            if tensor.experts:  # chance that a given expert serves at least one of the batch's tokens
                share = 1 - (1 - spec.experts_per_token / tensor.experts) ** batch
                nbytes += size * share
                flops += 2 * tensor.numel * spec.experts_per_token / tensor.experts * batch
            else:
                nbytes += size
                flops += 2 * tensor.numel * batch if tensor.is_matrix else 0
        out[device] = (nbytes, flops)
    return out


def _attention(spec: ModelSpec, layers: int, position: int, kv_bytes_per_token_layer: float) -> tuple[float, float]:
    """(KV bytes read, attention FLOPs) for one token at `position`, over `layers` layers."""
    flops = 4 * position * spec.heads * spec.head_dim * layers  # QK^T and AV
    return kv_bytes_per_token_layer * position * layers, flops


def predict_speed(
    spec: ModelSpec, setup: Setup, placed: Placement, layer_device: Callable[[int], str],
    kv_bytes_per_token_layer: float, rates: dict[str, DeviceRates], efficiency: Efficiency,
    *, prompt_tokens: int, ubatch: int = 512,
) -> SpeedPrediction:
    """Decode, prefill, TTFT and batch throughput of a plan (batch = setup.batch for the last)."""
    devices_of_layers = [layer_device(i) for i in range(spec.layers)]
    layers_on = {d: devices_of_layers.count(d) for d in placed}
    single = _reads(spec, placed, 1)  # decode and prefill of one sequence share these

    def step_seconds(batch: int, position: int) -> float:
        total = 0.0
        for device, (nbytes, flops) in (single if batch == 1 else _reads(spec, placed, batch)).items():
            kv_bytes, attn_flops = _attention(spec, layers_on[device], position, kv_bytes_per_token_layer)
            rate = rates[device]
            memory_s = (nbytes + kv_bytes * batch) / (rate.bandwidth_GB_per_s * 1e9 * efficiency.decode)
            compute_s = (flops + attn_flops * batch) / (rate.matmul_GFLOP_per_s * 1e9 * efficiency.decode)
            total += max(memory_s, compute_s)
        return total

    def prefill_seconds(tokens: int) -> float:
        chunks = -(-tokens // ubatch)
        total = 0.0
        for device, (nbytes, flops) in single.items():
            _, attn_flops = _attention(spec, layers_on[device], tokens // 2, 0)
            rate = rates[device]
            compute_s = (flops * tokens + attn_flops * tokens) / (rate.matmul_GFLOP_per_s * 1e9 * efficiency.prefill)
            memory_s = nbytes * chunks / (rate.bandwidth_GB_per_s * 1e9 * efficiency.prefill)
            total += max(compute_s, memory_s)
        return total

    position = prompt_tokens + 64  # a typical point of a short answer
    decode = 1 / step_seconds(1, position)
    prefill_s = prefill_seconds(prompt_tokens)
    batch = decode if setup.batch == 1 else setup.batch / step_seconds(setup.batch, position)
    basis = ", ".join(sorted({f"{d}: {r.source}" for d, r in rates.items() if d in placed and placed[d]}))
    return SpeedPrediction(decode, prompt_tokens / prefill_s, prefill_s + 1 / decode, batch,
                           efficiency.provenance, basis)


def _table() -> dict[str, Any]:
    from fitplan.datafiles import load_table

    return load_table("fitplan.strategies.data", "runtimes.toml")["speed_defaults"]


def cpu_rates(hw: HardwareSpec, threads: int, probes: MachineProbes | None, weights: str) -> DeviceRates:
    """Host bandwidth and matmul rate for `threads` threads: probed, else spec sheet, else assumed."""
    defaults = _table()
    cores = hw.cpu.cores
    if probes is not None:
        one = probes.host_read_GB_per_s_1thread or probes.host_copy_GB_per_s_1thread
        every = probes.host_read_GB_per_s_all or probes.host_copy_GB_per_s_all
        kind = "bf16" if weights in ("bf16", "BF16") else "fp32"
        mm = probes.matmul_GFLOP_per_s

        single = mm.get(f"{kind}_mm_1thread") or mm.get("fp32_mm_1thread")
        every_core = mm.get(f"{kind}_mm_all") or mm.get("fp32_mm_all")
        if one and every and single and every_core:  # one thread's rate times threads, capped by all cores'
            return DeviceRates(min(one.value * threads, every.value), min(single.value * threads, every_core.value),
                               "probe")
    flops = defaults["cpu_core_GFLOP_per_s"] * min(threads, cores)
    if hw.cpu.memory_bandwidth_GB_per_s:
        return DeviceRates(hw.cpu.memory_bandwidth_GB_per_s, flops, "spec sheet")
    return DeviceRates(defaults["cpu_memory_GB_per_s"], flops, "assumed")


def gpu_rates(gpu: GPUSpec, probed: dict[str, Any] | None) -> DeviceRates:
    if probed and "memory_GB_per_s" in probed and "fp16_TFLOP_per_s" in probed:
        return DeviceRates(probed["memory_GB_per_s"].value, probed["fp16_TFLOP_per_s"].value * 1000, "probe")
    if gpu.memory_bandwidth_GB_per_s and gpu.fp16_tflops:
        return DeviceRates(gpu.memory_bandwidth_GB_per_s, gpu.fp16_tflops * 1000, "spec sheet")
    return DeviceRates(gpu.memory_bandwidth_GB_per_s or 100.0, (gpu.fp16_tflops or 10.0) * 1000, "assumed")


def disk_rates(cpu: DeviceRates, probes: Any | None) -> DeviceRates:
    """Blocks on disk are read every token and computed on the CPU: the disk's read rate (the model
    file's cold read, probed), else a stated default."""
    if probes is not None and probes.disk_read_GB_per_s:
        slowest = min(p.value for p in probes.disk_read_GB_per_s.values())
        return DeviceRates(slowest, cpu.matmul_GFLOP_per_s, "probe")
    return DeviceRates(_table()["disk_GB_per_s"], cpu.matmul_GFLOP_per_s, "assumed")


def default_efficiency() -> Efficiency:
    defaults = _table()
    return Efficiency(defaults["decode_efficiency"], defaults["prefill_efficiency"], "estimated")


def plan_speed(
    spec: ModelSpec, setup: Setup, weights: WeightBytes, hw: HardwareSpec, *,
    probes: MachineProbes | None = None, efficiency: Efficiency | None = None, prompt_tokens: int = 512,
) -> SpeedPrediction:
    """The speed of one plan on `hw`, with the runtime's own placement of every tensor."""
    from fitplan.strategies.kv_cache import element_bytes, kv_widths
    from fitplan.strategies.registry import cost_model

    runtime = cost_model(setup.runtime)
    placed = runtime.place(spec, setup, weights)
    rates = {"cpu": cpu_rates(hw, setup.threads, probes, setup.weights)}
    if "disk" in placed:
        rates["disk"] = disk_rates(rates["cpu"], probes)
    for i, gpu in enumerate(hw.gpus):
        rates[f"gpu{i}"] = gpu_rates(gpu, probes.gpus[i] if probes and i < len(probes.gpus) else None)
    k, v = kv_widths(spec, setup.runtime)
    per_token_layer = (k + v) * element_bytes(setup.kv_cache)
    return predict_speed(spec, setup, placed, lambda i: runtime.layer_device(spec, setup, i), per_token_layer,
                         rates, efficiency or default_efficiency(), prompt_tokens=min(prompt_tokens, setup.context))
