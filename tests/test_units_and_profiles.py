"""Size parsing, named profiles, the ggml type table and the KV cache formula."""
from __future__ import annotations

import gguf
import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.models.ggml_types import ggml_type_size
from fitplan.errors import BadValueError, ProfileError
from fitplan.profiles.named import load_profile, profile_names
from fitplan.strategies.kv_cache import layer_kv_bytes
from fitplan.units import parse_size


@pytest.mark.parametrize("text,expected", [
    ("12GB", 12_000_000_000), ("12 GiB", 12 * 2**30), ("512MB", 512_000_000),
    ("1.5GiB", 1_610_612_736), ("0GB", 0), ("100 kib", 102_400), ("7B", 7),
])
def test_parse_size(text: str, expected: int) -> None:
    """GB is 10^9 bytes and GiB 2^30; case and a space before the unit do not matter."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12XB", "-1GB", "12", "GB", "", "1e3GB", "nanGB", "12 G B"])
def test_parse_size_refuses(text: str) -> None:
    """Unknown units, signs, bare numbers and exponents are errors that quote the value."""
    with pytest.raises(BadValueError, match="bad size"):
        parse_size(text, source="--max-vram")


def test_every_named_profile_loads_with_sources() -> None:
    """All 18 named profiles validate, and each cites at least one source."""
    names = profile_names()
    assert len(names) >= 18 and {"rtx-3060-12gb", "gha-ubuntu-4core", "h200-141gb"} <= set(names)
    for name in names:
        assert load_profile(name).sources, name


def test_multi_gpu_profile() -> None:
    """`2xrtx-4090-24gb` is two identical cards on the same host."""
    spec = load_profile("2xrtx-4090-24gb")
    assert len(spec.gpus) == 2 and spec.gpus[0] == spec.gpus[1]
    assert spec.gpus[0].memory_bytes == 24564 * 2**20  # nvidia-smi total of an RTX 4090


def test_unknown_profile_is_one_clear_error() -> None:
    """An unknown name says how to list the known ones."""
    with pytest.raises(ProfileError, match="fitplan profile --list"):
        load_profile("rtx-9999")


def test_ggml_type_table_equals_gguf_py() -> None:
    """The start-up-light type table equals gguf-py's GGML_QUANT_SIZES for every type it knows."""
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert ggml_type_size(qtype.name) == (block, size), qtype.name


def test_kv_cache_formula() -> None:
    """Llama-3.1-8B, f16: 2 x 8 heads x 128 x 2 bytes = 4 KiB per token per layer, 128 KiB per token."""
    spec = catalog_spec("llama-3.1-8b")
    per_layer = layer_kv_bytes(spec, 0, 8192, "f16", "transformers")
    assert per_layer == 8192 * 4096
    assert sum(layer_kv_bytes(spec, i, 8192, "f16", "transformers") for i in range(32)) == 2**30


def test_sliding_window_layers_cap_the_cache() -> None:
    """Gemma 2's sliding layers keep 4096 tokens at a 8192 context; global layers keep all."""
    spec = catalog_spec("gemma-2-9b")
    sliding, full = (layer_kv_bytes(spec, i, 8192, "bf16", "transformers") for i in (0, 1))
    assert full == 2 * sliding


def test_mla_cache_differs_by_runtime() -> None:
    """DeepSeek-V2-Lite: llama.cpp caches the 576-wide latent, transformers full K/V per head."""
    spec = catalog_spec("deepseek-v2-lite")
    assert layer_kv_bytes(spec, 0, 1, "f16", "llama.cpp") == 576 * 2
    assert layer_kv_bytes(spec, 0, 1, "bf16", "transformers") == 16 * (192 + 128) * 2


def test_gguf_file_type_table_equals_gguf_py() -> None:
    """general.file_type ids map to the names gguf-py's LlamaFileType gives them."""
    from fitplan.datafiles import load_table

    table = load_table("fitplan.strategies.data", "gguf_file_types.toml")
    for file_type in gguf.LlamaFileType:
        if file_type.name != "GUESSED":
            assert table[str(int(file_type))] == file_type.name.replace("MOSTLY_", "").replace("ALL_", "")
