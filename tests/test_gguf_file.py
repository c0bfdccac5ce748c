"""The bounded GGUF reader on the real SmolLM2 file, cross-checked with gguf.GGUFReader."""
from __future__ import annotations

import gguf

from fitplan.advisor.models.gguf_header import read_gguf_header
from fitplan.advisor.models.model_files import gguf_spec
from fitplan.strategies.quantization import tensor_bytes, weight_format


def test_header_matches_gguf_reader(smollm2_gguf: str) -> None:
    """Every tensor's name, shape, type, offset and byte size equals what GGUFReader reads."""
    ours = read_gguf_header(smollm2_gguf)
    theirs = gguf.GGUFReader(smollm2_gguf)
    assert len(ours.tensors) == len(theirs.tensors) == 272
    for mine, ref in zip(ours.tensors, theirs.tensors):
        assert mine.name == ref.name
        assert mine.shape == tuple(int(d) for d in ref.shape)
        assert mine.type_name == ref.tensor_type.name
        assert mine.nbytes == int(ref.n_bytes)
        assert ours.data_offset + mine.offset == int(ref.data_offset)


def test_weights_bytes_equal_file_tensor_bytes(smollm2_gguf: str) -> None:
    """Predicted weight bytes of the file's own format are the file's tensor bytes, exactly."""
    spec = gguf_spec(smollm2_gguf)
    assert spec.stored_bytes == 96_576_768  # ../shared/MEASURED.md: 96,576,768 tensor bytes
    assert sum(b for _, b in tensor_bytes(spec, weight_format("Q4_1"))) == 96_576_768


def test_recipe_reproduces_the_real_file(smollm2_gguf: str) -> None:
    """Requantizing the file's shapes to Q4_1 with llama.cpp's recipe gives the same bytes."""
    spec = gguf_spec(smollm2_gguf)
    stored = {t.name: t.nbytes for t in spec.stored_tensors}
    from fitplan.strategies.quantization import _gguf_bytes

    assert {t.name: b for t, b in _gguf_bytes(spec, "Q4_1")} == stored


def test_spec_from_gguf_metadata(smollm2_gguf: str) -> None:
    """Architecture keys come from the GGUF header (llama arch, GQA 9/3, tied, 134.5M parameters)."""
    spec = gguf_spec(smollm2_gguf)
    assert (spec.architecture, spec.layers, spec.hidden_size, spec.heads, spec.kv_heads) == ("llama", 30, 576, 9, 3)
    assert (spec.head_dim, spec.vocab_size, spec.max_context, spec.native_dtype) == (64, 49152, 8192, "Q4_1")
    assert spec.tied_embeddings and spec.parameters == 134_515_008
