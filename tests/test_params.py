"""Parameter counts computed from configs against published counts."""
from __future__ import annotations

import pytest

from fitplan.advisor.models.catalog import catalog_entry, catalog_names, catalog_spec
from fitplan.model_spec import ModelSpec

# Published totals (source in each catalog entry's published_parameters_source), one per
# architecture family the layout code handles differently.
PUBLISHED = {
    "llama-3.1-8b": 8_030_261_248,  # dense GQA, untied (safetensors index total_size / 2)
    "mixtral-8x7b-v0.1": 46_702_792_704,  # MoE, 8 experts (total_size / 2)
    "qwen2.5-7b": 7_615_616_512,  # q/k/v biases (total_size / 2)
    "gemma-2-9b": 9_241_705_984,  # explicit head_dim, post-norms, tied by class default
    "phi-3-mini-4k-instruct": 3_821_079_552,  # fused qkv and gate_up
    "deepseek-v2-lite": 15_706_484_224,  # MLA + shared/routed experts, first layer dense
    "qwen3-30b-a3b": 30_532_122_624,  # MoE with q/k norms
    "smollm2-135m": 134_515_008,  # tied embeddings (counted from its GGUF file)
    "gemma-3-1b": 999_885_952,  # gemma3_text, q/k norms
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameters_equal_published(name: str) -> None:
    """The count computed from the config equals the published total exactly."""
    assert catalog_spec(name).parameters == PUBLISHED[name]


@pytest.mark.parametrize("name", catalog_names())
def test_every_catalog_entry_matches_its_source(name: str) -> None:
    """Each catalog entry's computed count equals the published count it cites."""
    entry = catalog_entry(name)
    assert entry["source"].startswith("https://")
    if "published_parameters" in entry:
        spec = catalog_spec(name)
        buffers = _router_bias(spec) if entry.get("published_parameters_excludes_buffers") else 0
        assert spec.parameters == entry["published_parameters"] + buffers


def _router_bias(spec: ModelSpec) -> int:
    """The routing-score corrections (e_score_correction_bias): buffers in transformers, so a checkpoint
    index's total_parameters (save_pretrained's count) leaves them out while its files store them."""
    return sum(t.numel for t in spec.tensors if t.name.endswith("exp_probs_b.bias"))


def test_a_count_that_leaves_out_buffers_still_matches_exactly() -> None:
    """Nemotron 3 Nano's index says total_parameters 31,577,937,344 and total_size 63,155,886,464 bytes.
    fitplan's count is that plus the 23 MoE routers' bias vectors of 128, and the bytes check it:
    2 x 31,577,937,344 (bf16) + 4 x 2,944 (the biases, f32) = 63,155,886,464."""
    spec = catalog_spec("nemotron-3-nano-30b-a3b")
    assert _router_bias(spec) == 23 * 128
    assert 2 * (spec.parameters - _router_bias(spec)) + 4 * _router_bias(spec) == 63_155_886_464


def test_active_parameters_of_moe_models() -> None:
    """Active parameters count only the routed experts a token uses (plus everything shared)."""
    assert catalog_spec("mixtral-8x7b-v0.1").active_parameters == 12_879_925_248  # "12.9B active", Mistral AI
    assert catalog_spec("qwen3-30b-a3b").active_parameters == 3_353_032_704  # "3.3B activated", Qwen3 card
    dense = catalog_spec("llama-3.1-8b")
    assert dense.active_parameters == dense.parameters


@pytest.mark.parametrize("alias", ["meta-llama/Llama-3.1-8B", "META-LLAMA/Llama-3.1-8B-Instruct",
                                   "meta-llama/Meta-Llama-3.1-8B", "Llama-3.1-8B"])
def test_catalog_answers_to_hub_ids_and_former_names(alias: str) -> None:
    """Short names, base/instruct hub ids and former names resolve case-insensitively."""
    assert catalog_spec(alias).name == "llama-3.1-8b"


def test_sliding_window_layers() -> None:
    """Gemma 2 alternates sliding layers; Gemma 3 keeps every sixth layer global."""
    g2 = catalog_spec("gemma-2-2b")
    assert g2.sliding_window == 4096 and g2.sliding_layers == frozenset(range(0, 26, 2))
    g3 = catalog_spec("gemma-3-1b")
    assert sorted(set(range(26)) - g3.sliding_layers) == [5, 11, 17, 23]
