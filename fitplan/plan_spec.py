"""A plan's choices (Setup) and its predicted memory per device (DeviceMemory)."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Setup:
    """The discrete choices of one candidate plan."""

    runtime: str  # "llama.cpp" | "transformers"
    weights: str  # a weight format name (formats.toml)
    kv_cache: str  # KV cache element type (kv_dtypes.toml)
    context: int  # tokens per sequence
    batch: int  # parallel sequences
    threads: int  # CPU threads
    gpu_layers: int  # transformer blocks on GPUs (the rest on the CPU)
    gpus: int = 0  # GPUs the blocks are spread over


@dataclass
class DeviceMemory:
    """Bytes on one device; every tensor is counted on exactly one device."""

    weights: int = 0
    kv_cache: int = 0
    activations: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.overhead

    def as_dict(self) -> dict[str, int]:
        out = {f.name: int(getattr(self, f.name)) for f in fields(self)}
        out["total"] = int(self.total)
        return out


def gpu_name(index: int) -> str:
    return f"gpu{index}"
