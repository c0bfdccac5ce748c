"""Attention kernels: llama.cpp flash attention on or off; transformers sdpa, eager or
FlashAttention-2. Their memory effect is in the runtimes' cost models (llama.cpp's compute buffer
holds the KQ scores without flash attention; transformers' sdpa already uses fused kernels on CUDA,
so FlashAttention-2 changes speed, not the plan's memory)."""
from __future__ import annotations

from fitplan.hardware_spec import HardwareSpec
from fitplan.strategies.strategy import TableStrategy, option_of, table_options

FLASH_ATTENTION_2 = "flash_attention_2"

STRATEGY = TableStrategy("attention", "attention kernels: llama.cpp flash attention, sdpa, eager, FlashAttention-2",
                         lambda: table_options("attention", "attention"))


def flash_attention_2_unmet(hw: HardwareSpec) -> str | None:
    """Why transformers' FlashAttention-2 cannot run on `hw`'s GPUs, or None when it can."""
    return option_of(STRATEGY, FLASH_ATTENTION_2).requirement.unmet(hw, "gpu", "transformers")
