"""The speed model's arithmetic on named profiles (pure functions, no runtime)."""
from __future__ import annotations

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.speed import Efficiency, plan_speed
from fitplan.plan_spec import Setup
from fitplan.profiles.named import load_profile
from fitplan.strategies.quantization import tensor_bytes, weight_format

ONE = Efficiency(1.0, 1.0, "estimated")


def speed(model: str, weights: str, hardware: str, *, gpu_layers: int | None = None, efficiency=ONE, **setup):
    spec, hw = catalog_spec(model), load_profile(hardware)
    layers = spec.layers if gpu_layers is None else gpu_layers
    s = Setup(runtime="llama.cpp", weights=weights, kv_cache="f16", context=setup.get("context", 4096),
              batch=setup.get("batch", 1), threads=setup.get("threads", hw.cpu.cores),
              gpu_layers=layers if hw.gpus else 0, gpus=len(hw.gpus) if layers else 0)
    return spec, plan_speed(spec, s, tensor_bytes(spec, weight_format(weights)), hw, efficiency=efficiency,
                            prompt_tokens=512)


def test_gpu_decode_is_bandwidth_over_bytes_read() -> None:
    """Llama-3.1-8B Q4_K_M on an RTX 4090: decode ~ 1008 GB/s / (weights + KV read), memory-bound."""
    spec, s = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb")
    read = sum(b for t, b in tensor_bytes(spec, weight_format("Q4_K_M")) if t.role != "embed")
    kv = (512 + 64) * 32 * 2 * 8 * 128 * 2  # f16 K and V of 576 positions, 32 layers
    assert s.decode_tokens_per_s == pytest.approx(1008e9 / (read + kv), rel=1e-6)


def test_efficiency_scales_every_rate() -> None:
    """Halving the efficiency halves decode and prefill rates: what calibration relies on."""
    _, full = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb")
    _, half = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb", efficiency=Efficiency(0.5, 0.5, "calibrated"))
    assert half.decode_tokens_per_s == pytest.approx(full.decode_tokens_per_s / 2)
    assert half.prefill_tokens_per_s == pytest.approx(full.prefill_tokens_per_s / 2)
    assert half.provenance == "calibrated"


def test_cpu_layers_slow_a_split_plan() -> None:
    """Moving blocks to the CPU adds their time at host bandwidth: 70B with 40 GPU layers decodes slower than 60."""
    _, fewer = speed("llama-3.1-70b", "Q4_K_M", "rtx-4090-24gb", gpu_layers=40)
    _, more = speed("llama-3.1-70b", "Q4_K_M", "rtx-4090-24gb", gpu_layers=60)
    assert fewer.decode_tokens_per_s < more.decode_tokens_per_s


def test_moe_reads_only_the_routed_experts() -> None:
    """Mixtral decodes from ~13B active parameters, not 47B: faster than a dense model of its total size."""
    _, moe = speed("mixtral-8x7b-v0.1", "Q4_K_M", "h100-80gb")
    _, dense = speed("llama-3.1-70b", "Q4_K_M", "h100-80gb")
    assert moe.decode_tokens_per_s > 3 * dense.decode_tokens_per_s


def test_batch_throughput_grows_with_batch() -> None:
    """Sequences share one read of the weights: 8 sequences give more tokens/s than 1, less than 8x."""
    _, one = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb")
    _, eight = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb", batch=8)
    assert one.batch_tokens_per_s < eight.batch_tokens_per_s < 8 * one.batch_tokens_per_s


def test_prefill_is_compute_bound_on_gpu() -> None:
    """512-token prefill of an 8B model on an H100 is bound by FLOPs: 2 x params x tokens / peak."""
    spec, s = speed("llama-3.1-8b", "Q4_K_M", "h100-80gb")
    assert s.prefill_tokens_per_s < 989.4e12 / (2 * spec.parameters * 0.9)
    assert s.ttft_s == pytest.approx(512 / s.prefill_tokens_per_s + 1 / s.decode_tokens_per_s)


def test_named_profile_figures_say_spec_sheet() -> None:
    """Without probes, a named GPU profile's figures come from its spec sheet."""
    _, s = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb")
    assert "gpu0: spec sheet" in s.basis
