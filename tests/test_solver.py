"""The solver's choices on named profiles, each with the reason an expert would give."""
from __future__ import annotations

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.solver import Request, advise
from fitplan.errors import BadValueError
from fitplan.profiles.named import load_profile


def solve(model: str, hardware: str, **request):
    return advise(catalog_spec(model), load_profile(hardware), Request(**request))


def on_cpu(model: str, c) -> tuple[int, int]:
    """(blocks, routed-expert sets) a llama.cpp plan keeps on the CPU."""
    from fitplan.strategies.runtimes.llamacpp.cost import expert_device, layer_device

    spec = catalog_spec(model)
    blocks = sum(layer_device(spec, c.setup, i) == "cpu" for i in range(spec.layers))
    experts = sum(expert_device(spec, c.setup, i) == "cpu" and layer_device(spec, c.setup, i) != "cpu"
                  for i in range(spec.layers)) if spec.is_moe else 0
    return blocks, experts


def test_8b_on_12gb_card_is_gpu_only_4_to_5_bits() -> None:
    """Llama-3.1-8B at 8K on an RTX 3060 12 GB: a 4-5 bit GGUF with every layer on the GPU
    (8-bit and 16-bit need a CPU split, which decodes several times slower)."""
    advice = solve("llama-3.1-8b", "rtx-3060-12gb", context=8192)
    assert advice.fits and advice.chosen.placement == "gpu"
    assert advice.chosen.fmt.name in {"Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S"}


def test_70b_on_one_4090_splits_between_gpu_and_cpu() -> None:
    """Llama-3.1-70B on a 24 GB card with 64 GB RAM: no 4-bit plan fits the GPU, so blocks are split."""
    advice = solve("llama-3.1-70b", "rtx-4090-24gb")
    assert advice.fits and advice.chosen.placement in ("split", "exact")
    blocks, _ = on_cpu("llama-3.1-70b", advice.chosen)
    assert 0 < blocks < 80


def test_mixtral_moves_experts_to_cpu_first() -> None:
    """Mixtral-8x7B on a 4090: routed experts go to the CPU before whole layers do (llama.cpp
    --n-cpu-moe): attention and the KV cache stay on the GPU, and only 2 of 8 experts are read per token."""
    advice = solve("mixtral-8x7b-v0.1", "rtx-4090-24gb")
    blocks, experts = on_cpu("mixtral-8x7b-v0.1", advice.chosen)
    assert blocks == 0 and experts > 0
    split = next(c for c in advice.alternatives + advice.rejected
                 if c.fmt.name == advice.chosen.fmt.name and c.placement == "split")
    assert advice.chosen.speed.decode_tokens_per_s > split.speed.decode_tokens_per_s


def test_exact_placement_is_at_least_as_fast_as_the_heuristics() -> None:
    """The MILP placement (MoE experts, uneven layers: Gemma 2's sliding-window and global blocks) is
    offered only where it decodes no slower than the layer split or --n-cpu-moe of the same format (its
    map pays a device switch per change, which the speed model counts and the MILP does not), and it
    says which tensors llama.cpp must keep on the CPU (--override-tensor rules). Mixtral on a 4090
    gains from it; Gemma-2-27B on a 3060 does not, and gets the contiguous split."""
    from fitplan.advisor.planner.placement import overrides

    offered = {}
    for model, hardware in (("mixtral-8x7b-v0.1", "rtx-4090-24gb"), ("gemma-2-27b", "rtx-3060-12gb")):
        advice = solve(model, hardware, weights="Q4_K_M")
        plans = [advice.chosen, *advice.alternatives, *advice.rejected]
        others = [c for c in plans if c.placement in ("split", "experts-cpu") and c.fits]
        exact = [c for c in plans if c.placement == "exact"]
        offered[model] = bool(exact)
        for c in exact:
            assert others and all(c.speed.decode_tokens_per_s >= o.speed.decode_tokens_per_s * 0.999 for o in others)
            assert overrides(catalog_spec(model), c.setup)
    assert offered == {"mixtral-8x7b-v0.1": True, "gemma-2-27b": False}


def test_small_model_on_a_ci_runner_gets_a_cpu_plan() -> None:
    """SmolLM2-135M on a 4-vCPU GitHub runner without a GPU: a CPU plan with its 2 physical cores."""
    advice = solve("smollm2-135m", "gha-ubuntu-4core")
    assert advice.fits and advice.chosen.placement == "cpu" and advice.chosen.setup.threads == 2


def test_a_model_that_fits_nowhere_gets_a_multi_gpu_vllm_plan() -> None:
    """Llama-3.1-405B on a 16 GB laptop: does not fit, and the answer names a vLLM plan on 16 H100s
    (bf16 810 GB does not fit 8 x 80 GB) with tensor and pipeline parallelism over 2 nodes."""
    advice = solve("llama-3.1-405b", "laptop-cpu-16gb")
    assert not advice.fits
    out = advice.scale_out
    assert (out.gpus, out.tensor_parallel_size, out.pipeline_parallel_size) == (16, 8, 2)
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in out.command


def test_objectives_trade_quality_for_speed() -> None:
    """quality picks the least loss that fits; speed the fastest; balanced the fastest within Q4_K_M's loss."""
    quality = solve("llama-3.1-8b", "rtx-4090-24gb", objective="quality").chosen
    speed = solve("llama-3.1-8b", "rtx-4090-24gb", objective="speed").chosen
    balanced = solve("llama-3.1-8b", "rtx-4090-24gb").chosen
    assert quality.fmt.ppl_increase == 0.0
    assert speed.speed.decode_tokens_per_s >= balanced.speed.decode_tokens_per_s >= quality.speed.decode_tokens_per_s
    assert balanced.fmt.ppl_increase <= 0.175


def test_constraints_filter_candidates() -> None:
    """--max-ppl-increase keeps 8-bit or better; an impossible --min-tokens-per-s is an answer with a reason."""
    strict = solve("llama-3.1-8b", "rtx-4090-24gb", max_ppl_increase=0.01).chosen
    assert strict.fmt.ppl_increase <= 0.01
    impossible = solve("llama-3.1-8b", "rtx-4090-24gb", min_tokens_per_s=1e6)
    assert not impossible.fits and "--min-tokens-per-s" in impossible.chosen.reason


def test_unknown_objective_is_an_error() -> None:
    """An objective outside balanced/quality/speed/throughput is refused, naming the option."""
    with pytest.raises(BadValueError, match="--objective"):
        solve("llama-3.1-8b", "rtx-4090-24gb", objective="fastest")


def test_throughput_objective_uses_the_batch() -> None:
    """With 16 sequences, throughput counts tokens/s over the batch, above the single-stream rate."""
    chosen = solve("llama-3.1-8b", "rtx-4090-24gb", objective="throughput", batch=16, context=4096).chosen
    assert chosen.speed.batch_tokens_per_s > chosen.speed.decode_tokens_per_s


def test_a_gguf_file_is_run_as_it_is(smollm2_gguf: str) -> None:
    """A local Q4_1 file: requantizing it cannot undo its loss, so the file itself is the plan."""
    from fitplan.advisor.models.model_files import gguf_spec

    spec = gguf_spec(smollm2_gguf)
    advice = advise(spec, load_profile("gha-ubuntu-4core"), Request())
    assert (advice.chosen.fmt.name, advice.chosen.converted) == ("Q4_1", False)
    requantized = next(c for c in advice.alternatives if c.fmt.name == "Q4_K_M")
    # Q4_1's +0.45 on Llama-3-8B, for a 135M model of another family: x0.415 x (0.5B / 8.03B) ** -0.1751
    assert requantized.converted and requantized.source_loss == pytest.approx(0.45 * 0.415 * (0.5 / 8.030261248) ** -0.1751)


def test_every_plan_says_where_its_weights_come_from(smollm2_gguf: str) -> None:
    """Existing file, local conversion with its command, or a download with the repository and size."""
    from fitplan.advisor.models.model_files import gguf_spec
    from fitplan.advisor.planner.document import advice_document

    local = advice_document(gguf_spec(smollm2_gguf), load_profile("gha-ubuntu-4core"),
                            advise(gguf_spec(smollm2_gguf), load_profile("gha-ubuntu-4core"), Request()))
    assert local["plan"]["weights_source"]["kind"] == "existing file"
    assert any(a["plan"]["weights_source"]["kind"] == "convert locally"
               and "llama-quantize --allow-requantize" in a["plan"]["weights_source"]["how"] for a in local["alternatives"])
    spec = catalog_spec("llama-3.1-8b")
    hub = advice_document(spec, load_profile("rtx-4090-24gb"), advise(spec, load_profile("rtx-4090-24gb"),
                                                                      Request(weights="bf16")))
    source = hub["plan"]["weights_source"]
    assert source["kind"] == "download" and source["from"] == "https://huggingface.co/meta-llama/Llama-3.1-8B"


def test_pareto_front_is_not_dominated() -> None:
    """No plan on the Pareto front is slower, lossier and larger than another fitting plan."""
    from fitplan.advisor.planner.document import pareto_front

    advice = solve("llama-3.1-8b", "rtx-3060-12gb", context=8192)
    plans = [advice.chosen, *advice.alternatives]
    front = pareto_front(plans)
    assert advice.chosen in front and len(front) < len(plans)

    def point(c):
        return (-c.speed.decode_tokens_per_s, c.fmt.ppl_increase, max(m.total for m in c.memory.values()))

    for c in front:
        assert not any(all(a < b for a, b in zip(point(o), point(c))) for o in plans)


def test_long_context_takes_a_q8_0_kv_cache_to_stay_on_the_gpu() -> None:
    """Llama-3.1-8B at 64K on a 12 GB card: an f16 KV cache (8 GiB) would force a CPU split; a q8_0
    cache (measured lossless, kv_dtypes.toml) keeps every layer on the GPU, with flash attention."""
    advice = solve("llama-3.1-8b", "rtx-3060-12gb", context=65536)
    chosen = advice.chosen
    assert (chosen.placement, chosen.setup.kv_cache, chosen.setup.flash_attn) == ("gpu", "q8_0", True)


def test_a_pinned_kv_type_picks_the_runtimes_that_offer_it() -> None:
    """--kv-cache q8_0 without --runtime keeps to llama.cpp instead of failing on transformers' formats."""
    chosen = solve("llama-3.1-8b", "a100-40gb", kv_cache="q8_0").chosen
    assert (chosen.setup.runtime, chosen.setup.kv_cache) == ("llama.cpp", "q8_0")


def test_no_flash_attn_never_trips_the_q8_0_retry() -> None:
    """With flash attention off, a model that needs the CPU is split, not refused (q8_0 V needs flash)."""
    chosen = solve("llama-3.1-70b", "l4-24gb", flash_attn=False).chosen
    assert chosen.setup.flash_attn is False and chosen.setup.kv_cache == "f16"


def test_dynamic_int8_is_weighed_on_a_cpu_and_its_loss_decides(smollm2_gguf: str) -> None:
    """int8-dynamic is a CPU format the solver weighs beside transformers' fp32/bf16: its loss measured on
    SmolLM2 (perplexity x1.294, +1.835 on Llama-3-8B's scale) keeps it out of the balanced answer, and
    under a bound that admits it (+2.14 with the Q4_1 file's own loss), it is faster than fp32 (fewer bytes a
    token)."""
    from fitplan.advisor.models.model_files import gguf_spec

    spec, cpu = gguf_spec(smollm2_gguf), load_profile("laptop-cpu-16gb")
    balanced = advise(spec, cpu, Request(runtime="transformers"))
    weighed = {c.fmt.name: c for c in [balanced.chosen, *balanced.alternatives, *balanced.rejected]}
    assert "int8-dynamic" in weighed and balanced.chosen.fmt.name != "int8-dynamic"
    assert weighed["int8-dynamic"].fmt.ppl_increase == pytest.approx(1.835, abs=0.002)
    loose = advise(spec, cpu, Request(runtime="transformers", max_ppl_increase=2.5))
    int8 = next(c for c in [loose.chosen, *loose.alternatives] if c.fmt.name == "int8-dynamic")
    assert int8.fits and int8.setup.kv_cache == "f32" and int8.setup.threads == cpu.cpu.cores
    assert int8.timed().decode_tokens_per_s > weighed["fp32"].timed().decode_tokens_per_s


def test_dynamic_int8_from_16_bit_weights_counts_the_fp32_copy_it_quantizes() -> None:
    """A bf16 checkpoint planned as int8-dynamic is loaded in fp32 and then quantized: the load's peak holds
    the mapped bf16 pages and the whole fp32 copy (6 bytes a parameter beside the int8 weights). Where it fits
    nowhere, the scale-out plan is bf16 on GPUs, not the CPU-only format."""
    spec = catalog_spec("llama-3.2-1b")
    chosen = advise(spec, load_profile("laptop-cpu-16gb"), Request(weights="int8-dynamic")).chosen
    assert chosen.memory["cpu"].load_transient == sum(t.numel for t in spec.tensors) * 6
    huge = advise(catalog_spec("llama-3.1-405b"), load_profile("laptop-cpu-16gb"), Request(weights="int8-dynamic"))
    assert not huge.fits and huge.scale_out is not None and huge.scale_out.weights == "bf16"
