"""The ported type recipe against llama.cpp's own quantizer: the same type for every tensor, the
same bytes, on files llama.cpp really writes (requantized from the real SmolLM2 Q4_1 GGUF)."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from fitplan.advisor.models.gguf_header import read_gguf_header
from fitplan.advisor.models.model_files import gguf_spec
from fitplan.strategies.quantization import tensor_bytes, weight_format

llama_cpp = pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")


def quantize(source: str, target: Path, file_type: str) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}")
    params.allow_requantize = True
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(source.encode(), str(target).encode(), ctypes.byref(params)) == 0


@pytest.mark.parametrize("file_type", ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "Q5_0"])
def test_recipe_matches_llama_quantize(smollm2_gguf: str, tmp_path: Path, file_type: str) -> None:
    """Every tensor gets the type llama-quantize gives it, and the predicted bytes are the file's."""
    target = tmp_path / f"model-{file_type}.gguf"
    quantize(smollm2_gguf, target, file_type)
    written = {t.name: (t.type_name, t.nbytes) for t in read_gguf_header(str(target)).tensors}
    predicted = {t.name: b for t, b in tensor_bytes(gguf_spec(smollm2_gguf), weight_format(file_type))}
    assert predicted == {name: nbytes for name, (_, nbytes) in written.items()}
    assert gguf_spec(str(target)).native_dtype == file_type  # and fitplan reads the file's type back
