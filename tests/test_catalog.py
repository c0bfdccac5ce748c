"""The catalog and the 2025-2026 architectures: every entry's layout against transformers' own model,
per-layer caches against hand computations, the names users type, and `fitplan models --hardware`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fitplan.advisor.models.architectures import spec_from_config
from fitplan.advisor.models.catalog import (
    _short_names,
    all_entries,
    catalog_entry,
    catalog_spec,
    entry_config,
    entry_spec,
)
from fitplan.errors import ModelFileError
from fitplan.strategies.kv_cache import layer_kv_bytes

FITPLAN = str(Path(sys.executable).with_name("fitplan"))
ENTRIES = all_entries()
NAMES = [e["name"] for e in ENTRIES]


def test_every_entry_is_well_formed_and_every_name_answers_one_entry() -> None:
    seen: dict[str, str] = {}
    for e in ENTRIES:
        assert e["source"].startswith("https://"), e["name"]
        assert e.get("family") and e["name"] == e["name"].lower(), e["name"]
        assert isinstance(e.get("hub_ids", []), list) and isinstance(e.get("aliases", []), list)
        for key in (e["name"], *e.get("hub_ids", []), *e.get("aliases", [])):
            assert seen.setdefault(key.lower(), e["name"]) == e["name"], f"{key} answers {seen[key.lower()]} and {e['name']}"


def test_the_short_name_scan_finds_what_the_full_parse_finds() -> None:
    """catalog_entry finds a short name by a line scan (cold start); it must agree with the parse."""
    assert set(_short_names()) == {n.lower() for n in NAMES}


def _transformers_count(entry: dict) -> int:
    """Parameters plus stored buffers (a routing-score correction) of transformers' model on the meta
    device, each shared tensor once: what a checkpoint of this config stores, MTP and vision aside."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = entry_config(entry)
    if isinstance(config.get("text_config"), dict):
        config = config["text_config"]
        model_type = {"gemma3": "gemma3_text", "llama4": "llama4_text"}.get(entry["config"]["model_type"],
                                                                          config.get("model_type", "mistral"))
    else:
        model_type = {"kimi_k2": "deepseek_v3"}.get(config["model_type"], config["model_type"])
    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "auto_map", "quantization_config")}
    cfg = transformers.AutoConfig.for_model(model_type, **kwargs)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    params = dict(model.named_parameters())
    every = dict(model.named_parameters(remove_duplicate=False))
    state = model.state_dict()
    return sum(p.numel() for p in params.values()) + sum(state[k].numel() for k in state if k not in every)


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_counts_what_transformers_builds(name: str) -> None:
    """fitplan's tensor layout, from config.json alone, against the transformers model of the same config."""
    entry = catalog_entry(name)
    assert catalog_spec(name).parameters == _transformers_count(entry)


def test_gpt_oss_alternates_a_128_token_window_and_its_sinks_cache_nothing() -> None:
    """gpt-oss-20b: 24 layers, layer_types sliding/full alternating from layer 0, 8 KV heads x 64, window 128.
    f16 K+V per token = 2 x 8 x 64 x 2 B = 2048 B. At 32768 tokens (transformers, window kept): a sliding
    layer 128 x 2048 = 262,144 B, a full layer 32768 x 2048 = 67,108,864 B. The sinks are one logit per head
    (64 weights a layer), not cache."""
    spec = catalog_spec("gpt-oss-20b")
    assert [c.kind for c in spec.caches[:4]] == ["sliding", "full", "sliding", "full"]
    assert layer_kv_bytes(spec, 0, 32768, "f16", "transformers") == 262_144
    assert layer_kv_bytes(spec, 1, 32768, "f16", "transformers") == 67_108_864
    sinks = [t for t in spec.tensors if t.name.endswith("attn_sinks.weight")]
    assert len(sinks) == 24 and all(t.numel == 64 for t in sinks)


def test_llama4_chunked_layers_cache_at_most_8192_tokens() -> None:
    """Llama 4 Scout: attention_chunk_size 8192; no_rope_layers empty, so every 4th layer (3, 7, ...) is NoPE
    and global: 36 chunked + 12 full. 8 KV heads x 128: f16 K+V per token 4096 B. At 131072 tokens a chunked
    layer holds 8192 x 4096 = 33,554,432 B, a full one 131072 x 4096 = 536,870,912 B."""
    spec = catalog_spec("llama-4-scout")
    assert sum(c.kind == "chunked" for c in spec.caches) == 36 and spec.caches[3].kind == "full"
    assert layer_kv_bytes(spec, 0, 131072, "f16", "transformers") == 33_554_432
    assert layer_kv_bytes(spec, 3, 131072, "f16", "transformers") == 536_870_912


def test_qwen3_next_deltanet_state_is_the_same_at_every_context() -> None:
    """Qwen3-Next-80B-A3B: full attention every 4th layer (12), gated DeltaNet elsewhere (36). A DeltaNet
    layer keeps conv (4 - 1) x (2 x 16 x 128 + 32 x 128) = 24,576 and recurrent 32 x 128 x 128 = 524,288
    elements, f32: 2,195,456 B a sequence. Full layers: 2 KV heads x 256, f16: 2048 B a token."""
    spec = catalog_spec("qwen3-next-80b-a3b")
    assert sum(c.kind == "recurrent" for c in spec.caches) == 36
    for context in (512, 262144):
        assert layer_kv_bytes(spec, 0, context, "f16", "llama.cpp") == 2_195_456
    assert layer_kv_bytes(spec, 3, 1000, "f16", "llama.cpp") == 2_048_000
    assert layer_kv_bytes(spec, 0, 512, "f16", "llama.cpp", sequences=4) == 4 * 2_195_456


def test_a_mamba_hybrid_keeps_a_fixed_state_and_mlp_layers_cache_nothing() -> None:
    """Nemotron-H-8B: hybrid_override_pattern of 52 layers: 24 Mamba-2 (M), 4 attention (*), 24 MLP (-).
    Mamba-2: d_inner = 128 heads x 64 = 8192, conv dim 8192 + 2 x 8 groups x 128 = 10,240; state
    (4 - 1) x 10,240 + 8192 x 128 = 1,079,296 elements, f32: 4,317,184 B, at any context."""
    spec = catalog_spec("nemotron-h-8b")
    kinds = [c.kind for c in spec.caches]
    assert kinds.count("recurrent") == 24 and kinds.count("full") == 4 and kinds.count("none") == 24
    assert layer_kv_bytes(spec, 0, 4096, "f16", "llama.cpp") == layer_kv_bytes(spec, 0, 65536, "f16", "llama.cpp") == 4_317_184
    mlp = kinds.index("none")
    assert layer_kv_bytes(spec, mlp, 65536, "f16", "llama.cpp") == 0


def test_deepseek_v3_caches_the_mla_latent_in_llama_cpp_and_full_heads_in_transformers() -> None:
    """DeepSeek-V3: kv_lora_rank 512 + qk_rope_head_dim 64 = 576 latent elements a token in llama.cpp
    (f16: 1152 B); transformers caches 128 heads x (128 + 64) keys + 128 x 128 values = 40,960 elements
    (bf16: 81,920 B). 61 layers, none windowed."""
    spec = catalog_spec("deepseek-v3")
    assert layer_kv_bytes(spec, 0, 1, "f16", "llama.cpp") == 1152
    assert layer_kv_bytes(spec, 60, 1, "bf16", "transformers") == 81_920
    assert "multi-token-prediction" in spec.counted_parts


def test_with_swa_full_off_a_sliding_layer_stays_at_its_window() -> None:
    """llama.cpp with swa_full off: a sliding layer caches pad(window + n_ubatch) whatever the context;
    on, it caches the whole context like a full layer."""
    spec = catalog_spec("gpt-oss-20b")
    windowed = {ctx: layer_kv_bytes(spec, 0, ctx, "f16", "llama.cpp", swa_extra=512, pad=256) for ctx in (4096, 131072)}
    assert windowed[4096] == windowed[131072] == 768 * 2048
    assert layer_kv_bytes(spec, 0, 131072, "f16", "llama.cpp", windowed=False) == 131072 * 2048


@pytest.mark.parametrize("typed, name", [
    ("llama3.1:8b", "llama-3.1-8b"), ("llama3.1:8b-instruct-q4_K_M", "llama-3.1-8b"), ("qwen3:30b-a3b", "qwen3-30b-a3b"),
    ("gpt-oss:20b", "gpt-oss-20b"), ("mixtral:8x7b", "mixtral-8x7b-v0.1"), ("gemma3:12b", "gemma-3-12b"),
    ("mixtral-8x7b", "mixtral-8x7b-v0.1"), ("OpenAI/GPT-OSS-20B", "gpt-oss-20b"), ("gemma3n:e4b", "gemma-3n-e4b"),
])
def test_the_names_users_type_answer(typed: str, name: str) -> None:
    assert catalog_spec(typed).name == name


def test_a_hub_id_asked_for_is_where_the_weights_come_from() -> None:
    assert catalog_spec("mistralai/Mixtral-8x7B-Instruct-v0.1").hub_id == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert catalog_spec("mixtral-8x7b-v0.1").hub_id == "mistralai/Mixtral-8x7B-v0.1"
    # a tag of another release of the same shapes names that release's repository, not the entry's base
    assert catalog_spec("qwen2.5-coder:7b-instruct-q4_K_M").hub_id == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert catalog_spec("llama-3.3-70b").hub_id == "meta-llama/Llama-3.3-70B-Instruct"


def test_every_alias_repo_belongs_to_an_alias_of_its_entry() -> None:
    for e in ENTRIES:
        aliases = {a.lower() for a in e.get("aliases", [])}
        for tag, repo in e.get("alias_repos", {}).items():
            assert tag.lower() in aliases and repo.count("/") == 1, (e["name"], tag)


def _config(**changes: object) -> dict:
    base = dict(catalog_entry("nemotron-h-8b")["config"])
    return {**base, **changes}


@pytest.mark.parametrize("changes, named", [
    ({"hybrid_override_pattern": "M*-"}, "hybrid_override_pattern"),  # 3 layer kinds for 52 layers
    ({"ssm_state_size": 2**30}, "ssm_state_size"),
    ({"hybrid_override_pattern": "M" * 51 + "X"}, "hybrid_override_pattern"),
    ({"model_type": "no-such-arch", "architectures": ["NoSuchForCausalLM"]}, "no-such-arch"),
])
def test_a_bad_hybrid_config_is_one_line_naming_the_field(changes: dict, named: str) -> None:
    with pytest.raises(ModelFileError, match=named):
        spec_from_config(_config(**changes), name="x", source="folder", location="x")


def test_a_layer_types_list_of_the_wrong_length_is_refused() -> None:
    config = dict(catalog_entry("gpt-oss-20b")["config"])
    config["layer_types"] = config["layer_types"][:-1]
    with pytest.raises(ModelFileError, match="layer_types"):
        spec_from_config(config, name="x", source="folder", location="x")


def test_infinity_in_a_field_fitplan_never_reads_is_accepted() -> None:
    """Nemotron-H's hub configs hold time_step_limit [0.0, Infinity]; a used field may not hold it."""
    spec_from_config(_config(time_step_limit=[0.0, float("inf")]), name="x", source="folder", location="x")
    with pytest.raises(ModelFileError, match="Infinity"):
        spec_from_config(_config(conv_kernel=float("inf")), name="x", source="folder", location="x")


def test_an_unknown_architecture_folder_is_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "hidden_size": 64}))
    run = subprocess.run([FITPLAN, "advise", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "no-such-arch" in run.stderr


def test_models_ranks_the_catalog_on_a_profile() -> None:
    run = subprocess.run([FITPLAN, "models", "--hardware", "rtx-4090-24gb", "--json",
                          "--family", "qwen3"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    rows = doc["models"]
    assert doc["hardware"] == "rtx-4090-24gb" and {r["family"] for r in rows} == {"qwen3"}
    assert {r["name"] for r in rows} == {e["name"] for e in ENTRIES if e["family"] == "qwen3"}
    fits = [r["fits"] for r in rows]
    assert fits == sorted(fits, reverse=True)  # those that fit first
    assert all(r["format"] and r["decode_tokens_per_s"] > 0 for r in rows if r["fits"])
    assert all(r["reason"] for r in rows if not r["fits"])


def test_models_refuses_an_unknown_family() -> None:
    run = subprocess.run([FITPLAN, "models", "--family", "nope"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "unknown family" in run.stderr


def test_entry_spec_of_every_entry_builds() -> None:
    for e in ENTRIES:
        assert entry_spec(e).parameters > 0


def test_a_squeezed_model_names_its_smaller_sibling_at_q8_with_both_priors() -> None:
    """Llama 3.1 70B cannot fit a 16 GB card with 8 GB of RAM at any format; its 8B sibling runs at Q8_0."""
    advise = str(Path(sys.executable).with_name("advise"))
    run = subprocess.run([advise, "llama-3.1-70b", "--hardware", "rtx-4060ti-16gb", "--max-ram", "8GB", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    sibling = json.loads(run.stdout)["smaller_sibling"]
    assert sibling["name"] == "llama-3.1-8b" and sibling["weights"] == "Q8_0"
    assert sibling["ppl_increase"] is not None and sibling["instead_of"]["name"] == "llama-3.1-70b"
    roomy = subprocess.run([advise, "llama-3.1-8b", "--hardware", "rtx-4090-24gb", "--json"], capture_output=True,
                           text=True, timeout=300)
    assert json.loads(roomy.stdout)["smaller_sibling"] is None


def _write_gguf(path: Path, arch: str, spec, keys: dict) -> None:
    """A GGUF of `spec`'s tensors (zeros, F32) with llama.cpp's metadata keys for `arch`, written by
    gguf-py's own writer (the library llama.cpp's converter uses)."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in keys.items():
        if isinstance(value, list):
            writer.add_array(f"{arch}.{key}", value)
        else:
            writer.add_uint32(f"{arch}.{key}", value)
    for t in spec.tensors:
        writer.add_tensor(t.name, np.zeros(tuple(reversed(t.shape)), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _cache_shapes(spec) -> list[tuple]:
    return [(c.kind, c.kv_heads, c.key_dim, c.window, c.state_elements, c.shared) for c in spec.caches]


TINY_NEMOTRON_H = {"model_type": "nemotron_h", "hidden_size": 64, "num_hidden_layers": 4, "hybrid_override_pattern": "M*-M",
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
                   "vocab_size": 256, "mamba_num_heads": 4, "mamba_head_dim": 16, "n_groups": 2, "ssm_state_size": 8,
                   "conv_kernel": 4}
TINY_QWEN3_NEXT = {"model_type": "qwen3_next", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256, "num_experts": 4, "num_experts_per_tok": 2,
                   "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "linear_num_key_heads": 2,
                   "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8}
TINY_LFM2 = {"model_type": "lfm2", "hidden_size": 64, "num_hidden_layers": 3, "layer_types": ["conv", "full_attention", "conv"],
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 192, "vocab_size": 256}
TINY_GEMMA3N = {"model_type": "gemma3n_text", "hidden_size": 64, "num_hidden_layers": 10, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 256,
                "vocab_size_per_layer_input": 128, "hidden_size_per_layer_input": 8, "laurel_rank": 4,
                "sliding_window": 8, "num_kv_shared_layers": 3}


@pytest.mark.parametrize("config, arch, keys", [
    (TINY_NEMOTRON_H, "nemotron_h", {"block_count": 4, "embedding_length": 64, "attention.head_count": 4,
                                     "attention.head_count_kv": [0, 2, 0, 0], "attention.key_length": 16,
                                     "ssm.conv_kernel": 4, "ssm.inner_size": 64, "ssm.state_size": 8,
                                     "ssm.group_count": 2, "ssm.time_step_rank": 4}),
    (TINY_QWEN3_NEXT, "qwen3next", {"block_count": 4, "embedding_length": 64, "attention.head_count": 4,
                                    "attention.head_count_kv": 2, "attention.key_length": 16, "ssm.conv_kernel": 4,
                                    "ssm.inner_size": 32, "ssm.state_size": 8, "ssm.group_count": 2,
                                    "ssm.time_step_rank": 4}),
    (TINY_LFM2, "lfm2", {"block_count": 3, "embedding_length": 64, "attention.head_count": 4,
                         "attention.head_count_kv": [0, 2, 0], "shortconv.l_cache": 3}),
    (TINY_GEMMA3N, "gemma3n", {"block_count": 10, "embedding_length": 64, "attention.head_count": 4,
                               "attention.head_count_kv": 2, "attention.key_length": 16,
                               "attention.value_length": 16, "attention.sliding_window": 8,
                               "attention.shared_kv_layers": 3}),
])
def test_a_gguf_of_a_hybrid_caches_what_its_config_says(tmp_path, config: dict, arch: str, keys: dict) -> None:
    """The same model from its config.json and from a GGUF with llama.cpp's keys (per-layer head_count_kv,
    ssm.*, shortconv.l_cache): the same tensors and the same cache in every layer."""
    from fitplan.advisor.models.model_files import gguf_spec

    spec = spec_from_config(config, name="tiny", source="folder", location="tiny")
    _write_gguf(tmp_path / "tiny.gguf", arch, spec, keys)
    read = gguf_spec(str(tmp_path / "tiny.gguf"))
    assert read.parameters == spec.parameters
    assert _cache_shapes(read) == _cache_shapes(spec)
    assert not read.notes


def test_a_gguf_of_an_unknown_architecture_gets_its_weights_and_says_what_it_could_not_derive(tmp_path) -> None:
    from fitplan.advisor.models.model_files import gguf_spec

    spec = spec_from_config(TINY_NEMOTRON_H, name="tiny", source="folder", location="tiny")
    _write_gguf(tmp_path / "odd.gguf", "someday-arch", spec, {"block_count": 4})
    read = gguf_spec(str(tmp_path / "odd.gguf"))
    assert read.parameters == spec.parameters and read.stored_bytes == 4 * spec.parameters
    (note,) = read.notes
    assert "someday-arch.attention.head_count" in note and "someday-arch.ssm.*" in note and "\n" not in note


def test_a_config_folder_with_infinity_in_an_unread_field_is_planned(tmp_path) -> None:
    """Nemotron-H-56B's hub config.json holds time_step_limit [0.0, Infinity] (json writes it so)."""
    config = entry_config(catalog_entry("nemotron-h-56b"))
    assert config["time_step_limit"][1] == float("inf")
    (tmp_path / "config.json").write_text(json.dumps(config))
    run = subprocess.run([str(Path(sys.executable).with_name("advise")), str(tmp_path), "--hardware", "rtx-4090-24gb",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["model"]["layer_caches"]["recurrent"] > 0
    nested = dict(config, rope_scaling={"factor": float("nan")})  # an unread nested field: NaN is read past too
    (tmp_path / "config.json").write_text(json.dumps(nested))
    again = subprocess.run([str(Path(sys.executable).with_name("advise")), str(tmp_path), "--hardware", "rtx-4090-24gb"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    size = {"BF16": 2, "F32": 4, "U8": 1, "F8_E4M3": 1}[dtype]
    for dim in shape:
        size *= dim
    return size


def _safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """A safetensors file of zeros with these (dtype, shape) entries; returns its data bytes."""
    import struct

    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return offset


def _meta_state(config: dict) -> dict[str, tuple[int, ...]]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    every = dict(model.named_parameters(remove_duplicate=False))
    kept = dict(model.named_parameters())
    return {k: tuple(t.shape) for k, t in model.state_dict().items() if k not in every or k in kept}


TINY_GPT_OSS = {"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
                "num_experts_per_tok": 2, "vocab_size": 256, "sliding_window": 8,
                "layer_types": ["sliding_attention", "full_attention"]}


def test_an_mxfp4_checkpoint_counts_its_logical_weights_and_stores_its_exact_bytes(tmp_path) -> None:
    """gpt-oss stores experts as MXFP4: *_blocks (U8, two weights a byte, [E, out, in/32, 16]) and *_scales
    (U8, [E, out, in/32]); the count is of logical weights, the bytes are the files'."""
    state = _meta_state(TINY_GPT_OSS)
    tensors = {}
    for name, shape in state.items():
        if name.endswith(("gate_up_proj", "down_proj")) and len(shape) == 3:
            experts, rows_in, out = shape  # transformers keeps [E, in, out]
            tensors[name + "_blocks"] = ("U8", (experts, out, rows_in // 32, 16))
            tensors[name + "_scales"] = ("U8", (experts, out, rows_in // 32))
        else:
            tensors[name] = ("BF16", shape)
    (tmp_path / "config.json").write_text(json.dumps(TINY_GPT_OSS))
    data = _safetensors(tmp_path / "model.safetensors", tensors)
    from fitplan.advisor.models.model_files import folder_spec

    spec = folder_spec(str(tmp_path))
    assert spec.parameters == spec_from_config(TINY_GPT_OSS, name="x", source="folder", location="x").parameters
    assert spec.stored_bytes == data and spec.native_dtype == "mxfp4"


TINY_DEEPSEEK_V3 = {"model_type": "deepseek_v3", "hidden_size": 256, "intermediate_size": 256, "moe_intermediate_size": 128,
                    "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                    "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
                    "kv_lora_rank": 128, "q_lora_rank": 128, "qk_rope_head_dim": 32, "qk_nope_head_dim": 64,
                    "v_head_dim": 64, "vocab_size": 512, "num_nextn_predict_layers": 1}


def test_an_fp8_checkpoint_with_an_mtp_layer_is_sized_without_its_scales_in_the_count(tmp_path) -> None:
    """DeepSeek-V3's FP8 checkpoint: F8_E4M3 weights with an F32 weight_scale_inv per 128 x 128 block, and
    its multi-token-prediction layer stored as layer num_hidden_layers (not loaded, not counted)."""
    state = _meta_state(TINY_DEEPSEEK_V3)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, shape in state.items():
        matrix = len(shape) >= 2 and ".layers." in name and "norm" not in name and "mlp.gate." not in name
        tensors[name] = ("F8_E4M3" if matrix else "BF16", shape)
        if matrix:
            tensors[name.removesuffix(".weight") + ".weight_scale_inv"] = (
                "F32", (*shape[:-2], -(-shape[-2] // 128), -(-shape[-1] // 128)))
    mtp = {n.replace("layers.1.", "layers.2."): v for n, v in tensors.items() if ".layers.1." in n}
    (tmp_path / "config.json").write_text(json.dumps(TINY_DEEPSEEK_V3))
    data = _safetensors(tmp_path / "model.safetensors", {**tensors, **mtp})
    from fitplan.advisor.models.model_files import folder_spec

    spec = folder_spec(str(tmp_path))
    assert spec.parameters == spec_from_config(TINY_DEEPSEEK_V3, name="x", source="folder", location="x").parameters
    assert spec.native_dtype == "fp8" and all(t.layer != 2 for t in spec.stored_tensors)
    assert spec.stored_bytes == data - sum(_nbytes(*v) for v in mtp.values())  # the MTP layer stays on disk


def test_a_mergekit_folder_is_planned_like_any_folder_and_says_so(tmp_path) -> None:
    """mergekit writes config.json, the safetensors and its recipe (mergekit_config.yml) into the merge."""
    config = entry_config(catalog_entry("smollm2-135m"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "mergekit_config.yml").write_text("merge_method: slerp\nbase_model: HuggingFaceTB/SmolLM2-135M\n")
    run = subprocess.run([str(Path(sys.executable).with_name("advise")), str(tmp_path), "--hardware", "rtx-4090-24gb",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    model = json.loads(run.stdout)["model"]
    assert model["parameters"] == catalog_spec("smollm2-135m").parameters
    assert any("mergekit" in n and "nothing more is needed" in n for n in model["notes"])


GEMMA3N_E2B_SHAPES = {"model_type": "gemma3n_text", "num_hidden_layers": 30, "intermediate_size": [8192] * 30,
                      "num_kv_shared_layers": 10}


@pytest.mark.parametrize("config", [
    {"model_type": "gemma3n_text"},  # the config class's defaults: Gemma 3n E4B's text shapes
    GEMMA3N_E2B_SHAPES,  # E2B's text shapes as stored test copies of its config give them
    {"model_type": "gemma3n", "text_config": GEMMA3N_E2B_SHAPES},  # the multimodal checkpoint's wrapper
], ids=["e4b", "e2b", "wrapper"])
def test_gemma3n_counts_what_transformers_builds(config: dict) -> None:
    """Per-layer embeddings, AltUp, LAuReL, a width per layer, and K/V projections only in the layers
    that own a cache: the same count as transformers' Gemma3nForCausalLM on the meta device."""
    spec = spec_from_config(config, name="gemma3n", source="folder", location="gemma3n")
    assert spec.parameters == _transformers_count({"config": config})


def test_gemma3n_shared_layers_read_an_earlier_cache_and_store_none() -> None:
    """Gemma 3n E4B (the class defaults): 35 layers, every 5th global, window 512, 2 KV heads x 256; the
    last 15 layers reuse the K/V of layer 18 (sliding) or 19 (global). f16 K+V per token:
    2 x 2 x 256 x 2 B = 2048 B. At 32768 tokens the 20 owning layers hold 4 x 32768 x 2048 +
    16 x 512 x 2048 = 268,435,456 + 16,777,216 = 285,212,672 B; the shared 15 hold nothing but are
    still read, so the attention of all 35 layers is timed."""
    from fitplan.advisor.planner.speed import attention_loads

    spec = spec_from_config({"model_type": "gemma3n_text"}, name="e4b", source="folder", location="e4b")
    assert [c.shared for c in spec.caches] == [False] * 20 + [True] * 15
    total = sum(layer_kv_bytes(spec, i, 32768, "f16", "transformers") for i in range(spec.layers))
    assert total == 285_212_672
    load = attention_loads(spec, ["gpu0"] * spec.layers, 2.0, "transformers")["gpu0"]
    assert sum(n for n, _, _ in load.groups) == 35


def test_gemma3n_per_layer_embeddings_stay_on_the_cpu_and_are_not_read_per_token() -> None:
    """llama.cpp keeps per_layer_token_embd with the input layer on the host (LLM_TENSOR_LAYER_INPUT,
    GGML_OP_GET_ROWS): 262,144 tokens x 35 x 256 rows are gathered, never multiplied, so with every
    block on the GPU the CPU reads no weights in a decode step."""
    from fitplan.advisor.planner.speed import step_model
    from fitplan.plan_spec import Setup
    from fitplan.profiles.named import load_profile
    from fitplan.strategies.quantization import tensor_bytes, weight_format

    spec = spec_from_config({"model_type": "gemma3n_text"}, name="e4b", source="folder", location="e4b")
    setup = Setup(runtime="llama.cpp", weights="Q4_K_M", kv_cache="f16", context=4096, batch=1, threads=8,
                  gpu_layers=spec.layers, gpus=1)
    model = step_model(spec, setup, tensor_bytes(spec, weight_format("Q4_K_M")), load_profile("rtx-4090-24gb"))
    assert sorted(t.name for t, _ in model.placed["cpu"]) == ["per_layer_token_embd.weight", "token_embd.weight"]
    assert model.single["cpu"] == (0.0, 0.0)
    assert "per_layer_token_embd.weight" not in {t.name for t, _ in model.placed["gpu0"]}


def test_a_gemma3n_config_whose_shared_layers_have_no_source_is_refused() -> None:
    """Sharing K/V needs an earlier owning layer of the same kind: 5 layers, the only global one shared."""
    with pytest.raises(ModelFileError, match="shares the K/V of an earlier full attention layer"):
        spec_from_config({"model_type": "gemma3n_text", "num_hidden_layers": 5, "num_kv_shared_layers": 2,
                          "intermediate_size": 64}, name="x", source="folder", location="x")


def test_a_per_layer_width_list_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ModelFileError, match="intermediate_size .* num_hidden_layers = 30"):
        spec_from_config({**GEMMA3N_E2B_SHAPES, "intermediate_size": [8192] * 29}, name="x", source="folder",
                         location="x")


def _text_and_towers(text_config: dict, towers: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """A multimodal checkpoint as transformers 5 saves it: the text model under model.language_model
    (its head at the top level unless tied), and tower tensors beside it."""
    tensors = {}
    for name, shape in _meta_state(text_config).items():
        if name.startswith("lm_head.") and text_config.get("tie_word_embeddings", True):
            continue
        tensors[name if name.startswith("lm_head.") else name.replace("model.", "model.language_model.", 1)] = ("BF16", shape)
    return {**tensors, **{name: ("BF16", shape) for name, shape in towers.items()}}


TINY_GEMMA3_TEXT = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300}


def test_a_multimodal_folder_plans_its_language_model_and_leaves_the_towers(tmp_path) -> None:
    """Gemma 3 4B-27B, Gemma 3n, Llama 4 and Mistral 3.1 folders hold vision (and audio) towers beside
    the text model; their encoder layers must not be read as the text model's blocks."""
    from fitplan.advisor.models.model_files import folder_spec

    towers = {"model.vision_tower.encoder.layers.0.self_attn.q_proj.weight": (32, 32),
              "model.vision_tower.encoder.layers.5.mlp.fc1.weight": (64, 32),
              "model.multi_modal_projector.mm_input_projection_weight": (32, 64)}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": TINY_GEMMA3_TEXT,
                                                      "vision_config": {"hidden_size": 32}}))
    data = _safetensors(tmp_path / "model.safetensors", _text_and_towers(TINY_GEMMA3_TEXT, towers))
    spec = folder_spec(str(tmp_path))
    assert spec.parameters == _transformers_count({"config": {"model_type": "gemma3", "text_config": TINY_GEMMA3_TEXT}})
    assert spec.stored_bytes == data - sum(2 * math.prod(s) for s in towers.values())
    assert "vision tower is not counted" in spec.counted_parts


def test_a_gemma3n_checkpoint_keeps_k_v_projections_its_shared_layers_do_not_load(tmp_path) -> None:
    """Gemma 3n checkpoints store K/V projections for the layers that reuse an earlier layer's K/V;
    transformers 5 builds none for them: they are stored, not counted, not loaded."""
    from fitplan.advisor.models.model_files import folder_spec

    shared = {f"model.language_model.layers.{i}.self_attn.{p}.weight": (s, 64) for i in (7, 8, 9)
              for p, s in (("k_proj", 32), ("v_proj", 32))}
    shared.update({f"model.language_model.layers.{i}.self_attn.k_norm.weight": (16,) for i in (7, 8, 9)})
    towers = {"model.audio_tower.conformer.0.attention.attn.q_proj.weight": (32, 32),
              "model.embed_vision.embedding.weight": (8, 64)}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3n", "text_config": TINY_GEMMA3N}))
    data = _safetensors(tmp_path / "model.safetensors", {**_text_and_towers(TINY_GEMMA3N, towers),
                                                          **{n: ("BF16", s) for n, s in shared.items()}})
    spec = folder_spec(str(tmp_path))
    assert spec.parameters == spec_from_config(TINY_GEMMA3N, name="x", source="folder", location="x").parameters
    assert spec.stored_bytes == data - sum(2 * math.prod(s) for s in {**towers, **shared}.values())
    assert "audio towers are not counted" in spec.counted_parts


def _architectures() -> list[str]:
    from fitplan.datafiles import load_table

    table = load_table("fitplan.advisor.models.data", "architectures.toml")
    return [name for name, arch in table.items() if "text_model" not in arch]


# keys a config must give where its class leaves them unset (DeepseekV2Config: num_experts_per_tok None)
_REQUIRED = {"deepseek_v2": {"num_experts_per_tok": 6}}


@pytest.mark.parametrize("model_type", _architectures())
def test_each_architecture_at_its_config_class_defaults_counts_what_transformers_builds(model_type: str) -> None:
    """A config.json of one key, `model_type`: fitplan's defaults table and layout against transformers'
    own config class and model. This covers the architectures no catalog entry exercises (Granite 4.0-H,
    Falcon-H1) and each default a real config may leave out."""
    config = {"model_type": model_type, **_REQUIRED.get(model_type, {})}
    spec = spec_from_config(config, name=model_type, source="folder", location=model_type)
    assert spec.parameters == _transformers_count({"config": config})


def test_falcon_h1_mixer_width_is_its_d_ssm_or_expand_times_hidden_where_config_says_null() -> None:
    """FalconH1Config: mamba_d_ssm defaults to 1024; an explicit null means mamba_expand x hidden_size."""
    null = {"model_type": "falcon_h1", "mamba_d_ssm": None, "mamba_d_head": 64}
    assert spec_from_config(null, name="x", source="folder", location="x").parameters == _transformers_count({"config": null})
