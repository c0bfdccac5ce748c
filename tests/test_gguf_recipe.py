"""Tests for fitplan.strategies.gguf_recipe (port of llama.cpp's llama_tensor_get_type).

Published cases and their sources:

* SmolLM2-135M-Instruct.Q4_1.gguf: 210 tensors Q4_1, token_embd.weight Q8_0,
  61 F32 (30x attn_norm, 30x ffn_norm, output_norm); tied embeddings. (The
  numbers stated in the fitplan brief for this file.)
* Meta-Llama-3.1-8B-Instruct Q4_K_M: "type f32: 66 tensors, type q4_K: 193
  tensors, type q6_K: 33 tensors" (llama_model_loader log quoted in
  https://github.com/mozilla-ai/llamafile/issues/516), and per-tensor lines of
  a Llama-3-8B Q4_K_M load showing blk.29/blk.30 attn_v.weight and
  blk.29.ffn_down.weight as q6_K while attn_q/attn_k/attn_output/ffn_gate/ffn_up
  are q4_K (https://github.com/mozilla-ai/llamafile/pull/122).
* Mixtral-8x7B-Instruct (8 experts) K-quant: blk.31.attn_k.weight and
  blk.31.attn_v.weight are q8_0 (https://github.com/ggml-org/llama.cpp/issues/4495).

The other expectations are what the ported code of llama.cpp implies.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

pytest.importorskip("gguf")

from fitplan.strategies.gguf_recipe import (  # noqa: E402
    FILE_TYPES,
    RecipeTensor,
    assign_types,
)


def llama_tensors(
    *,
    n_layer: int,
    hidden: int,
    ffn: int,
    n_head: int,
    n_head_kv: int,
    vocab: int,
    tied: bool,
    rope_freqs: int | None = None,
) -> list[RecipeTensor]:
    head_dim = hidden // n_head
    kv = head_dim * n_head_kv
    ts = [RecipeTensor("token_embd.weight", (hidden, vocab)), RecipeTensor("output_norm.weight", (hidden,))]
    if not tied:
        ts.append(RecipeTensor("output.weight", (hidden, vocab)))
    if rope_freqs is not None:
        ts.append(RecipeTensor("rope_freqs.weight", (rope_freqs,)))
    for i in range(n_layer):
        p = f"blk.{i}."
        ts += [
            RecipeTensor(p + "attn_norm.weight", (hidden,)),
            RecipeTensor(p + "attn_q.weight", (hidden, hidden)),
            RecipeTensor(p + "attn_k.weight", (hidden, kv)),
            RecipeTensor(p + "attn_v.weight", (hidden, kv)),
            RecipeTensor(p + "attn_output.weight", (hidden, hidden)),
            RecipeTensor(p + "ffn_norm.weight", (hidden,)),
            RecipeTensor(p + "ffn_gate.weight", (hidden, ffn)),
            RecipeTensor(p + "ffn_up.weight", (hidden, ffn)),
            RecipeTensor(p + "ffn_down.weight", (ffn, hidden)),
        ]
    return ts


def smollm2_135m() -> list[RecipeTensor]:
    return llama_tensors(n_layer=30, hidden=576, ffn=1536, n_head=9, n_head_kv=3, vocab=49152, tied=True)


def llama31_8b() -> list[RecipeTensor]:
    return llama_tensors(
        n_layer=32, hidden=4096, ffn=14336, n_head=32, n_head_kv=8, vocab=128256, tied=False, rope_freqs=64
    )


# llama.cpp's use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2
MORE_BITS_32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}


def test_file_types_cover_llama_quantize_names():
    for ft in ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S",
               "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS",
               "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ1_S", "IQ1_M", "IQ4_NL",
               "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE"):
        assert ft in FILE_TYPES


def test_smollm2_135m_q4_1_matches_published_file():
    types = assign_types(smollm2_135m(), "Q4_1", arch="llama", n_gqa=3)
    counts = Counter(types.values())
    assert counts == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    # tied embeddings: token_embd is treated as output -> Q6_K, 576 % 256 != 0 -> Q8_0
    assert types["token_embd.weight"] == "Q8_0"
    assert types["output_norm.weight"] == "F32"
    assert all(types[f"blk.{i}.attn_norm.weight"] == "F32" for i in range(30))


def test_input_order_does_not_matter():
    ts = smollm2_135m()
    expected = assign_types(ts, "Q3_K_M", arch="llama", n_gqa=3)
    shuffled = ts[:]
    random.Random(0).shuffle(shuffled)
    assert assign_types(shuffled, "Q3_K_M", arch="llama", n_gqa=3) == expected


def test_llama31_8b_q4_k_m_matches_published_counts():
    types = assign_types(llama31_8b(), "Q4_K_M", arch="llama", n_gqa=4)
    assert Counter(types.values()) == {"F32": 66, "Q4_K": 193, "Q6_K": 33}
    assert types["output.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_K"  # untied: the default type
    for i in range(32):
        want = "Q6_K" if i in MORE_BITS_32 else "Q4_K"
        assert types[f"blk.{i}.attn_v.weight"] == want
        assert types[f"blk.{i}.ffn_down.weight"] == want
        for other in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert types[f"blk.{i}.{other}.weight"] == "Q4_K"
    # the per-tensor lines quoted in llamafile#122
    assert types["blk.29.attn_v.weight"] == types["blk.30.attn_v.weight"] == "Q6_K"
    assert types["blk.29.ffn_down.weight"] == "Q6_K"


def test_llama31_8b_other_k_mixes():
    ts = llama31_8b()
    q3km = assign_types(ts, "Q3_K_M", arch="llama", n_gqa=4)
    # attn_v: Q5_K for the first two, then Q4_K; ffn_down Q5_K for i < 32/16, else Q4_K
    assert [q3km[f"blk.{i}.attn_v.weight"] for i in range(4)] == ["Q5_K", "Q5_K", "Q4_K", "Q4_K"]
    assert [q3km[f"blk.{i}.ffn_down.weight"] for i in range(4)] == ["Q5_K", "Q5_K", "Q4_K", "Q4_K"]
    assert q3km["blk.5.attn_output.weight"] == "Q4_K"
    assert q3km["blk.5.attn_q.weight"] == "Q3_K"
    assert q3km["output.weight"] == "Q6_K"

    q2k = assign_types(ts, "Q2_K", arch="llama", n_gqa=4)
    assert q2k["blk.7.attn_v.weight"] == "Q4_K"  # n_gqa >= 4
    assert q2k["blk.7.ffn_down.weight"] == "Q3_K"
    assert q2k["blk.7.attn_output.weight"] == "Q3_K"
    assert q2k["blk.7.ffn_up.weight"] == "Q2_K"
    assert assign_types(ts, "Q2_K", arch="llama", n_gqa=1)["blk.7.attn_v.weight"] == "Q3_K"

    q4ks = assign_types(ts, "Q4_K_S", arch="llama", n_gqa=4)
    assert [q4ks[f"blk.{i}.attn_v.weight"] for i in (0, 3, 4)] == ["Q5_K", "Q5_K", "Q4_K"]
    assert [q4ks[f"blk.{i}.ffn_down.weight"] for i in (0, 3, 4)] == ["Q5_K", "Q5_K", "Q4_K"]

    iq3xs = assign_types(ts, "IQ3_XS", arch="llama", n_gqa=4)
    assert iq3xs["blk.0.ffn_up.weight"] == "IQ3_S"  # first eighth keeps the default
    assert iq3xs["blk.10.ffn_up.weight"] == "IQ3_XXS"
    assert iq3xs["blk.10.attn_q.weight"] == "IQ3_XXS"
    assert iq3xs["blk.10.attn_v.weight"] == "Q4_K"

    f16 = assign_types(ts, "F16", arch="llama", n_gqa=4)
    assert Counter(f16.values()) == {"F32": 66, "F16": 226}


def test_q4_k_m_alias_and_case():
    ts = llama31_8b()
    assert assign_types(ts, "q4_k", arch="llama", n_gqa=4) == assign_types(ts, "Q4_K_M", arch="llama", n_gqa=4)
    with pytest.raises(ValueError):
        assign_types(ts, "Q7_K", arch="llama")


def test_llama_70b_attn_v_bump():
    ts = llama_tensors(n_layer=80, hidden=8192, ffn=28672, n_head=64, n_head_kv=8, vocab=128256, tied=False)
    types = assign_types(ts, "Q4_K_M", arch="llama", n_gqa=8)
    # use_more_bits layers get Q6_K; the others would be Q4_K but 70B bumps them to Q5_K
    assert types["blk.0.attn_v.weight"] == "Q6_K"
    assert types["blk.11.attn_v.weight"] == "Q5_K"
    assert types["blk.11.ffn_down.weight"] == "Q4_K"


def test_fallback_for_rows_not_multiple_of_block():
    ts = smollm2_135m()
    types = assign_types(ts, "Q4_K_M", arch="llama", n_gqa=3)
    # 576 % 256 != 0: Q4_K -> Q5_0, Q6_K -> Q8_0 ; ffn_down rows are 1536 (ok)
    assert types["blk.10.attn_q.weight"] == "Q5_0"
    assert types["blk.10.ffn_up.weight"] == "Q5_0"
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_v.weight"] == "Q8_0"  # use_more_bits -> Q6_K -> fallback
    assert types["blk.10.attn_v.weight"] == "Q5_0"
    assert types["blk.0.ffn_down.weight"] == "Q6_K"
    assert types["blk.10.ffn_down.weight"] == "Q4_K"

    q2k = assign_types(ts, "Q2_K", arch="llama", n_gqa=3)
    assert q2k["blk.10.ffn_up.weight"] == "Q4_0"  # Q2_K -> Q4_0

    iq2 = assign_types([RecipeTensor("blk.0.ffn_up.weight", (576, 1536))], "IQ2_XXS", arch="llama")
    assert iq2["blk.0.ffn_up.weight"] == "IQ4_NL"

    # not even a multiple of 32: F16
    odd = assign_types([RecipeTensor("blk.0.ffn_up.weight", (100, 64))], "Q4_K_M", arch="llama")
    assert odd["blk.0.ffn_up.weight"] == "F16"
    # Q4_1 has no fallback: llama-quantize fails
    with pytest.raises(ValueError):
        assign_types([RecipeTensor("blk.0.ffn_up.weight", (100, 64))], "Q4_1", arch="llama")


def test_never_quantized_tensors():
    ts = [
        RecipeTensor("token_embd.weight", (256, 1000)),
        RecipeTensor("output.weight", (256, 1000)),
        RecipeTensor("position_embd.weight", (256, 512)),
        RecipeTensor("token_types.weight", (256, 2)),
        RecipeTensor("blk.0.attn_rel_b.weight", (32, 8)),
        RecipeTensor("blk.0.ssm_conv1d.weight", (4, 1536)),
        RecipeTensor("blk.0.ffn_gate_inp.weight", (256, 8)),
        RecipeTensor("blk.0.attn_q_norm.weight", (128, 4)),
        RecipeTensor("blk.0.attn_q.bias", (256,)),
        RecipeTensor("blk.0.attn_q.weight", (256, 256, 1, 1)),
        RecipeTensor("blk.0.ffn_up.weight", (256, 1)),  # ggml_n_dims == 1
    ]
    types = assign_types(ts, "Q4_K_M", arch="bert")
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    assert types["output.weight"] == "Q6_K"
    for name, t in types.items():
        if name not in ("blk.0.attn_q.weight", "output.weight", "token_embd.weight"):
            assert t == "F32", name


def mixtral_tensors(n_layer: int = 32) -> list[RecipeTensor]:
    hidden, ffn, n_expert, kv, vocab = 4096, 14336, 8, 1024, 32000
    ts = [
        RecipeTensor("token_embd.weight", (hidden, vocab)),
        RecipeTensor("output.weight", (hidden, vocab)),
        RecipeTensor("output_norm.weight", (hidden,)),
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        ts += [
            RecipeTensor(p + "attn_norm.weight", (hidden,)),
            RecipeTensor(p + "attn_q.weight", (hidden, hidden)),
            RecipeTensor(p + "attn_k.weight", (hidden, kv)),
            RecipeTensor(p + "attn_v.weight", (hidden, kv)),
            RecipeTensor(p + "attn_output.weight", (hidden, hidden)),
            RecipeTensor(p + "ffn_norm.weight", (hidden,)),
            RecipeTensor(p + "ffn_gate_inp.weight", (hidden, n_expert)),
            RecipeTensor(p + "ffn_gate_exps.weight", (hidden, ffn, n_expert)),
            RecipeTensor(p + "ffn_up_exps.weight", (hidden, ffn, n_expert)),
            RecipeTensor(p + "ffn_down_exps.weight", (ffn, hidden, n_expert)),
        ]
    return ts


def test_mixtral_8_experts_q4_k_m():
    types = assign_types(mixtral_tensors(), "Q4_K_M", arch="llama", n_expert=8, n_gqa=4)
    for i in range(32):
        p = f"blk.{i}."
        assert types[p + "attn_k.weight"] == "Q8_0"  # n_expert == 8 bump (llama.cpp#4495)
        assert types[p + "attn_v.weight"] == "Q8_0"
        assert types[p + "attn_output.weight"] == "Q5_K"
        assert types[p + "attn_q.weight"] == "Q4_K"
        assert types[p + "ffn_gate_inp.weight"] == "F32"
        assert types[p + "ffn_gate_exps.weight"] == "Q4_K"
        assert types[p + "ffn_down_exps.weight"] == ("Q6_K" if i in MORE_BITS_32 else "Q4_K")
    assert types["output.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_K"


def test_mixtral_8_experts_low_bit_mixes():
    ts = mixtral_tensors()
    q3km = assign_types(ts, "Q3_K_M", arch="llama", n_expert=8, n_gqa=4)
    assert q3km["blk.31.attn_k.weight"] == q3km["blk.31.attn_v.weight"] == "Q8_0"
    assert q3km["blk.31.attn_q.weight"] == "Q3_K"

    iq2 = assign_types(ts, "IQ2_XS", arch="llama", n_expert=8, n_gqa=4, has_imatrix=True)
    assert iq2["blk.5.attn_v.weight"] == "Q4_K"
    assert iq2["blk.5.attn_k.weight"] == "Q4_K"
    assert iq2["blk.5.attn_output.weight"] == "Q5_K"
    assert iq2["token_embd.weight"] == "Q2_K"
    assert iq2["output.weight"] == "Q5_K"
    # IQ2 branch: raw counter over ffn_down tensors, n_ffn_down / 8 = 4
    assert [iq2[f"blk.{i}.ffn_down_exps.weight"] for i in (0, 3, 4)] == ["Q2_K", "Q2_K", "IQ2_XS"]


def test_mxfp4_moe():
    ts = mixtral_tensors(n_layer=4)
    types = assign_types(ts, "MXFP4_MOE", arch="gpt-oss", n_expert=8, n_gqa=4)
    assert types["blk.0.ffn_down_exps.weight"] == "MXFP4"
    assert types["blk.0.ffn_up_exps.weight"] == "MXFP4"
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_v.weight"] == "Q8_0"
    assert types["output.weight"] == "Q8_0"
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.ffn_gate_inp.weight"] == "F32"


def test_every_file_type_runs_on_both_models():
    for ft in FILE_TYPES:
        for ts, n_gqa in ((llama31_8b(), 4), (smollm2_135m(), 3)):
            if ft == "Q1_0" and ts[0].shape[0] % 128 != 0:
                continue  # Q1_0 has no fallback: llama-quantize refuses 576-wide rows
            types = assign_types(ts, ft, arch="llama", n_gqa=n_gqa)
            assert set(types) == {t.name for t in ts}
