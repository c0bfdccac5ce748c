"""The speed model's arithmetic on named profiles (pure functions, no runtime)."""
from __future__ import annotations

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.speed import Efficiency, plan_speed
from fitplan.plan_spec import Setup
from fitplan.profiles.named import load_profile
from fitplan.strategies.quantization import tensor_bytes, weight_format

ONE = Efficiency(1.0, 1.0, "estimated")


def speed(model: str, weights: str, hardware: str, *, gpu_layers: int | None = None, efficiency=ONE, published=False,
          **setup):
    """The roofline's arithmetic (published=False: the spec sheet alone), or with the fitted terms."""
    spec, hw = catalog_spec(model), load_profile(hardware)
    layers = spec.layers if gpu_layers is None else gpu_layers
    s = Setup(runtime="llama.cpp", weights=weights, kv_cache="f16", context=setup.get("context", 4096),
              batch=setup.get("batch", 1), threads=setup.get("threads", hw.cpu.cores),
              gpu_layers=layers if hw.gpus else 0, gpus=len(hw.gpus) if layers else 0)
    return spec, plan_speed(spec, s, tensor_bytes(spec, weight_format(weights)), hw, efficiency=efficiency,
                            prompt_tokens=512, published=published)


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
    """512-token prefill of an 8B model on an H100 is bound by FLOPs: 2 x block params x tokens / peak
    (the embedding is a lookup; the head runs once, for the one position the runtime outputs)."""
    spec, s = speed("llama-3.1-8b", "Q4_K_M", "h100-80gb")
    blocks = sum(t.numel for t in spec.tensors if t.role == "block")
    assert s.prefill_tokens_per_s < 989.4e12 / (2 * blocks)
    assert s.prefill_tokens_per_s > 0.5 * 989.4e12 * 0.5 / (2 * blocks)  # the default efficiency, 0.5
    assert s.ttft_s == pytest.approx(512 / s.prefill_tokens_per_s + 1 / s.decode_tokens_per_s)


def test_named_profile_figures_say_spec_sheet() -> None:
    """Without probes, a named GPU profile's figures come from its spec sheet."""
    _, s = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb")
    assert "gpu0: spec sheet" in s.basis


def test_fitted_terms_apply_to_a_gpu_with_a_row_and_say_so() -> None:
    """An RTX 4090 (sm89) takes llama.cpp's fitted CUDA terms; the figure says where they came from."""
    _, fitted = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb", published=True)
    _, sheet = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb")
    assert fitted.provenance.startswith("calibrated (published: ")
    assert sheet.provenance == "estimated"
    assert fitted.decode_tokens_per_s != sheet.decode_tokens_per_s


def test_a_calibrated_efficiency_beats_the_published_terms() -> None:
    """This machine's own run wins over figures fitted on other machines."""
    _, calibrated = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb", published=True,
                          efficiency=Efficiency(0.5, 0.5, "calibrated"))
    assert calibrated.provenance == "calibrated"


def test_decode_slows_as_the_context_fills() -> None:
    """decode_tokens_per_s is the rate after a short prompt; the full-context rate reads the whole KV cache."""
    _, s = speed("llama-3.1-8b", "Q4_K_M", "rtx-4090-24gb", published=True, context=32768)
    assert s.decode_full_context_tokens_per_s < s.decode_tokens_per_s


def test_the_output_head_runs_once_per_prompt() -> None:
    """A 256000-token vocabulary's head is a fifth of Gemma-2-2B's FLOPs per token: counted for every
    prompt token it would slow prefill by as much; llama.cpp computes it for the last position only."""
    from fitplan.advisor.planner.speed import step_model

    spec, hw = catalog_spec("gemma-2-2b"), load_profile("laptop-cpu-16gb")
    s = Setup(runtime="llama.cpp", weights="Q8_0", kv_cache="f16", context=1024, batch=1, threads=8, gpu_layers=0)
    model = step_model(spec, s, tensor_bytes(spec, weight_format("Q8_0")), hw, published=False)
    head = sum(model.head_flops.values())
    assert head > 0.15 * sum(f for _, f in model.single.values())
    assert model.prompt_flops("cpu", 512) == pytest.approx((model.single["cpu"][1] - head) * 512 + head)


def test_pipelined_prefill_over_gpus_beats_one_gpu_for_a_long_prompt() -> None:
    """llama.cpp pipelines the chunks of one n_batch over GPUs: 4 chunks on 2 GPUs overlap."""
    from fitplan.advisor.planner.speed import prefill_seconds, step_model

    def seconds(hardware: str) -> float:
        spec, hw = catalog_spec("llama-3.1-8b"), load_profile(hardware)
        s = Setup(runtime="llama.cpp", weights="Q4_K_M", kv_cache="f16", context=2048, batch=1, threads=16,
                  gpu_layers=32, gpus=len(hw.gpus))
        model = step_model(spec, s, tensor_bytes(spec, weight_format("Q4_K_M")), hw)
        return prefill_seconds(model, 2048, ubatch=512, n_batch=2048)

    assert seconds("2xrtx-4090-24gb") < seconds("rtx-4090-24gb")


def test_fitted_terms_scale_the_rate_llama_cpp_kernels_reach() -> None:
    """GeForce cards run FP32 accumulation at half rate, professional cards of the same chip at full
    rate; llama.cpp accumulates in FP16, where both run alike: half the int8 rate."""
    from fitplan.profiles.named import load_profile
    from fitplan.strategies.speed_terms import kernel_tflops

    geforce, pro = load_profile("rtx-3090-24gb").gpus[0], load_profile("rtx-a6000-48gb").gpus[0]
    assert pro.fp16_tflops / geforce.fp16_tflops > 2  # the spec figure ranks the A6000 twice the 3090
    assert kernel_tflops(geforce) == geforce.int8_tops / 2 and kernel_tflops(pro) == pro.int8_tops / 2
    assert 0.9 < kernel_tflops(pro) / kernel_tflops(geforce) < 1.2
    m1 = load_profile("apple-m1-8gb").gpus[0]
    assert kernel_tflops(m1) == m1.fp16_tflops  # no int8 tensor rate: the spec figure stands


def test_prefill_with_cpu_layers_is_bounded_by_the_host_link() -> None:
    """70B Q4_K_M on a 4090, 42 blocks on the GPU: with llama.cpp's op offload each 512-token chunk sends
    the CPU blocks' weights over PCIe 4.0 x16, which bounds prefill; with --no-op-offload the host's
    FLOP/s do, tens of times slower."""
    from fitplan.advisor.planner.speed import PCIE_LANE_GB_PER_S, prefill_seconds, step_model

    spec, hw = catalog_spec("llama-3.1-70b"), load_profile("rtx-4090-24gb")
    weights = tensor_bytes(spec, weight_format("Q4_K_M"))
    setup = Setup(runtime="llama.cpp", weights="Q4_K_M", kv_cache="f16", context=4096, batch=1, threads=16,
                  gpu_layers=42, gpus=1)
    on = step_model(spec, setup, weights, hw)
    link_s = on.single["cpu"][0] / (PCIE_LANE_GB_PER_S[4] * 16 * 1e9)
    chunk_s = prefill_seconds(on, 512, ubatch=512, n_batch=512)
    gen5 = hw.model_copy(update={"gpus": [hw.gpus[0].model_copy(update={"pcie_gen": 5})]})
    faster_link_s = prefill_seconds(step_model(spec, setup, weights, gen5), 512, ubatch=512, n_batch=512)
    assert chunk_s - faster_link_s == pytest.approx(link_s / 2, rel=0.02)  # twice the link, half its share
    assert link_s < chunk_s
    off = step_model(spec, setup.with_(op_offload=False), weights, hw)
    assert prefill_seconds(off, 512, ubatch=512, n_batch=512) > 20 * chunk_s
